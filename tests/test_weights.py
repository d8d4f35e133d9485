"""Checkpoint registry, download, cache and safe loading (sam_widget.weights).

Every network test talks to a real HTTP server on 127.0.0.1 that serves a checkpoint the test
wrote itself (the state dict of a small official-architecture SAM); the registry entry is
pointed at it with monkeypatch. Nothing is downloaded from the internet.

The load_model tests at the end build our own models (sam_widget.models) at reduced size from
the vit_b configuration, or on the meta device with tiny expanded-zero storages for the
key/shape checks.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import http.server
import io
import os
import socket
import tempfile
import threading
from pathlib import Path

import pytest
import torch

from sam_widget import weights
from sam_widget.weights import CheckpointError

# ---------------------------------------------------------------------------- fixtures


def _small_sam_state() -> dict[str, torch.Tensor]:
    """State dict of the official SAM architecture with a 2-block, width-64 image encoder."""
    from functools import partial

    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    torch.manual_seed(0)
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=2,
            embed_dim=64,
            num_heads=2,
            img_size=1024,
            patch_size=16,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=(1,),
            window_size=14,
            out_chans=256,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=256,
            image_embedding_size=(64, 64),
            input_image_size=(1024, 1024),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
    )
    return sam.state_dict()


@pytest.fixture(scope="module")
def checkpoint_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save(_small_sam_state(), buffer)
    return buffer.getvalue()


class _Server:
    """A loopback HTTP server; ``mode`` picks how it answers GET."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.mode = "ok"  # "ok" | "drop" (close mid-file) | "endless"
        self.requests: list[str] = []
        self.sent = 0  # bytes written in "endless" mode
        self.endless_limit = 64 << 20
        self.done = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _head(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(server.payload)))
                self.end_headers()

            def do_HEAD(self) -> None:  # noqa: N802
                server.requests.append("HEAD " + self.path)
                self._head()

            def do_GET(self) -> None:  # noqa: N802
                server.requests.append("GET " + self.path)
                if server.mode == "endless":  # no Content-Length, bytes until the client goes
                    self.send_response(200)
                    self.end_headers()
                    block = bytes(1 << 16)
                    try:
                        while server.sent < server.endless_limit:
                            self.wfile.write(block)
                            server.sent += len(block)
                    except OSError:  # the client hung up
                        pass
                    server.done.set()
                    return
                self._head()
                if server.mode == "drop":
                    self.wfile.write(server.payload[: len(server.payload) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(server.payload)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/sam_test.pth"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server(checkpoint_bytes):
    s = _Server(checkpoint_bytes)
    yield s
    s.close()


def use_empty_cache(tmp_path: Path, monkeypatch) -> Path:
    """An empty checkpoint dir named by $SAM_WIDGET_CHECKPOINT_DIR, and an empty torch hub."""
    folder = tmp_path / "checkpoints"
    monkeypatch.setenv(weights.ENV_DIR, str(folder))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return folder


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    return use_empty_cache(tmp_path, monkeypatch)


def _point_registry(monkeypatch, url: str, payload: bytes, **changes) -> weights.Checkpoint:
    """Make the vit_b entry describe ``payload`` served at ``url``."""
    entry = dataclasses.replace(
        weights.REGISTRY["vit_b"],
        filename="sam_test.pth",
        url=url,
        size=len(payload),
        sha256=hashlib.sha256(payload).hexdigest(),
        md5_prefix=hashlib.md5(payload).hexdigest()[:6],
    )
    entry = dataclasses.replace(entry, **changes)
    monkeypatch.setitem(weights.REGISTRY, "vit_b", entry)
    return entry


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------------------- registry


def test_registry_names_the_official_files_and_pins_checksums():
    sam1 = {"vit_b", "vit_l", "vit_h", "mobile_sam"}
    sam2 = {f"sam2.1_hiera_{s}" for s in ("tiny", "small", "base_plus", "large")}
    assert set(weights.REGISTRY) == sam1 | sam2
    for variant in sam2:  # Meta publishes no digest for these (see weights.py)
        entry = weights.REGISTRY[variant]
        assert entry.filename == f"{variant}.pt" and entry.sha256 is None
        assert entry.url == f"https://dl.fbaipublicfiles.com/segment_anything_2/092824/{variant}.pt"
    for variant in sam1:
        entry = weights.REGISTRY[variant]
        assert entry.variant == variant
        assert entry.url.endswith("/" + entry.filename)
        assert entry.url.startswith("https://")
        assert entry.sha256 is not None and len(entry.sha256) == 64
        assert entry.size is not None and entry.size > 10_000_000
        if entry.md5_prefix is not None:  # the official SAM names carry their MD5 prefix
            assert entry.md5_prefix in entry.filename
    assert weights.REGISTRY["vit_b"].url == (
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"
    )


def test_unknown_variant_lists_the_choices():
    with pytest.raises(ValueError, match="vit_b, vit_l, vit_h, mobile_sam"):
        weights.find_checkpoint("vit_x")


# ---------------------------------------------------------------------------- download


def test_download_verifies_and_renames_with_progress(
    server, cache, monkeypatch, checkpoint_bytes, capsys
):
    entry = _point_registry(monkeypatch, server.url, checkpoint_bytes)
    assert weights.find_checkpoint("vit_b") is None
    path = weights.download("vit_b", progress=True)
    assert path == cache / entry.filename
    assert path.read_bytes() == checkpoint_bytes
    # no temporary file left behind; the sidecar remembers that the bytes were verified
    assert _leftovers(cache) == [f".{entry.filename}.verified", entry.filename]
    err = capsys.readouterr().err
    assert entry.filename in err and "100%" in err  # the tqdm bar ran to the end
    assert weights.find_checkpoint("vit_b") == path
    state = weights.load_state_dict(path)
    assert torch.equal(
        state["mask_decoder.iou_token.weight"], _small_sam_state()["mask_decoder.iou_token.weight"]
    )


def test_connection_dropped_mid_file_leaves_nothing(server, cache, monkeypatch, checkpoint_bytes):
    entry = _point_registry(monkeypatch, server.url, checkpoint_bytes)
    server.mode = "drop"
    with pytest.raises(CheckpointError, match="closed after|nothing was saved") as info:
        weights.download("vit_b", progress=False)
    assert entry.url in str(info.value)
    assert not (cache / entry.filename).exists()
    assert _leftovers(cache) == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "size",
            12345,
            r"announces [\d,]+ bytes, more than the official sam_test.pth has "
            r"\(12,345 bytes\); the download was stopped",
        ),
        ("size", 30_000_000, "bytes where the official file has 30,000,000"),
        ("sha256", "0" * 64, "SHA-256 is"),
        ("md5_prefix", "abcdef", "MD5 is"),
    ],
)
def test_wrong_size_or_checksum_is_rejected(
    server, cache, monkeypatch, checkpoint_bytes, field, value, message
):
    entry = _point_registry(monkeypatch, server.url, checkpoint_bytes, **{field: value})
    with pytest.raises(CheckpointError, match=message):
        weights.download("vit_b", progress=False)
    assert not (cache / entry.filename).exists()
    assert _leftovers(cache) == []


