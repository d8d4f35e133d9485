"""The ``sam-widget`` command: ``segment`` end to end with the weights-free engine, and ``demo``
started for real (JupyterLab on a loopback port, no browser), checked to serve the quick
start, then stopped."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam_widget import cli

REPO = Path(__file__).resolve().parent.parent


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A JPEG-free PNG: a red disk and a blue square on a noisy green background."""
    rng = np.random.default_rng(3)
    h, w = 200, 260
    yy, xx = np.mgrid[0:h, 0:w]
    disk = np.hypot(xx - 70, yy - 90) <= 40
    square = (xx >= 150) & (xx < 220) & (yy >= 60) & (yy < 130)
    image = np.stack([70 + 0 * xx, 130 + 0 * xx, 60 + 0 * xx], -1) + rng.normal(0, 10, (h, w, 3))
    image[disk] = (210, 50, 40)
    image[square] = (40, 50, 200)
    path = tmp_path_factory.mktemp("img") / "shapes.png"
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
    return path, disk, square


def read_mask(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)) > 127


def test_segment_a_point_writes_the_mask_and_says_what_it_did(photo, tmp_path, capsys):
    path, disk, _ = photo
    out = tmp_path / "out" / "disk.png"
    argv = ["segment", str(path), "--point", "70,90", "--model", "classic", "--out", str(out)]
    assert cli.main(argv) == 0
    mask = read_mask(out)
    assert mask.shape == disk.shape
    assert iou(mask, disk) >= 0.9
    printed = capsys.readouterr().out
    assert "engine    classic on cpu" in printed
    assert "1 point(s)" in printed
    assert str(out) in printed
    assert f"{int(mask.sum()):,} pixels" in printed


def test_segment_a_box_and_a_negative_point(photo, tmp_path, capsys):
    path, _, square = photo
    out = tmp_path / "square.png"
    argv = ["segment", str(path), "--box", "145,55,225,135", "--point", "70,90,0"]
    assert cli.main([*argv, "--model", "classic", "--out", str(out)]) == 0
    mask = read_mask(out)
    assert iou(mask, square) >= 0.9
    assert not mask[90, 70]
    assert "box 145,55,225,135" in capsys.readouterr().out


def test_segment_chooses_a_candidate(photo, tmp_path):
    path = photo[0]
    sizes = []
    for candidate in ("0", "2"):
        out = tmp_path / f"c{candidate}.png"
        argv = ["segment", str(path), "--point", "70,90", "--candidate", candidate]
        assert cli.main([*argv, "--model", "classic", "--out", str(out)]) == 0
        sizes.append(read_mask(out).sum())
    assert sizes[0] <= sizes[1]  # candidates go from fine to coarse


