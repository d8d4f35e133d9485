"""Specification of `sam_widget.predictor.Predictor`: equal to the official SamPredictor.

Both predictors run on the same random-weight model (see test_predictor_support.py); logits,
scores and masks are compared for every kind of prompt. Then the cache, thread safety, device
and precision choice, and the error messages.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from sam_widget.predictor import (
    Engine,
    Prediction,
    Predictor,
    logits_to_masks,
    select_device,
    select_precision,
    upscale_logits,
)
from tests.test_predictor_support import synthetic_image


@pytest.fixture(scope="module")
def image():
    return synthetic_image()


@pytest.fixture(scope="module")
def pair(model, official_model, image):
    from segment_anything import SamPredictor

    official = SamPredictor(official_model)
    official.set_image(image)
    ours = Predictor(model, device="cpu")
    ours.set_image(image)
    return ours, official


def assert_parity(pred: Prediction, official_out) -> None:
    masks, scores, logits = official_out
    rel = np.abs(pred.logits - logits).max() / logits.std()
    assert rel <= 1e-3, f"low-res logits differ: max|diff|/std = {rel:.2e}"
    assert np.abs(pred.scores - scores).max() <= 1e-4
    assert pred.masks.shape == masks.shape and pred.masks.dtype == bool
    assert (pred.masks == masks).mean() >= 0.999


def test_embedding_equals_official(pair):
    ours, official = pair
    ref = official.get_image_embedding()[0]
    assert ours.embedding.shape == (256, 64, 64) and ours.embedding.dtype == torch.float32
    assert ((ours.embedding - ref).abs().max() / ref.std()).item() <= 1e-4
    assert ours.image_shape == (240, 320)
    assert ours.input_size == official.input_size


PROMPTS = {
    "one point": dict(points=[[150.0, 100.0]], labels=[1]),
    "fg+bg points": dict(points=[[150.0, 100.0], [40.0, 200.0], [300, 20]], labels=[1, 0, 0]),
    "box": dict(box=[60.0, 50.0, 200.0, 190.0]),
    "box+points": dict(points=[[120.0, 110.0], [70, 60]], labels=[1, 0], box=[60, 50, 200, 190]),
}


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("prompt", PROMPTS, ids=list(PROMPTS))
def test_prompts_match_official(pair, prompt, multimask):
    ours, official = pair
    kw = PROMPTS[prompt]
    pred = ours.predict(**kw, multimask=multimask)
    out = official.predict(
        point_coords=None if "points" not in kw else np.array(kw["points"], dtype=float),
        point_labels=None if "labels" not in kw else np.array(kw["labels"]),
        box=None if "box" not in kw else np.array(kw["box"], dtype=float),
        multimask_output=multimask,
    )
    n = 3 if multimask else 1
    assert pred.scores.shape == (n,) and pred.logits.shape == (n, 256, 256)
    assert_parity(pred, out)


def test_mask_input_fed_back_matches_official(pair):
    ours, official = pair
    first = ours.predict(points=[[150, 100]], labels=[1])
    _, _, ref_logits = official.predict(np.array([[150.0, 100.0]]), np.array([1]))
    best = int(np.argmax(first.scores))
    pred = ours.predict(
        points=[[150, 100], [60, 200]], labels=[1, 0], mask_input=first.logits[best][None]
    )
    out = official.predict(
        np.array([[150.0, 100.0], [60.0, 200.0]]),
        np.array([1, 0]),
        mask_input=ref_logits[best][None],
    )
    assert_parity(pred, out)


def test_several_boxes_give_one_mask_set_each(pair):
    ours, official = pair
    boxes = np.array([[10, 10, 100, 120], [60, 50, 200, 190], [150, 30, 310, 230]], dtype=float)
    pred = ours.predict(box=boxes, multimask=False)
    assert pred.scores.shape == (3, 1) and pred.masks.shape == (3, 1, 240, 320)
    boxes_t = official.transform.apply_boxes_torch(torch.as_tensor(boxes), (240, 320))
    masks, scores, logits = official.predict_torch(None, None, boxes_t, multimask_output=False)
    for i, box in enumerate(boxes):  # and each agrees with asking for that box alone
        single = official.predict(box=box, multimask_output=False)
        assert_parity(
            Prediction(pred.scores[i], pred.logits[i], (240, 320), lambda s, i=i: pred.masks[i]),
            single,
        )
    assert np.abs(pred.scores - scores.numpy()).max() <= 1e-4
    assert (pred.masks == masks.numpy()).mean() >= 0.999


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("with_mask_input", [False, True])
def test_fast_decoder_equals_the_decoder_module(
    pair, model, monkeypatch, multimask, with_mask_input
):
    """The predictor's rearranged decoder computes what ``model.mask_decoder`` computes, for
    several prompts at once, with and without mask input; and the upscaling's row blocks
    need not divide the embedding (64 rows in blocks of 24, 24, 16)."""
    import sam_widget.decoder as decoder_module

    ours, _ = pair
    monkeypatch.setattr(decoder_module, "_UPSCALE_ROWS", 24)
    state = ours._current()
    gen = torch.Generator().manual_seed(3)
    coords = torch.rand(3, 2, 2, generator=gen) * 1000
    labels = torch.tensor([[1, 0], [1, 1], [0, 1]], dtype=torch.int32)
    masks = torch.randn(3, 1, 256, 256, generator=gen) * 5 if with_mask_input else None
    with torch.no_grad():
        sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=masks)
        ref_logits, ref_iou = model.mask_decoder(
            image_embeddings=state.embedding.float(),
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        logits, iou = decoder_module.decode(
            model, ours._context(state), sparse, dense if with_mask_input else None, multimask
        )
    assert logits.shape == ref_logits.shape == (3, 3 if multimask else 1, 256, 256)
    spread = ref_logits.std().item()
    assert (logits - ref_logits).abs().max().item() <= 1e-4 * spread
    assert (iou - ref_iou).abs().max().item() <= 1e-5
    assert ((logits > 0) == (ref_logits > 0)).float().mean().item() >= 0.999


def test_masks_at_any_size(pair, model):
    """masks_at(h, w) is the official postprocessing with (h, w) as the output size."""
    ours, official = pair
    pred = ours.predict(points=[[150, 100]], labels=[1])
    small = pred.masks_at(60, 80)
    assert small.shape == (3, 60, 80) and small.dtype == bool
    with torch.no_grad():
        logits = torch.as_tensor(pred.logits)[None]
        ref = model.postprocess_masks(logits, official.input_size, (60, 80))[0] > 0
    assert (small == ref.numpy()).mean() >= 0.999
    full = pred.masks
    assert pred.masks_at(240, 320) is full  # the full size is computed once


@pytest.mark.parametrize(
    "input_size, output_size",
    [
        ((683, 1024), (1200, 1800)),  # landscape, upscaled
        ((1024, 683), (1800, 1200)),  # portrait
        ((768, 1024), (768, 1024)),  # output = the resized image: one resize only
        ((1024, 1024), (300, 301)),  # downscaled, odd size
        ((1024, 1024), (1, 1)),
        ((512, 1024), (2050, 4100)),  # larger than the bands
    ],
)
@pytest.mark.parametrize("threshold", [0.0, 1.5])
def test_logits_to_masks_is_the_official_postprocessing(input_size, output_size, threshold):
    """The composed banded resize gives the masks of ``upscale_logits(...) > threshold``
    wherever the logit is not within float rounding of the threshold, for any lead axes."""
    gen = torch.Generator().manual_seed(1)
    # smooth logits with a large range, so the masks have long, curved boundaries
    noise = torch.randn(2, 3, 64, 64, generator=gen) * 8
    logits = torch.nn.functional.interpolate(noise, (256, 256), mode="bicubic")
    masks = logits_to_masks(logits, input_size, output_size, threshold)
    ref = upscale_logits(logits, input_size, output_size)
    assert masks.shape == (2, 3, *output_size) and masks.dtype == bool
    clear = (ref - threshold).abs() > 1e-5 * logits.abs().max()
    np.testing.assert_array_equal(masks[clear.numpy()], (ref > threshold)[clear].numpy())
    assert clear.float().mean() > 0.999  # the comparison covers nearly every pixel


def test_logits_to_masks_refuses_an_empty_size():
    with pytest.raises(ValueError, match="positive size"):
        logits_to_masks(torch.zeros(3, 256, 256), (1024, 1024), (0, 5))


def test_engine_interface(pair):
    ours, _ = pair
    assert isinstance(ours, Engine)
    assert ours.name == "vit_b"  # the variant of the config the tiny model was built from
    assert ours.device == "cpu"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(points=[[np.nan, 3.0]], labels=[1]), "NaN"),
        (dict(points=[[1.0, 2.0, 3.0]], labels=[1]), "shape"),
        (dict(points=[[1.0, 2.0]]), "labels are required"),
        (dict(points=[[1.0, 2.0]], labels=[2]), "1 \\(foreground\\) or 0"),
        (dict(points=[[1.0, 2.0]], labels=[1, 0]), "one entry per point"),
        (dict(box=[50, 50, 10, 80]), "inverted"),
        (dict(box=[1, 2, 3]), "box must be"),
        (dict(box=[0, 0, np.inf, 5]), "NaN or infinite"),
        (dict(points=[[1.0, 2.0]], labels=[1], mask_input=np.zeros((64, 64))), "mask_input"),
        (dict(), "at least one prompt"),
    ],
)
def test_bad_prompts_say_what_is_wrong(pair, kwargs, message):
    ours, _ = pair
    with pytest.raises(ValueError, match=message):
        ours.predict(**kwargs)


def test_predict_before_set_image(model):
    p = Predictor(model, device="cpu")
    with pytest.raises(RuntimeError, match="set_image"):
        p.predict(points=[[1, 1]], labels=[1])
    with pytest.raises(RuntimeError, match="set_image"):
        _ = p.embedding
    assert p.image_shape is None


def test_not_a_model_is_refused():
    with pytest.raises(TypeError, match="SAM model"):
        Predictor(torch.nn.Linear(2, 2))


class EncoderCalls:
    def __init__(self, model):
        self.count = 0
        self.handle = model.image_encoder.register_forward_hook(self._hook)

    def _hook(self, *args):
        self.count += 1


def test_cache_skips_the_encoder_for_seen_content(model, image):
    p = Predictor(model, device="cpu")
    calls = EncoderCalls(model)
    try:
        p.set_image(image)
        embedding = p.embedding.clone()
        p.set_image(image[:, ::-1])  # another image
        p.set_image(image.copy())  # same content, another array
        assert calls.count == 2
        assert torch.equal(p.embedding, embedding)
        assert p.cache_info["hits"] == 1 and p.cache_info["entries"] == 2
    finally:
        calls.handle.remove()


def test_cache_is_lru_bounded_in_bytes(model, image):
    one = 256 * 64 * 64 * 4  # a float32 embedding
    p = Predictor(model, device="cpu", cache_bytes=2 * one)
    a, b, c = image, image[::-1].copy(), image[:, ::-1].copy()
    calls = EncoderCalls(model)
    try:
        p.set_image(a)
        p.set_image(b)
        p.set_image(a)  # a is now the most recently used
        p.set_image(c)  # evicts b
        assert calls.count == 3 and p.cache_info["bytes"] == 2 * one
        p.set_image(a)
        assert calls.count == 3
        p.set_image(b)
        assert calls.count == 4
    finally:
        calls.handle.remove()
    uncached = Predictor(model, device="cpu", cache_bytes=0)
    uncached.set_image(a)
    assert uncached.cache_info["entries"] == 0


def test_background_set_image_while_predicting(model, image):
    """Each prediction is wholly for one image: never a mix, never an error."""
    other = synthetic_image(seed=1)
    p = Predictor(model, device="cpu", cache_bytes=0)  # every set_image really encodes
    point = dict(points=[[150, 100]], labels=[1])
    p.set_image(other)
    expected_other = p.predict(**point).scores
    p.set_image(image)
    expected_image = p.predict(**point).scores
    errors = []

    def background():
        try:
            for im in (other, image, other):
                p.set_image(im)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    thread = threading.Thread(target=background)
    thread.start()
    seen = []
    while thread.is_alive() or not seen:
        pred = p.predict(**point)
        seen.append(pred.scores)
        assert pred.masks.shape == (3, 240, 320)
    thread.join()
    assert not errors
    for scores in seen:
        assert np.allclose(scores, expected_other, atol=1e-6) or np.allclose(
            scores, expected_image, atol=1e-6
        )
    assert np.allclose(p.predict(**point).scores, expected_other, atol=1e-6)


def test_device_choice(monkeypatch):
    assert select_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert select_device() == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert select_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device() == torch.device("cuda")
    assert select_device("cpu") == torch.device("cpu")  # an explicit choice wins


def test_precision_choice():
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    assert select_precision("auto", cpu) == torch.float32
    assert select_precision("auto", mps) == torch.float32
    assert select_precision("auto", cuda) == torch.float16
    assert select_precision("bfloat16", cpu) == torch.bfloat16
    assert select_precision("float32", cuda) == torch.float32
    with pytest.raises(ValueError, match="bfloat16"):
        select_precision("float16", cpu)
    with pytest.raises(ValueError, match="precision must be one of"):
        select_precision("int8", cpu)


def test_bfloat16_encoder_masks_agree_with_float32(model, image, pair):
    ours, _ = pair
    reduced = Predictor(model, device="cpu", precision="bfloat16")
    reduced.set_image(image)
    assert reduced.embedding.dtype == torch.bfloat16
    for kw in PROMPTS.values():
        full, half = ours.predict(**kw), reduced.predict(**kw)
        assert (full.masks == half.masks).mean() >= 0.99


def test_set_image_accepts_pil_images_and_paths(pair, image, tmp_path):
    """Inputs go through sam_widget.images.to_rgb; the same pixels hit the cache."""
    from PIL import Image

    ours, _ = pair
    hits = ours.cache_info["hits"]
    path = tmp_path / "image.png"
    Image.fromarray(image).save(path)
    ours.set_image(Image.fromarray(image))
    ours.set_image(str(path))
    assert ours.cache_info["hits"] == hits + 2
    assert ours.image_shape == image.shape[:2]


# ------------------------------------------------------------------ many users of one Predictor
def test_handles_answer_for_their_own_image(model, image):
    """Two users of one Predictor each keep the handle `encode` gave them: whatever image
    another user set since, ``predict(image=handle)`` answers for the handle's image."""
    p = Predictor(model, device="cpu")
    other = np.ascontiguousarray(image[::-1, ::-1])
    a = p.encode(image)
    b = p.encode(other)
    assert p.image_shape is None  # encode makes nothing current
    p.set_image(image)
    alone = p.predict(points=[(100, 80)], labels=[1])
    p.set_image(other)  # "another cell" changes the current image
    from_a = p.predict(points=[(100, 80)], labels=[1], image=a)
    from_b = p.predict(points=[(100, 80)], labels=[1], image=b)
    np.testing.assert_array_equal(from_a.logits, alone.logits)
    assert not np.array_equal(from_b.logits, alone.logits)
    assert p.cache_info["misses"] == 2  # set_image reused both encodings