def test_connection_refused_gives_the_offline_message(cache, monkeypatch, checkpoint_bytes):
    url = f"http://127.0.0.1:{_free_port()}/sam_test.pth"
    entry = _point_registry(monkeypatch, url, checkpoint_bytes)
    assert weights.can_download("vit_b", timeout=2.0) is False
    with pytest.raises(CheckpointError) as info:
        weights.download("vit_b", progress=False)
    message = str(info.value)
    assert url in message
    assert "offline" in message
    assert "download" in message and str(cache / entry.filename) in message  # manual steps
    assert weights.ENV_DIR in message
    assert _leftovers(cache) == []


def test_can_download_asks_the_server_without_downloading(
    server, cache, monkeypatch, checkpoint_bytes
):
    _point_registry(monkeypatch, server.url, checkpoint_bytes)
    assert weights.can_download("vit_b", timeout=2.0) is True
    assert server.requests == ["HEAD /sam_test.pth"]
    assert _leftovers(cache) == []


def test_can_download_falls_back_to_a_range_request_when_head_is_refused(
    cache, monkeypatch, checkpoint_bytes
):
    seen = []

    class NoHead(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802
            seen.append("HEAD")
            self.send_error(405)

        def do_GET(self) -> None:  # noqa: N802
            seen.append("GET " + self.headers.get("Range", ""))
            self.send_response(206)
            self.send_header("Content-Length", "1")
            self.end_headers()
            self.wfile.write(b"P")

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoHead)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/sam_test.pth"
        _point_registry(monkeypatch, url, checkpoint_bytes)
        assert weights.can_download("vit_b") is True
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    assert seen == ["HEAD", "GET bytes=0-0"]