def test_segment_with_a_sam2_checkpoint_file(photo, tmp_path, capsys, monkeypatch,
                                             sam2_tiny_checkpoint):
    """--model sam2.1_hiera_tiny --checkpoint FILE loads the official file format through the
    real loader; the mask written is the one the Predictor gives for that model (which finds
    the image's encoding in the disk cache the command wrote: one encode, and the proof that
    the command's model has these weights)."""
    import sam_widget as sw
    from sam_widget.images import to_rgb

    model, checkpoint = sam2_tiny_checkpoint
    monkeypatch.setenv("SAM_WIDGET_DISK_CACHE", str(tmp_path / "cache"))
    path = photo[0]
    out = tmp_path / "sam2.png"
    argv = ["segment", str(path), "--point", "70,90", "--model", "sam2.1_hiera_tiny",
            "--checkpoint", str(checkpoint), "--device", "cpu", "--out", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "engine    sam2.1_hiera_tiny on cpu" in printed
    def not_again(*args):
        raise AssertionError("the image was encoded again: the disk cache missed")

    monkeypatch.setattr(model.image_encoder, "forward", not_again)
    predictor = sw.Predictor(model, device="cpu")
    predictor.set_image(to_rgb(path))
    prediction = predictor.predict(points=[(70, 90)], labels=[1])
    assert np.array_equal(read_mask(out), prediction.masks[prediction.best])
    assert f"candidate {prediction.best} of 3" in printed


def test_checkpoint_needs_a_model_name_and_the_help_lists_sam2(photo, tmp_path, capsys):
    from sam_widget.engines import SAM_VARIANTS

    assert cli.SAM_MODELS == SAM_VARIANTS  # the CLI's copy (kept torch-free) is the engines'
    argv = ["segment", str(photo[0]), "--point", "5,5", "--checkpoint", "x.pt",
            "--out", str(tmp_path / "m.png")]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert "--checkpoint needs --model naming its variant" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([*argv[:4], "--model", "sam2.1_hiera_huge", "--out", "m.png"])
    assert "invalid choice: 'sam2.1_hiera_huge'" in capsys.readouterr().err
    for command in ("segment", "demo", "precompute"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        shown = " ".join(capsys.readouterr().out.split())
        for name in SAM_VARIANTS:
            assert name in shown, (command, name)


def test_demo_model_is_what_the_notebooks_auto_means(tmp_path, capsys, monkeypatch):
    started = []

    class Lab:  # JupyterLab as the demo starts it, without starting it
        def __init__(self, command, env):
            started.append(env)

        def wait(self):
            return 0

    monkeypatch.setattr(cli.subprocess, "Popen", Lab)
    argv = ["demo", "--no-browser", "--dir", str(tmp_path), "--model", "sam2.1_hiera_tiny"]
    assert cli.main(argv) == 0
    assert started[0]["SAM_WIDGET_MODEL"] == "sam2.1_hiera_tiny"
    assert "model='sam2.1_hiera_tiny'" in capsys.readouterr().out
    monkeypatch.setenv("SAM_WIDGET_MODEL", "classic")  # auto leaves the user's choice alone
    assert cli.main(["demo", "--no-browser", "--dir", str(tmp_path)]) == 0
    assert started[1]["SAM_WIDGET_MODEL"] == "classic"


def test_the_console_script_runs_as_a_program(photo, tmp_path):
    path, disk, _ = photo
    out = tmp_path / "disk.png"
    run = subprocess.run(
        [sys.executable, "-m", "sam_widget.cli", "segment", str(path), "--point", "70,90",
         "--model", "classic", "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert run.returncode == 0, run.stderr
    assert iou(read_mask(out), disk) >= 0.9


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--point", "1;2"], "is not X,Y or X,Y,LABEL"),
        (["--point", "1,2,5"], "is not X,Y or X,Y,LABEL"),
        (["--box", "1,2,3"], "is not X0,Y0,X1,Y1"),
        ([], "needs at least one --point or a --box"),
    ],
)
def test_segment_usage_errors_exit_2_with_a_message(photo, tmp_path, capsys, extra, message):
    out = str(tmp_path / "m.png")
    argv = ["segment", str(photo[0]), *extra, "--model", "classic", "--out", out]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_segment_runtime_errors_exit_1_with_a_message(photo, tmp_path, capsys):
    argv = ["segment", str(photo[0]), "--point", "9999,10", "--model", "classic"]
    assert cli.main([*argv, "--out", str(tmp_path / "m.png")]) == 1
    assert "outside the 260x200 image" in capsys.readouterr().err
    missing = ["segment", str(tmp_path / "nope.png"), "--point", "1,1", "--model", "classic"]
    assert cli.main([*missing, "--out", str(tmp_path / "m.png")]) == 1
    assert "nope.png" in capsys.readouterr().err


def test_the_committed_quickstart_is_the_one_the_demo_writes():
    committed = json.loads((REPO / "notebooks" / cli.QUICKSTART).read_text())
    assert committed == cli.quickstart_notebook()
    assert all(not c.get("outputs") for c in committed["cells"])


def test_prepare_demo_dir_writes_a_quickstart_once(tmp_path):
    folder, what = cli.prepare_demo_dir(tmp_path / "demo")
    assert what.startswith("wrote ") and (folder / cli.QUICKSTART).is_file()
    (folder / cli.QUICKSTART).write_text("{}")  # a user's edits are never overwritten
    _, what = cli.prepare_demo_dir(tmp_path / "demo")
    assert what.startswith("using the existing")
    assert (folder / cli.QUICKSTART).read_text() == "{}"


def test_prepare_demo_dir_uses_the_checkouts_notebooks():
    folder, what = cli.prepare_demo_dir(None)
    assert folder == REPO / "notebooks"
    assert "source checkout" in what


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


@pytest.mark.parametrize("where", ["checkout", "wheel"])
def test_demo_serves_the_quickstart_and_stops(tmp_path, where):
    port = free_port()
    argv = [sys.executable, "-m", "sam_widget.cli", "demo", "--port", str(port), "--no-browser"]
    if where == "wheel":  # an installed package has no notebooks/: it writes its own copy
        argv += ["--dir", str(tmp_path / "demo")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env, cwd=tmp_path)
    log: list[str] = []
    try:
        url = None
        for line in process.stdout:  # our own announcement comes first
            log.append(line)
            match = re.search(r"(http://127\.0\.0\.1:\d+/lab/tree/\S+\?token=\w+)", line)
            if match:
                url = match.group(1)
                break
        assert url is not None, "".join(log)
        assert int(re.search(r":(\d+)/", url).group(1)) == port
        token = url.rsplit("token=", 1)[1]
        api = f"http://127.0.0.1:{port}/api/contents/quickstart.ipynb?token={token}"
        status, body = 0, b""
        for _ in range(600):  # JupyterLab takes a while to start on a busy machine
            if process.poll() is not None:
                break
            try:
                status, body = get(api)
                break
            except OSError:
                time.sleep(0.5)
        if process.poll() is not None:
            log.append(process.stdout.read())
        assert status == 200, "".join(log)
        served = json.loads(body)
        assert served["type"] == "notebook"
        assert served["content"]["cells"][1]["source"] == "".join(cli.QUICKSTART_CELLS[1][1])
        lab_status, page = get(url)
        assert lab_status == 200 and b"JupyterLab" in page
        # without the token nothing is served
        assert get(f"http://127.0.0.1:{port}/api/contents/quickstart.ipynb")[0] == 403
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            rest = process.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            process.kill()
            rest = process.communicate()[0]
    assert process.returncode == 0, "".join(log) + rest
    with pytest.raises(ConnectionRefusedError):  # JupyterLab stopped with the command
        socket.create_connection(("127.0.0.1", port), timeout=10).close()


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (
            KeyError("mask_decoder.x"),
            "KeyError: 'mask_decoder.x' (unexpected; set SAM_WIDGET_DEBUG",
        ),
        (
            RuntimeError("no weights.\nTo get them, download\n    https://x/y.pth\nand retry"),
            "error: no weights. To get them, download https://x/y.pth and retry",
        ),
        (MemoryError(), "error: MemoryError (unexpected"),
    ],
)
def test_errors_are_one_line_never_a_traceback(photo, tmp_path, capsys, monkeypatch, error, shown):
    import sam_widget.engines

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(sam_widget.engines, "resolve_engine", fail)
    argv = ["segment", str(photo[0]), "--point", "5,5", "--out", str(tmp_path / "m.png")]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("sam-widget segment: ") and shown in err
    monkeypatch.setenv(cli.DEBUG_ENV, "1")  # the traceback, for whoever debugs it
    with pytest.raises(type(error)):
        cli.main(argv)


