"""benchmarks/gpu_check.py at smoke size on the CPU: every row's code path runs (tiny models and
images), so the GPU check cannot rot between the rare runs on a GPU. The figures it prints
mean nothing here; what is checked is that each row ran, passed its check or says why not."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_check():
    return _load()


def _sam2_here() -> bool:
    try:
        import sam2  # noqa: F401

        import sam_widget.models.sam2  # noqa: F401
        import tests.reference_sam2  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def smoke(gpu_check, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "smoke.json"
    rc = gpu_check.main(["--device", "cpu", "--smoke", "--json", str(out)])
    return rc, json.loads(out.read_text())


def test_smoke_runs_every_row(gpu_check, smoke, capsys):
    rc, result = smoke
    rows = {r["id"]: r for r in result["rows"]}
    assert rc == 0, [(r["id"], r["status"], r.get("note")) for r in result["rows"]]
    assert result["environment"]["smoke"] is True
    assert result["environment"]["device"] == "cpu"

    # each family's code paths once: SAM (ViT and TinyViT) and SAM 2.1
    expected = [f"check/vit_b/{p}" for p in gpu_check.PRECISIONS]
    expected += ["click/mobile_sam", "click/vit_b", "widget/vit_b", "everything/vit_b"]
    expected += [f"encoder/vit_b/{p}" for p in gpu_check.PRECISIONS]
    sam2 = ["click/sam2.1_hiera_tiny", "everything/sam2.1_hiera_tiny"]
    assert sorted(rows) == sorted(expected + sam2)

    for row_id in expected + sam2:
        row = rows[row_id]
        if "sam2.1" in row_id and not _sam2_here():
            assert row["status"] == "n/a" and row["note"].startswith("not available"), row
        elif row_id.endswith("/float16"):  # the CPU has no float16 autocast in the Predictor
            assert row["status"] == "n/a" and "needs a GPU" in row["note"], row
        elif row_id.startswith(("check/", "click/")):
            assert row["status"] == "pass", row
            assert row["agree"] >= row["threshold"]
        else:
            assert row["status"] == "ok", row
        if row["status"] in ("pass", "ok") and not row_id.startswith("check/"):
            assert row["ours_ms"] > 0 and row["official_ms"] > 0
            assert row["ratio"] == pytest.approx(row["ours_ms"] / row["official_ms"])
            assert row["ours_mib"] is None  # peak GPU memory: only on CUDA
        if row_id.startswith("everything/") and row["status"] == "ok":
            assert 0.99 <= row["agree"] <= 1.0 and "masks ours" in row["note"]


def test_list_only_and_bad_patterns(gpu_check, capsys):
    assert (
        gpu_check.main(["--device", "cpu", "--list", "--only", "encoder/vit_h/*,click/vit_b"]) == 0
    )
    assert capsys.readouterr().out.split() == [
        "click/vit_b",
        "encoder/vit_h/float32",
        "encoder/vit_h/float16",
        "encoder/vit_h/bfloat16",
    ]
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cpu", "--list", "--only", "encoder/vit_x/*"])
    assert "encoder/vit_x/* matches no row" in capsys.readouterr().err
    assert gpu_check.main(["--requirements"]) == 0
    assert "segment-anything==1.0" in capsys.readouterr().out.split()


def test_missing_official_package_is_not_available(gpu_check, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "segment_anything", None)  # import raises ImportError
    out = tmp_path / "only.json"
    rc = gpu_check.main(["--device", "cpu", "--smoke", "--only", "click/vit_b", "--json", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    assert rc == 0 and row["status"] == "n/a"
    assert row["note"].startswith("not available: official package missing")
    assert "not available" in capsys.readouterr().out