def test_cached_file_is_reused_without_network(server, cache, monkeypatch, checkpoint_bytes):
    entry = _point_registry(monkeypatch, server.url, checkpoint_bytes)
    first = weights.download("vit_b", progress=False)
    server.close()  # from here on, any request would be refused
    refused = f"http://127.0.0.1:{_free_port()}/sam_test.pth"
    monkeypatch.setitem(weights.REGISTRY, "vit_b", dataclasses.replace(entry, url=refused))
    assert weights.download("vit_b", progress=False) == first
    assert weights.find_checkpoint("vit_b") == first
    assert server.requests == ["GET /sam_test.pth"]
    server.close = lambda: None  # already closed


def test_torch_hub_cache_is_found(tmp_path, monkeypatch, checkpoint_bytes):
    monkeypatch.delenv(weights.ENV_DIR, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    entry = _point_registry(monkeypatch, "http://127.0.0.1:9/x.pth", checkpoint_bytes)
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / entry.filename).write_bytes(checkpoint_bytes)
    assert weights.find_checkpoint("vit_b") == hub / entry.filename
    assert weights.cache_dir() == hub


def test_env_dir_wins_over_torch_hub(tmp_path, cache, monkeypatch, checkpoint_bytes):
    entry = _point_registry(monkeypatch, "http://127.0.0.1:9/x.pth", checkpoint_bytes)
    hub = tmp_path / "hub" / "checkpoints"
    for folder in (hub, cache):
        folder.mkdir(parents=True)
        (folder / entry.filename).write_bytes(checkpoint_bytes)
    assert weights.find_checkpoint("vit_b") == cache / entry.filename


def test_a_partial_copy_in_the_cache_is_not_taken_for_the_checkpoint(
    cache, monkeypatch, checkpoint_bytes
):
    entry = _point_registry(monkeypatch, "http://127.0.0.1:9/x.pth", checkpoint_bytes)
    cache.mkdir(parents=True)
    (cache / entry.filename).write_bytes(checkpoint_bytes[:1000])
    assert weights.find_checkpoint("vit_b") is None


# ---------------------------------------------------------------------------- unsafe pickles