def test_ctrl_c_is_one_line_and_exit_130(photo, tmp_path, capsys, monkeypatch):
    import sam_widget.engines

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sam_widget.engines, "resolve_engine", interrupted)
    argv = ["segment", str(photo[0]), "--point", "5,5", "--out", str(tmp_path / "m.png")]
    assert cli.main(argv) == 130
    assert capsys.readouterr().err == "sam-widget segment: interrupted\n"


@pytest.mark.parametrize("port", ["70000", "-1", "http", "1e3"])
def test_demo_port_out_of_range_is_a_usage_error(tmp_path, capsys, port):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["demo", "--port", port, "--no-browser", "--dir", str(tmp_path)])
    assert exit_.value.code == 2
    assert f"{port!r} is not a port: use a number from 1 to 65535" in capsys.readouterr().err


def test_demo_port_in_use_is_refused_before_jupyterlab_starts(tmp_path, capsys, monkeypatch):
    started = []
    monkeypatch.setattr(cli.subprocess, "Popen", lambda *a, **k: started.append(a))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = cli.main(["demo", "--port", str(port), "--no-browser", "--dir", str(tmp_path)])
    assert code == 1 and started == []
    err = capsys.readouterr().err
    assert err == (
        f"sam-widget demo: error: port {port} on 127.0.0.1 is in use (another "
        "JupyterLab?); pick another, or leave out --port for a free one\n"
    )