def test_handles_answer_from_two_threads(model, image):
    p = Predictor(model, device="cpu")
    images = [image, np.ascontiguousarray(image[::-1])]
    handles = [p.encode(im) for im in images]
    expected = [p.predict(points=[(60, 50)], labels=[1], image=h).logits for h in handles]
    failures = []

    def user(k: int) -> None:
        for _ in range(10):
            p.set_image(images[1 - k])  # the other user's image becomes "current"
            got = p.predict(points=[(60, 50)], labels=[1], image=handles[k]).logits
            if not np.array_equal(got, expected[k]):
                failures.append(k)

    threads = [threading.Thread(target=user, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_a_handle_from_another_predictor_is_refused(model, image):
    p, q = Predictor(model, device="cpu"), Predictor(model, device="cpu")
    handle = q.encode(image)
    with pytest.raises(ValueError, match="handle returned by this Predictor"):
        p.predict(points=[(10, 10)], labels=[1], image=handle)
    with pytest.raises(ValueError, match="handle"):
        p.predict(points=[(10, 10)], labels=[1], image=image)


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_set_image_leaves_no_image(model, image, monkeypatch, error):
    p = Predictor(model, device="cpu")
    p.set_image(image)

    def broken(rgb):
        raise error("interrupted")

    monkeypatch.setattr(p, "_encode", broken)
    with pytest.raises(error):
        p.set_image(np.ascontiguousarray(image[::-1]))
    assert p.image_shape is None
    with pytest.raises(RuntimeError, match="no image set"):
        p.predict(points=[(10, 10)], labels=[1])
    p.set_image(image)  # a cached image is set again without the encoder
    assert p.predict(points=[(10, 10)], labels=[1]).masks.shape == (3, *image.shape[:2])


def test_an_encode_is_cancelled_within_one_block_and_caches_nothing():
    from sam_widget.predictor import EncodeCancelled
    from tests.test_predictor_support import small_sam

    model = small_sam()
    p = Predictor(model, device="cpu")
    image = synthetic_image(40, 50)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(EncodeCancelled):  # set before it started: no encoder run at all
        p.encode(image, cancel=cancel)

    # set by another party while the first block runs: the next block's check stops it
    neck_runs = []
    hooks = [
        model.image_encoder.blocks[0].register_forward_hook(lambda *a: cancel.set()),
        model.image_encoder.neck.register_forward_hook(lambda *a: neck_runs.append(1)),
    ]
    cancel.clear()
    try:
        original = model.image_encoder.blocks
        model.image_encoder.blocks = torch.nn.ModuleList([original[0], original[0]])
        with pytest.raises(EncodeCancelled):
            p.encode(image, cancel=cancel)
    finally:
        model.image_encoder.blocks = original
        for hook in hooks:
            hook.remove()
    assert neck_runs == [] and p.cache_info["entries"] == 0

    handle = p.encode(image, cancel=threading.Event())  # never set: an ordinary encode
    assert p.cache_info["entries"] == 1
    np.testing.assert_array_equal(handle.embedding, p.encode(image).embedding)
