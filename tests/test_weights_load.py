"""load_model (sam_widget.weights) with our own models (sam_widget.models): strict loading,
clear errors for checkpoints that do not fit, GPU-saved files on a CPU, and the whole
registry -> download -> cache -> model chain against a loopback HTTP server.

Models are built at reduced size from the vit_b configuration (same code path as the full
model) or, for key/shape checks, on the meta device with tiny expanded-zero storages.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch
from test_weights import _point_registry, _Server, use_empty_cache

from sam_widget import weights
from sam_widget.weights import CheckpointError

# ---------------------------------------------------------------------------- load_model


def _tiny_config():
    """A vit_b config at reduced size (same code path as the full model)."""
    from sam_widget.models import CONFIGS

    return CONFIGS["vit_b"].with_encoder(
        embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,)
    )


def _tiny_model_file(tmp_path: Path, *, gpu_tag: bool = False) -> tuple[Path, dict]:
    from sam_widget.models import build_sam

    torch.manual_seed(1)
    model = build_sam(_tiny_config())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "tiny.pth"
    if gpu_tag:
        # what torch.save writes for tensors that live on a GPU: the storages are tagged
        # "cuda:0" and torch.load without map_location would try to put them back there
        import torch.serialization as serialization

        real = serialization.location_tag
        serialization.location_tag = lambda storage: "cuda:0"
        try:
            torch.save(state, path)
        finally:
            serialization.location_tag = real
    else:
        torch.save(state, path)
    return path, state


def test_load_model_loads_strictly_and_returns_eval_model_on_device(tmp_path):
    path, state = _tiny_model_file(tmp_path)
    model = weights.load_model(_tiny_config(), checkpoint=path, device="cpu")
    assert not model.training
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_gpu_saved_checkpoint_loads_on_cpu(tmp_path):
    import zipfile

    path, state = _tiny_model_file(tmp_path, gpu_tag=True)
    with zipfile.ZipFile(path) as archive:
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert b"cuda:0" in pickled  # the file really says its tensors were on a GPU
    model = weights.load_model(_tiny_config(), checkpoint=path, device="cpu")
    key = "mask_decoder.iou_token.weight"
    assert torch.equal(model.state_dict()[key], state[key])
    assert model.state_dict()[key].device.type == "cpu"


def test_missing_and_unexpected_keys_are_reported(tmp_path):
    path, state = _tiny_model_file(tmp_path)
    del state["mask_decoder.iou_token.weight"]
    state["extra.head.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        weights.load_model(_tiny_config(), checkpoint=path, device="cpu")
    message = str(info.value)
    assert "missing keys (1): mask_decoder.iou_token.weight" in message
    assert "unexpected keys (1): extra.head.weight" in message


def test_shape_mismatch_is_reported(tmp_path):
    path, state = _tiny_model_file(tmp_path)
    state["mask_decoder.iou_token.weight"] = torch.zeros(1, 128)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"mask_decoder.iou_token.weight \(1, 128\) vs"):
        weights.load_model(_tiny_config(), checkpoint=path, device="cpu")


def test_load_model_downloads_through_the_registry_then_reuses_the_cache(tmp_path, monkeypatch):
    cache = use_empty_cache(tmp_path, monkeypatch)
    path, state = _tiny_model_file(tmp_path)
    payload = path.read_bytes()
    server = _Server(payload)
    try:
        entry = _point_registry(monkeypatch, server.url, payload)
        model = weights.load_model(_tiny_config(), device="cpu", progress=False)
        assert (cache / entry.filename).is_file()
        key = "image_encoder.patch_embed.proj.weight"
        assert torch.equal(model.state_dict()[key], state[key])
    finally:
        server.close()
    again = weights.load_model(_tiny_config(), device="cpu", progress=False)  # server is gone
    assert torch.equal(again.state_dict()[key], state[key])
    assert server.requests == ["GET /sam_test.pth"]


def test_a_mobile_sam_checkpoint_is_recognised_when_vit_b_is_asked_for(tmp_path):
    from sam_widget.models import build_sam

    with torch.device("meta"):
        model = build_sam("mobile_sam")
    state = collections.OrderedDict(
        (k, torch.zeros((), dtype=v.dtype).expand(v.shape)) for k, v in model.state_dict().items()
    )
    assert weights.identify_state_dict(state) == "mobile_sam"
    path = tmp_path / "mobile_sam.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="TinyViT image encoder.*: that is mobile_sam"):
        weights.load_model("vit_b", checkpoint=path, device="cpu")