class _TouchOnLoad:
    """Unpickling this calls open(marker, "w"): the file appears iff pickled code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _evil_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    state = collections.OrderedDict(weight=torch.zeros(2), payload=_TouchOnLoad(marker))
    path = tmp_path / "evil.pth"
    torch.save(state, path)
    return path, marker


def test_the_payload_really_runs_code_when_loaded_unsafely(tmp_path):
    """Control: proves the payload used below is live (so the refusals are meaningful)."""
    path, marker = _evil_checkpoint(tmp_path)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("force_unsafe", [False, True])
def test_pickled_code_is_refused_and_never_runs(tmp_path, monkeypatch, force_unsafe):
    if force_unsafe:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path, marker = _evil_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match=r"imports io\.open.*nothing in it was executed"):
        weights.load_state_dict(path)
    with pytest.raises(CheckpointError, match="not a plain state dict"):
        weights.load_model("vit_b", checkpoint=path, device="cpu")
    assert not marker.exists()


def test_refused_even_if_torch_load_ignored_weights_only(tmp_path, monkeypatch):
    """Older torch releases let TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD override weights_only=True;
    simulate that torch: our own inspection must still stop the payload before it loads."""
    real_load = torch.load
    calls = []

    def careless_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        kwargs["weights_only"] = False
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", careless_load)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path, marker = _evil_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="not a plain state dict"):
        weights.load_state_dict(path)
    assert calls == []  # torch never saw the file
    assert not marker.exists()


def test_downloaded_payload_is_refused_after_download(tmp_path, cache, monkeypatch):
    path, marker = _evil_checkpoint(tmp_path)
    payload = path.read_bytes()
    server = _Server(payload)
    try:
        _point_registry(monkeypatch, server.url, payload)
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
        with pytest.raises(CheckpointError, match="not a plain state dict"):
            weights.load_model("vit_b", device="cpu", progress=False)
    finally:
        server.close()
    assert not marker.exists()


def test_a_second_entry_of_the_same_name_cannot_hide_a_payload(tmp_path):
    import warnings
    import zipfile

    evil_path, marker = _evil_checkpoint(tmp_path)
    clean = io.BytesIO()
    torch.save(collections.OrderedDict(weight=torch.zeros(2)), clean)
    path = tmp_path / "twins.pth"
    with (
        zipfile.ZipFile(io.BytesIO(clean.getvalue())) as good,
        zipfile.ZipFile(evil_path) as bad,
        zipfile.ZipFile(path, "w") as out,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name"
        # the payload first: a lookup by name finds only the clean entry written after it
        pickled = next(i for i in bad.infolist() if i.filename.endswith("data.pkl"))
        out.writestr(pickled.filename.replace("evil", "archive"), bad.read(pickled))
        for info in good.infolist():
            out.writestr(info.filename, good.read(info))
    with zipfile.ZipFile(path) as archive:
        assert b"payload" not in archive.read("archive/data.pkl")  # what a name lookup sees
    with pytest.raises(CheckpointError, match="not a plain state dict"):
        weights.load_state_dict(path)
    assert not marker.exists()


def test_legacy_format_files_are_inspected_too(tmp_path):
    """Checkpoints written before torch 1.6 are a row of pickles, not a zip: all are scanned."""
    clean = tmp_path / "legacy.pth"
    torch.save({"w": torch.arange(3.0)}, clean, _use_new_zipfile_serialization=False)
    assert not clean.read_bytes().startswith(b"PK")
    assert torch.equal(weights.load_state_dict(clean)["w"], torch.arange(3.0))
    marker = tmp_path / "pwned"
    evil = tmp_path / "legacy_evil.pth"
    torch.save(
        {"w": torch.zeros(1), "x": _TouchOnLoad(marker)}, evil, _use_new_zipfile_serialization=False
    )
    with pytest.raises(CheckpointError, match="not a plain state dict"):
        weights.load_state_dict(evil)
    assert not marker.exists()


def test_explicit_weights_only_is_passed_to_torch_load(tmp_path, monkeypatch, checkpoint_bytes):
    seen = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    path = tmp_path / "ok.pth"
    path.write_bytes(checkpoint_bytes)
    weights.load_state_dict(path)
    assert seen == [{"map_location": "cpu", "weights_only": True}]


def test_scan_pickle_accepts_plain_state_dicts_of_every_dtype():
    state = collections.OrderedDict(
        (str(dtype), torch.zeros(3, dtype=dtype))
        for dtype in (
            torch.float32,
            torch.float16,
            torch.bfloat16,
            torch.int64,
            torch.bool,
            torch.uint8,
            torch.float64,
        )
    )
    state["param"] = torch.nn.Parameter(torch.ones(2))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    import zipfile

    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    weights.scan_pickle(data)  # raises if anything is refused


# ---------------------------------------------------------------------------- bad files


def test_missing_file_names_the_path_and_how_to_get_weights(tmp_path):
    missing = tmp_path / "nowhere" / "sam_vit_b_01ec64.pth"
    with pytest.raises(CheckpointError) as info:
        weights.load_model("vit_b", checkpoint=missing, device="cpu")
    message = str(info.value)
    assert str(missing) in message
    assert weights.REGISTRY["vit_b"].url in message


def test_truncated_file_says_so_without_a_zip_traceback(tmp_path, checkpoint_bytes):
    path = tmp_path / "sam_vit_b_01ec64.pth"
    path.write_bytes(checkpoint_bytes[: len(checkpoint_bytes) // 3])
    with pytest.raises(CheckpointError) as info:
        weights.load_state_dict(path)
    message = str(info.value)
    assert "truncated or corrupt" in message and str(path) in message
    assert "375,042,383" in message  # the official size, since the name is the official one
    assert "central directory" not in message


def test_corrupt_bytes_inside_the_archive_say_so(tmp_path, checkpoint_bytes):
    data = bytearray(checkpoint_bytes)
    start = data.find(b"data.pkl") + 40  # inside the pickle's stored bytes
    data[start : start + 200] = bytes(200)
    path = tmp_path / "broken.pth"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        weights.load_state_dict(path)


@pytest.mark.parametrize("content", [b"", b"<!DOCTYPE html><html>Not Found</html>"])
def test_empty_or_html_file_is_explained(tmp_path, content):
    path = tmp_path / "sam.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="empty|not a PyTorch checkpoint"):
        weights.load_state_dict(path)


def _official_shaped_state(builder_name: str) -> collections.OrderedDict:
    """The keys and shapes of an official checkpoint with tiny storage (expanded zeros), built
    from the official architecture on the meta device."""
    import segment_anything

    with torch.device("meta"):
        model = getattr(segment_anything, builder_name)()
    return collections.OrderedDict(
        (k, torch.zeros((), dtype=v.dtype).expand(v.shape)) for k, v in model.state_dict().items()
    )


def test_checkpoint_for_another_variant_is_identified(tmp_path):
    state = _official_shaped_state("build_sam_vit_b")
    assert weights.identify_state_dict(state) == "vit_b"
    assert weights.describe_state_dict(state) == "12 blocks of width 768"
    path = tmp_path / "mystery.pth"
    torch.save(state, path)
    assert path.stat().st_size < 2_000_000  # expanded zeros save one element per tensor
    with pytest.raises(CheckpointError) as info:
        weights.load_model("vit_l", checkpoint=path, device="cpu")
    message = str(info.value)
    assert "12 blocks of width 768: that is vit_b" in message
    assert "vit_l has 24 blocks of width 1024" in message


def test_identify_tells_the_vit_sizes_apart():
    import segment_anything

    for builder, variant, blocks, width in [
        ("build_sam_vit_l", "vit_l", 24, 1024),
        ("build_sam_vit_h", "vit_h", 32, 1280),
    ]:
        with torch.device("meta"):
            state = getattr(segment_anything, builder)().state_dict()
        assert weights.identify_state_dict(state) == variant
        assert weights.describe_state_dict(state) == f"{blocks} blocks of width {width}"
    assert weights.identify_state_dict(_small_sam_state()) is None
    assert weights.describe_state_dict(_small_sam_state()) == "2 blocks of width 64"
    assert "under the key 'model'" in weights.describe_state_dict({"model": {}})


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


# ---------------------------------------------------------------------------- files in and out


def test_a_download_larger_than_the_registry_size_stops_as_soon_as_it_passes_it(
    server, cache, monkeypatch, checkpoint_bytes
):
    entry = _point_registry(monkeypatch, server.url, checkpoint_bytes)
    server.mode = "endless"  # no Content-Length to refuse up front: only counting can tell
    with pytest.raises(CheckpointError, match=r"sent over [\d,]+ bytes, more than the official"):
        weights.download("vit_b", progress=False)
    assert server.done.wait(60)
    # the client read one byte past the size and hung up; what the server got out beyond
    # that sat in the two sockets' buffers (a few MiB), far below the 64 MiB on offer
    assert server.sent < entry.size + (16 << 20), server.sent
    assert _leftovers(cache) == []


def _count_hashing(monkeypatch) -> list[Path]:
    hashed: list[Path] = []
    real = weights._hashes

    def counting(path):
        hashed.append(Path(path))
        return real(path)

    monkeypatch.setattr(weights, "_hashes", counting)
    return hashed


def test_a_cached_file_whose_bytes_changed_is_moved_aside_before_loading(tmp_path, monkeypatch):
    cache = use_empty_cache(tmp_path, monkeypatch)
    path, state = _tiny_model_file(tmp_path)
    payload = path.read_bytes()
    server = _Server(payload)
    try:
        entry = _point_registry(monkeypatch, server.url, payload)
        weights.load_model(_tiny_config(), device="cpu", progress=False)
        cached = cache / entry.filename
        # one byte inside the tensor data flips (bit rot, a bad copy): same size, and the
        # archive still opens, so torch would load the wrong number without a word
        corrupt = bytearray(payload)
        corrupt[len(payload) // 2] ^= 0xFF
        cached.write_bytes(bytes(corrupt))
        loaded_from: list[bytes] = []
        real_load = torch.load
        monkeypatch.setattr(
            torch,
            "load",
            lambda f, **kw: (loaded_from.append(Path(f).read_bytes()), real_load(f, **kw))[1],
        )
        with pytest.warns(UserWarning, match=r"SHA-256 is .*moved aside to .*corrupt-"):
            model = weights.load_model(_tiny_config(), device="cpu", progress=False)
    finally:
        server.close()
    assert loaded_from == [payload]  # the changed file never reached torch.load
    key = "image_encoder.patch_embed.proj.weight"
    assert torch.equal(model.state_dict()[key], state[key])  # downloaded again, loaded right
    aside = [p for p in cache.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes() == bytes(corrupt)
    assert cached.read_bytes() == payload
    assert server.requests == ["GET /sam_test.pth"] * 2


def test_verification_is_remembered_until_the_file_changes(
    server, cache, monkeypatch, checkpoint_bytes
):
    _point_registry(monkeypatch, server.url, checkpoint_bytes)
    path = weights.download("vit_b", progress=False)  # hashed while downloading
    hashed = _count_hashing(monkeypatch)
    for _ in range(3):
        assert weights._resolve("vit_b", progress=False) == path
        assert weights.download("vit_b", progress=False) == path
    assert hashed == []  # a stat, not a 375 MB read, on every later load
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # touched
    assert weights._resolve("vit_b", progress=False) == path
    assert hashed == [path]  # verified again (the bytes are still right)
    assert weights._resolve("vit_b", progress=False) == path
    assert hashed == [path]
    # where the sidecar cannot be written (a read-only folder) loading still works
    monkeypatch.setattr(weights, "_record_path", lambda p: cache / "missing" / "record")
    assert weights._resolve("vit_b", progress=False) == path
    assert weights._resolve("vit_b", progress=False) == path
    assert len(hashed) == 3


def test_a_full_disk_is_reported_as_such_naming_the_folder(
    server, cache, monkeypatch, checkpoint_bytes
):
    entry = _point_registry(monkeypatch, server.url, checkpoint_bytes)
    # known before downloading: the free space is less than the file
    monkeypatch.setattr(weights.shutil, "disk_usage", lambda p: shutil_usage(free=1000))
    with pytest.raises(
        CheckpointError, match=f"the disk holding the checkpoint folder {cache} is full"
    ):
        weights.download("vit_b", progress=False)
    assert server.requests == []
    monkeypatch.undo()
    # found while writing: the real ENOSPC of a write to /dev/full
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (Linux) to fill a disk for real")
    cache = use_empty_cache(cache.parent, monkeypatch)
    entry = _point_registry(monkeypatch, server.url, checkpoint_bytes)
    real_mkstemp = tempfile.mkstemp

    def full_disk(**kwargs):
        fd, name = real_mkstemp(**kwargs)
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), name

    monkeypatch.setattr(weights.tempfile, "mkstemp", full_disk)
    with pytest.raises(CheckpointError) as info:
        weights.download("vit_b", progress=False)
    message = str(info.value)
    assert f"the disk holding the checkpoint folder {cache} is full" in message
    assert weights.ENV_DIR in message and "offline" not in message
    assert _leftovers(cache) == []
    assert entry.filename not in _leftovers(cache)


def shutil_usage(free: int):
    import shutil

    return shutil._ntuple_diskusage(10**12, 10**12 - free, free)


def test_a_read_only_cache_folder_is_reported_as_such_naming_it(
    server, cache, monkeypatch, checkpoint_bytes
):
    import errno

    _point_registry(monkeypatch, server.url, checkpoint_bytes)

    def read_only(**kwargs):
        raise OSError(errno.EROFS, "Read-only file system", kwargs.get("dir"))

    monkeypatch.setattr(weights.tempfile, "mkstemp", read_only)
    with pytest.raises(CheckpointError, match=f"the checkpoint folder {cache} is read-only"):
        weights.download("vit_b", progress=False)
    assert server.requests == []
    monkeypatch.undo()
    if os.geteuid() != 0:  # the real thing where permissions apply (not as root)
        cache = use_empty_cache(cache.parent / "ro", monkeypatch)
        _point_registry(monkeypatch, server.url, checkpoint_bytes)
        cache.mkdir(parents=True)
        cache.chmod(0o555)
        try:
            with pytest.raises(
                CheckpointError, match=f"the checkpoint folder {cache} is read-only"
            ):
                weights.download("vit_b", progress=False)
        finally:
            cache.chmod(0o755)
