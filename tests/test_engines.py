"""`resolve_engine`: which engine answers for each kind of ``model=`` argument.

The "auto" tests run with an empty checkpoint folder and with the weights' URL pointed at
loopback: a refused port (offline) or a tiny HTTP server the test starts (online), so no
test ever touches the real network or needs real weights.
"""

from __future__ import annotations

import dataclasses
import http.server
import socket
import threading
import warnings

import numpy as np
import pytest

from sam_widget import engines, weights
from sam_widget.classic import ClassicPredictor
from sam_widget.engines import EngineFallbackWarning, auto_choice, resolve_engine
from sam_widget.predictor import Engine


def refused_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def no_override(monkeypatch):
    monkeypatch.delenv("SAM_WIDGET_MODEL", raising=False)


AUTO = "sam2.1_hiera_small"  # what "auto" downloads on a machine without CUDA


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """An empty checkpoint folder and torch hub, every URL on a refused loopback port; returns
    the URL of what "auto" would download here."""
    monkeypatch.setenv(weights.ENV_DIR, str(tmp_path / "checkpoints"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    port = refused_port()
    for variant, entry in list(weights.REGISTRY.items()):
        url = f"http://127.0.0.1:{port}/{entry.filename}"
        monkeypatch.setitem(weights.REGISTRY, variant, dataclasses.replace(entry, url=url))
    monkeypatch.setattr(engines, "_warned", False)  # the fallback warning is said once a process
    return weights.REGISTRY[AUTO].url


@pytest.fixture
def weights_server(no_weights, monkeypatch):
    """A loopback HTTP server that answers HEAD for every checkpoint URL (as if online)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 (http.server's naming)
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for variant, entry in list(weights.REGISTRY.items()):
        url = f"http://127.0.0.1:{server.server_address[1]}/{entry.filename}"
        monkeypatch.setitem(weights.REGISTRY, variant, dataclasses.replace(entry, url=url))
    yield weights.REGISTRY[AUTO].url
    server.shutdown()
    server.server_close()


def test_auto_without_weights_or_network_falls_back_to_classic_and_says_how_to_get_sam(
    no_weights,
):
    assert auto_choice() == "classic"
    with pytest.warns(EngineFallbackWarning) as record:
        engine = resolve_engine("auto")
    assert isinstance(engine, ClassicPredictor)
    message = str(record[0].message)
    assert "weights-free 'classic' engine" in message
    assert no_weights in message  # where to download the weights from
    assert weights.ENV_DIR in message  # where to put them
    assert f"download('{AUTO}')" in message
    # it points at the caller's code (a notebook: the user's cell), not at a library line
    assert record[0].filename == __file__
    # the widget shows it too, inside itself (Voila and `marimo run` hide warnings)
    assert "weights-free classic engine" in engine.fallback_notice


def test_the_fallback_warning_is_said_once(no_weights):
    with pytest.warns(EngineFallbackWarning):
        resolve_engine("auto")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine = resolve_engine("auto")  # no second warning...
    assert engine.fallback_notice  # ...but every widget still gets its notice


def test_the_default_model_is_auto(no_weights):
    with pytest.warns(EngineFallbackWarning):
        assert isinstance(resolve_engine(), ClassicPredictor)


def test_auto_downloads_sam2_small_for_the_cpu_and_large_for_cuda(weights_server):
    assert auto_choice(device="cpu") == "sam2.1_hiera_small"
    assert auto_choice(device="cuda") == "sam2.1_hiera_large"


def test_auto_picks_sam_when_the_weights_are_cached_without_asking_the_network(
    no_weights, tmp_path
):
    entry = weights.REGISTRY["vit_b"]
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    with open(folder / entry.filename, "wb") as f:  # a sparse file of the official size
        f.truncate(entry.size)
    assert auto_choice() == "vit_b"  # the URL is a refused port: the file decided it


def test_auto_keeps_a_cached_sam_checkpoint_rather_than_downloading_sam2(weights_server, tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    with open(folder / weights.REGISTRY["mobile_sam"].filename, "wb") as f:
        f.truncate(weights.REGISTRY["mobile_sam"].size)
    assert auto_choice(device="cpu") == "mobile_sam"  # downloadable, yet not downloaded
    (folder / weights.REGISTRY["sam2.1_hiera_tiny"].filename).write_bytes(b"x")
    assert auto_choice(device="cpu") == "sam2.1_hiera_tiny"  # a cached SAM 2.1 comes first
    (folder / weights.REGISTRY["sam2.1_hiera_large"].filename).write_bytes(b"x")
    assert auto_choice(device="cpu") == "sam2.1_hiera_tiny"  # the smaller one on the CPU
    assert auto_choice(device="cuda") == "sam2.1_hiera_large"  # the larger one on CUDA


def test_classic_by_name():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asking for classic is not a fallback: no warning
        engine = resolve_engine("classic")
    assert isinstance(engine, ClassicPredictor)
    assert engine.name == "classic" and engine.device == "cpu"
    assert isinstance(resolve_engine(" Classic ", device="cpu"), ClassicPredictor)


def test_classic_refuses_a_gpu():
    with pytest.raises(ValueError, match="CPU only"):
        resolve_engine("classic", device="cuda")


def test_an_existing_engine_is_returned_as_is():
    engine = ClassicPredictor(working_size=128)
    assert resolve_engine(engine) is engine


def test_a_named_variant_without_weights_says_how_to_get_them(no_weights):
    with pytest.raises(weights.CheckpointError) as err:
        resolve_engine("vit_b")
    assert weights.REGISTRY["vit_b"].url in str(err.value)


def test_a_loaded_model_becomes_a_predictor():
    from sam_widget.models import build_sam

    sam = build_sam("vit_b").eval()
    engine = resolve_engine(sam, device="cpu")
    assert isinstance(engine, Engine)
    assert engine.name == "vit_b"
    engine.set_image(np.zeros((64, 96, 3), dtype=np.uint8))
    assert engine.predict(points=[(10, 10)], labels=[1]).masks.shape == (3, 64, 96)


@pytest.mark.parametrize("model", ["vit_x", "sam", ""])
def test_unknown_names_list_the_choices(model):
    with pytest.raises(ValueError, match="'auto', 'classic'"):
        resolve_engine(model)


@pytest.mark.parametrize("model", [None, 3, np.zeros(3)])
def test_other_objects_are_a_type_error(model):
    with pytest.raises(TypeError, match="model must be"):
        resolve_engine(model)


def test_the_environment_can_pin_what_auto_means(weights_server, monkeypatch):
    monkeypatch.setenv("SAM_WIDGET_MODEL", "classic")  # e.g. CI: never download
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(resolve_engine("auto"), ClassicPredictor)
    monkeypatch.setenv("SAM_WIDGET_MODEL", "vit_q")
    with pytest.raises(ValueError, match=r"'vit_q' \(from \$SAM_WIDGET_MODEL\)"):
        resolve_engine()
    # an explicit model is not overridden
    with pytest.raises(weights.CheckpointError):
        resolve_engine("vit_b")


def test_the_widget_shows_the_fallback_as_a_notice_and_warns_at_the_users_line(no_weights):
    import numpy as np

    from sam_widget.widget import SamWidget

    with pytest.warns(EngineFallbackWarning) as record:
        w = SamWidget(np.zeros((32, 48, 3), np.uint8))  # model="auto"
    try:
        assert record[0].filename == __file__  # this line, not a library file
        assert "weights-free classic engine" in w.notice and no_weights in w.notice
        w.wait()
        assert "warning" not in w.message  # Voila and `marimo run` hide warnings
        w._msg_callbacks(w, {"type": "dismiss", "client": "t", "seq": 1, "rev": w.prompt_rev}, [])
        assert w.notice == ""
    finally:
        w.close()
