"""Every notebook in notebooks/ runs headless from top to bottom without an error.

Executed with nbclient in a fresh kernel, kept cheap and hermetic by environment variables
the notebooks read: ``SAM_WIDGET_MODEL=classic`` pins what ``model="auto"`` means (nothing is
downloaded), ``SAM_WIDGET_NOTEBOOK_VARIANT=mobile_sam`` makes the teaching notebook's
random-weight SAM the small one, ``SAM_WIDGET_NOTEBOOK_GRID=4`` shrinks everything mode,
``SAM_WIDGET_NOTEBOOK_SMALL=1`` runs the data-engine notebook on a tiny model and dataset. An
empty checkpoint folder and torch hub make sure no cached weights are picked up.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_all_here():
    assert {p.name for p in NOTEBOOKS} == {
        "quickstart.ipynb", "colab.ipynb", "teaching.ipynb", "data_engine.ipynb"
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def test_quickstart_is_five_lines_of_code():
    nb = nbformat.read(REPO / "notebooks" / "quickstart.ipynb", as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    lines = [line for line in first.source.splitlines() if line.strip()]
    assert len(lines) == 5, lines


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_headless_without_errors(path, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("SAM_WIDGET_MODEL", "classic")
    monkeypatch.setenv("SAM_WIDGET_NOTEBOOK_VARIANT", "mobile_sam")
    monkeypatch.setenv("SAM_WIDGET_NOTEBOOK_GRID", "4")
    monkeypatch.setenv("SAM_WIDGET_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("SAM_WIDGET_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    nb = nbformat.read(path, as_version=4)
    # timeout=None: no wall-clock limit per cell (the machine may be busy); errors still fail
    client = NotebookClient(
        nb, timeout=None, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError with the cell and traceback on any error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert outputs, "the notebook produced no output at all"


def test_an_executed_notebook_keeps_a_png_of_the_widget(tmp_path, monkeypatch):
    """Where no widget frontend runs (nbconvert, GitHub, a PDF) the saved notebook still shows
    the image with its mask: a picture output of its state (sam_widget/picture.py)."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    code = (
        "import numpy as np\n"
        "import sam_widget as sw\n"
        "img = np.full((120, 160, 3), 40, np.uint8)\n"
        "img[30:90, 40:110] = (230, 230, 230)  # a bright rectangle\n"
        "w = sw.SamWidget(img, model='classic')\n"
        "w.add_point(75, 60)\n"
        "w"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(nb, timeout=None, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    path = tmp_path / "saved.ipynb"
    nbformat.write(nb, path)  # what a user saves, read back as nbconvert would

    outputs = [o for o in nbformat.read(path, as_version=4).cells[0].outputs
               if o.output_type in ("display_data", "execute_result")]
    view = "application/vnd.jupyter.widget-view+json"
    # the live view, and the picture (its empty model_id hides it where widgets render)
    assert [o.data[view]["model_id"] != "" for o in outputs] == [True, False]
    picture = outputs[1].data
    mime = "image/png" if "image/png" in picture else "image/jpeg"
    assert len(picture[mime]) < 200_000
    png = Image.open(io.BytesIO(base64.b64decode(picture[mime]))).convert("RGB")
    pixels = np.asarray(png).astype(int)
    scale = png.width / 160
    inside = pixels[int(60 * scale) - 10, int(60 * scale)]  # in the rectangle, off the marker
    outside = pixels[int(10 * scale), int(10 * scale)]
    assert abs(outside - 40).max() <= 2  # background unchanged
    assert abs(inside - 230).max() > 20  # the mask overlay tints the clicked rectangle
