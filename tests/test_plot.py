"""Static figures (sam_widget.plot): pixels are checked, not just "no exception"."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest
from PIL import Image

from sam_widget import plot

matplotlib.use("Agg")

GRAY = 100
BLUE = np.array(plot.MASK_COLORS[0], dtype=float)


def _image(h=200, w=300):
    return np.full((h, w, 3), GRAY, np.uint8)


def _square_mask(h=200, w=300):
    mask = np.zeros((h, w), bool)
    mask[50:150, 100:250] = True
    return mask


def _blend(color, alpha=plot.MASK_ALPHA, base=GRAY):
    return np.rint(base * (1 - alpha) + np.asarray(color, float) * alpha).astype(int)


def test_render_png_is_a_png_of_the_image_size():
    png = plot.render_png(_image())
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    picture = np.asarray(Image.open(io.BytesIO(png)))
    assert picture.shape == (200, 300, 3)
    assert (picture == GRAY).all()


def test_mask_is_blended_in_the_official_blue_with_an_outline():
    out = plot.render(_image(), _square_mask())
    np.testing.assert_array_equal(out[100, 175], _blend(BLUE))  # inside
    np.testing.assert_array_equal(out[10, 10], [GRAY] * 3)  # outside untouched
    np.testing.assert_array_equal(out[50, 175], BLUE)  # the outline is the solid colour
    np.testing.assert_array_equal(out[100, 100], BLUE)
    np.testing.assert_array_equal(out[49, 175], [GRAY] * 3)
    plain = plot.render(_image(), _square_mask(), outline=False)
    np.testing.assert_array_equal(plain[50, 175], _blend(BLUE))


def test_several_masks_get_distinct_colours():
    a = np.zeros((200, 300), bool)
    a[10:60, 10:60] = True
    b = np.zeros((200, 300), bool)
    b[100:180, 200:280] = True
    out = plot.render(_image(), np.stack([a, b]), outline=False)
    np.testing.assert_array_equal(out[30, 30], _blend(plot.MASK_COLORS[0]))
    np.testing.assert_array_equal(out[150, 250], _blend(plot.MASK_COLORS[1]))


def test_points_are_green_and_red_stars_with_white_edges():
    points = [(60, 40), (240, 160)]
    out = plot.render(_image(), points=points, labels=[1, 0])
    np.testing.assert_array_equal(out[40, 60], plot.POSITIVE)
    np.testing.assert_array_equal(out[160, 240], plot.NEGATIVE)
    # a white edge around the star, the background beyond it
    column = out[:40, 60]
    assert (column == 255).all(axis=1).any()
    np.testing.assert_array_equal(out[0, 60], [GRAY] * 3)
    # default labels: all foreground
    out = plot.render(_image(), points=[(150, 100)])
    np.testing.assert_array_equal(out[100, 150], plot.POSITIVE)


def test_box_is_a_green_rectangle():
    out = plot.render(_image(), box=(20, 30, 120, 130))
    np.testing.assert_array_equal(out[30, 70], plot.BOX)  # top edge
    np.testing.assert_array_equal(out[80, 20], plot.BOX)  # left edge
    np.testing.assert_array_equal(out[80, 70], [GRAY] * 3)  # inside stays clear


def test_large_images_are_scaled_to_max_size_with_prompts_in_place():
    image = _image(1000, 2000)
    mask = np.zeros((1000, 2000), bool)
    mask[400:600, 800:1200] = True
    png = plot.render_png(
        image, mask, points=[(1000, 500)], labels=[0], box=(100, 100, 300, 300), max_size=500
    )
    out = np.asarray(Image.open(io.BytesIO(png)))
    assert out.shape == (250, 500, 3)
    np.testing.assert_array_equal(out[125, 250], plot.NEGATIVE)  # the point, scaled by 1/4
    np.testing.assert_array_equal(out[110, 210], _blend(BLUE))  # inside the scaled mask
    np.testing.assert_array_equal(out[25, 50], plot.BOX)  # the box's top-left corner


def test_render_rejects_masks_of_another_size_and_mismatched_labels():
    with pytest.raises(ValueError, match="masks are"):
        plot.render(_image(), np.zeros((10, 10), bool))
    with pytest.raises(ValueError, match="2 points and 1 labels"):
        plot.render(_image(), points=[(1, 1), (2, 2)], labels=[1])


def _figure_pixels(ax) -> np.ndarray:
    fig = ax.figure
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3]


def test_show_draws_like_the_official_notebooks():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2), dpi=100)
    fig.subplots_adjust(0, 0, 1, 1)
    plot.show(
        _image(),
        _square_mask(),
        points=[(40, 40)],
        labels=[1],
        box=(10, 10, 290, 190),
        ax=ax,
        scores=[0.91],
    )
    pixels = _figure_pixels(ax)
    assert pixels.shape == (200, 300, 3)
    # the mask's centre is the official blue blended over the image
    assert np.abs(pixels[100, 175].astype(int) - _blend(BLUE)).max() <= 2
    assert np.abs(pixels[20, 280].astype(int) - GRAY).max() <= 2
    # the star at (40, 40) is matplotlib green
    assert np.abs(pixels[40, 40].astype(int) - np.array(plot.POSITIVE)).max() <= 2
    assert ax.get_title() == "Mask 1, Score: 0.910"
    plt.close(fig)


def test_show_helpers_individually():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2), dpi=100)
    fig.subplots_adjust(0, 0, 1, 1)
    ax.imshow(_image())
    plot.show_mask(_square_mask(), ax, color=(255, 0, 0))
    plot.show_points(np.array([[20, 20]]), np.array([0]), ax)
    plot.show_box([150, 20, 290, 45], ax)
    ax.set_xlim(-0.5, 299.5)
    ax.set_ylim(199.5, -0.5)
    ax.axis("off")
    pixels = _figure_pixels(ax)
    assert np.abs(pixels[100, 175].astype(int) - _blend((255, 0, 0))).max() <= 2
    assert np.abs(pixels[20, 20].astype(int) - np.array(plot.NEGATIVE)).max() <= 2
    assert np.abs(pixels[20, 220].astype(int) - np.array(plot.BOX)).max() <= 40
    plt.close(fig)
