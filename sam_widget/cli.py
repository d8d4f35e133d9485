"""The ``sam-widget`` command: ``demo`` opens JupyterLab on the quick start, ``segment`` is SAM
(or the weights-free engine) for scripts.

    sam-widget demo [--port N] [--no-browser] [--dir DIR] [--model auto]
    sam-widget segment IMAGE --point X,Y[,LABEL] ... [--box X0,Y0,X1,Y1] [--model auto]
                       [--checkpoint FILE] --out mask.png
    sam-widget precompute FOLDER --store URL [--model vit_b] [--engine local|ray]
                          [--everything] [--dtype float32|float16]

``--model`` takes the names of ``sam_widget.engines``: auto, classic, the SAM variants (vit_b,
vit_l, vit_h, mobile_sam) and the SAM 2.1 ones (sam2.1_hiera_tiny, _small, _base_plus, _large).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

QUICKSTART = "quickstart.ipynb"
SAM_MODELS = (
    "vit_b", "vit_l", "vit_h", "mobile_sam",
    "sam2.1_hiera_tiny", "sam2.1_hiera_small", "sam2.1_hiera_base_plus", "sam2.1_hiera_large",
)  # sam_widget.engines.SAM_VARIANTS (not imported here: --help stays fast, torch-free)
MODEL_NAMES = ("auto", "classic", *SAM_MODELS)
AUTO_HELP = (
    "auto: a cached SAM 2.1, else a cached SAM, else SAM 2.1 small (CPU) / large (CUDA) "
    "downloaded, else classic"
)

# The quick start's cells: notebooks/quickstart.ipynb holds the same cells (a test checks),
# so an installed wheel, which does not ship notebooks/, can write its own copy.
QUICKSTART_CELLS: list[tuple[str, str]] = [
    (
        "markdown",
        "# sam-widget quick start\n"
        "\n"
        "Click on the photo to segment what is under the pointer: left click adds a "
        "foreground point, right click (or shift-click) a background point, dragging draws a "
        "box. The three tabs are SAM's three guesses, from a part to the whole; keep one with "
        "**Add object**. The status line says which model is answering: without SAM's weights "
        "it is the weights-free `classic` engine (see the warning for how to get SAM).",
    ),
    (
        "code",
        "import sam_widget as sw\n"
        "from matplotlib import cbook\n"
        "\n"
        'photo = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)  # a sample photo\n'
        'w = sw.SamWidget(photo)  # SAM 2.1 or SAM if weights are at hand, else "classic"\n'
        "w",
    ),
    (
        "markdown",
        "Everything you click is in Python: `w.points`, `w.box`, `w.masks` (candidates, "
        "`bool` arrays of the photo's size), `w.mask` (the selected one), `w.objects` and "
        "`w.to_coco()`.",
    ),
    ("code", "w.status, w.points, w.scores"),
    (
        "markdown",
        "## Choosing the model\n"
        "\n"
        "`model=` takes a name: SAM 2.1 (`\"sam2.1_hiera_tiny\"`, `\"sam2.1_hiera_small\"`, "
        "`\"sam2.1_hiera_base_plus\"`, `\"sam2.1_hiera_large\"`: more accurate than SAM and "
        "faster, tiny the fastest), SAM (`\"vit_b\"`, `\"vit_l\"`, `\"vit_h\"`, "
        "`\"mobile_sam\"`), `\"classic\"` (no weights), or a loaded model "
        "(`sw.load_model(name, checkpoint=...)`) or `sw.Predictor`. A name's checkpoint is "
        "downloaded once, the first time it is used:\n"
        "\n"
        "```python\n"
        "w = sw.SamWidget(photo, model=\"sam2.1_hiera_tiny\")\n"
        "```\n"
        "\n"
        "The checkpoints already on this machine:",
    ),
    (
        "code",
        "{name: str(sw.weights.find_checkpoint(name) or \"not downloaded\")\n"
        " for name in sw.weights.VARIANTS}",
    ),
    (
        "markdown",
        "## A folder of images\n"
        "\n"
        "`sw.SamWidget(folder_or_list, labels=[...])` annotates a whole collection: **◀ / ▶**"
        " (or the keys `p` / `n`, PageUp / PageDown) move between images, the position box "
        "jumps (type a number, Enter), the label picker (or shift+1…9) chooses the label the "
        "next **Add object** gets. Each image keeps its own objects and prompts; the next "
        "image is encoded in the background while you work, so moving on needs no wait. Here:"
        " the three sample pictures that ship with matplotlib.",
    ),
    (
        "code",
        "from pathlib import Path\n"
        "\n"
        "samples = Path(photo).parent\n"
        "photos = sw.Dataset([samples / name for name in\n"
        "                     (\"grace_hopper.jpg\", \"Minduka_Present_Blue_Pack.png\", "
        "\"logo2.png\")])\n"
        "ws = sw.SamWidget(photos, labels=[\"person\", \"thing\"])\n"
        "ws",
    ),
    (
        "markdown",
        "Everything is in Python: `ws.index`, `ws.next()`, `ws.goto(2)`, `ws.annotations` "
        "(every image's objects, each with its `\"label\"`), `ws.to_coco()` (the whole "
        "dataset). `ws.save(folder)` writes COCO json, YOLO-seg (`labels/*.txt`, "
        "`data.yaml`), label PNGs and the prompt log; `sw.SamWidget(photos, "
        "annotations=folder)` picks up where you left off.",
    ),
    (
        "code",
        "ws.add_point(270, 180)            # the same as a click, from code\n"
        "ws.commit(label=\"person\")\n"
        "ws.next()\n"
        "import tempfile\n"
        "\n"
        "out = ws.save(Path(tempfile.mkdtemp()) / \"annotations\")\n"
        "resumed = sw.SamWidget(photos, annotations=out)\n"
        "{i: [o[\"label\"] for o in objs] for i, objs in resumed.annotations.items()}",
    ),
]


def quickstart_notebook() -> dict:
    """The quick-start notebook as nbformat-4 JSON (no outputs)."""
    cells = []
    for i, (kind, source) in enumerate(QUICKSTART_CELLS):
        lines = source.splitlines(keepends=True)  # as Jupyter saves it: one string per line
        cell: dict = {"cell_type": kind, "id": f"quickstart-{i}", "metadata": {}, "source": lines}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        cells.append(cell)
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def find_notebooks_dir() -> Path | None:
    """``notebooks/`` of a source checkout holding this package, or None (a wheel install)."""
    folder = Path(__file__).resolve().parent.parent / "notebooks"
    return folder if (folder / QUICKSTART).is_file() else None


def prepare_demo_dir(directory: Path | None) -> tuple[Path, str]:
    """The folder JupyterLab serves and what happened to the quick start, as a sentence.

    ``directory`` None means the checkout's ``notebooks/`` or, for an installed package,
    ``./sam-widget-demo``. A quick start is written there only if none exists (never
    overwriting a user's edits).
    """
    if directory is None:
        found = find_notebooks_dir()
        if found is not None:
            return found, f"using {found / QUICKSTART} from the source checkout"
        directory = Path.cwd() / "sam-widget-demo"
    directory = directory.expanduser().resolve()
    target = directory / QUICKSTART
    if target.exists():
        return directory, f"using the existing {target}"
    directory.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(quickstart_notebook(), indent=1) + "\n", encoding="utf-8")
    return directory, f"wrote {target}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a port: use a number from 1 to 65535 (or 0 for a free one)"
        )
    return port


def _check_port_free(port: int) -> None:
    """Refuse a port JupyterLab could not listen on, before starting it."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except PermissionError:
            raise OSError(
                f"not allowed to listen on port {port} (ports below 1024 need root); pick a "
                "port from 1024 up, or leave out --port"
            ) from None
        except OSError:
            raise OSError(
                f"port {port} on 127.0.0.1 is in use (another JupyterLab?); pick another, or "
                "leave out --port for a free one"
            ) from None


def demo_command(port: int, root: Path, token: str, open_browser: bool) -> list[str]:
    """The JupyterLab command line that serves ``root`` on loopback and opens the quick start."""
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={token}",
    ]
    if not open_browser:
        command.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers, Colab-like machines
        command.append("--allow-root")
    command.append(str(root / QUICKSTART))  # the file JupyterLab opens (a path, not a URL)
    return command


def demo_env(model: str = "auto") -> dict[str, str]:
    """The environment of the demo's JupyterLab (and so of its kernels): a checkout's package
    importable, and ``model`` as what the notebooks' ``model="auto"`` means
    (``$SAM_WIDGET_MODEL``, see ``sam_widget.engines``)."""
    env = dict(os.environ)
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file():  # a checkout: let the kernel import it too
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(checkout), env.get("PYTHONPATH")]))
    if model != "auto":
        env["SAM_WIDGET_MODEL"] = model
    return env


def run_demo(args: argparse.Namespace) -> int:
    if args.port:
        _check_port_free(args.port)
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        print(
            "sam-widget demo needs JupyterLab: pip install jupyterlab (then run it again)",
            file=sys.stderr,
        )
        return 1
    root, what = prepare_demo_dir(args.dir)
    port = args.port or _free_port()
    token = secrets.token_hex(16)
    print(f"sam-widget demo: {what}", flush=True)
    print(
        f"sam-widget demo: JupyterLab at http://127.0.0.1:{port}/lab/tree/{QUICKSTART}"
        f"?token={token}  (Ctrl-C stops it)",
        flush=True,
    )
    if args.model != "auto":
        print(f"sam-widget demo: model={args.model!r} for the notebooks' model='auto'", flush=True)
    env = demo_env(args.model)
    process = subprocess.Popen(demo_command(port, root, token, not args.no_browser), env=env)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- segment ---------------------------------------------------------------------------------


def _point(text: str) -> tuple[float, float, int]:
    parts = text.split(",")
    try:
        if len(parts) == 2:
            return float(parts[0]), float(parts[1]), 1
        if len(parts) == 3 and parts[2].strip() in ("0", "1"):
            return float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(
        f"{text!r} is not X,Y or X,Y,LABEL (pixels; LABEL 1 foreground, 0 background)"
    )


def _box(text: str) -> tuple[float, float, float, float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not X0,Y0,X1,Y1 (pixels)") from None
    return x0, y0, x1, y1


def run_segment(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from .engines import resolve_engine
    from .images import to_rgb

    if not args.point and args.box is None:
        args.parser.error("segment needs at least one --point or a --box")
    if args.checkpoint is not None and args.model not in SAM_MODELS:
        args.parser.error(
            f"--checkpoint needs --model naming its variant (one of {', '.join(SAM_MODELS)}), "
            f"not {args.model!r}"
        )
    started = time.perf_counter()
    image = to_rgb(args.image)
    model = args.model
    if args.checkpoint is not None:  # the real loader: strict keys, video-only keys set aside
        from .weights import load_model

        model = load_model(args.model, checkpoint=args.checkpoint, device=args.device)
    engine = resolve_engine(model, device=args.device)
    engine.set_image(image)
    encoded = time.perf_counter()
    points = [(x, y) for x, y, _ in args.point] or None
    labels = [label for _, _, label in args.point] or None
    prediction = engine.predict(points=points, labels=labels, box=args.box, multimask=True)
    index = prediction.best if args.candidate == "best" else int(args.candidate)
    mask = prediction.masks[index]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(out)
    done = time.perf_counter()

    h, w = mask.shape
    prompts = [f"{len(args.point)} point(s)"] if args.point else []
    if args.box is not None:
        prompts.append("box " + ",".join(f"{v:g}" for v in args.box))
    scores = ", ".join(f"{s:.2f}" for s in np.asarray(prediction.scores).ravel())
    print(f"image     {args.image} ({w}x{h})")
    print(f"engine    {engine.name} on {engine.device}")
    print(f"prompts   {' + '.join(prompts)}")
    print(f"candidate {index} of {len(prediction.scores)} (scores {scores})")
    print(f"mask      {int(mask.sum()):,} pixels ({mask.mean():.1%} of the image) -> {out}")
    print(f"time      {encoded - started:.2f} s image, {done - encoded:.2f} s prompt")
    return 0


# -- precompute ------------------------------------------------------------------------------


def run_precompute(args: argparse.Namespace) -> int:
    from .precomputing import precompute
    from .weights import load_model

    started = time.perf_counter()
    model = load_model(args.model, checkpoint=args.checkpoint, device="cpu")
    dataset = precompute(
        args.images,
        args.store,
        model=model,
        engine=args.engine,
        everything=args.everything,
        dtype=args.dtype,
        device=args.device,
        workers=args.workers,
        progress=True,
    )
    store = dataset.source.store
    seconds = time.perf_counter() - started
    print(f"store     {store.url} ({store.info['model']}, {store.info['dtype']})")
    print(f"images    {len(dataset)} stored, {seconds:.1f} s")
    proposals = ", proposals=True" if args.everything else ""  # stored masks pre-filled
    print(f"open it   sw.SamWidget(sw.Dataset({store.url!r}), model=...{proposals})")
    return 0


# -- entry point ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="sam-widget",
        description="Segment Anything in notebooks: an interactive demo and commands for scripts.",
    )
    parser.add_argument("--version", action="version", version=f"sam-widget {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="open JupyterLab on the quick-start notebook")
    demo.add_argument(
        "--port", type=_port, default=0, help="port on 127.0.0.1, 1-65535 (default: a free one)"
    )
    demo.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    demo.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="folder to serve; a quick start is written there if it has none "
        "(default: notebooks/ of a source checkout, else ./sam-widget-demo)",
    )
    demo.add_argument(
        "--model",
        choices=MODEL_NAMES,
        default="auto",
        metavar="MODEL",
        help="what the notebooks' model='auto' uses: " + ", ".join(MODEL_NAMES[1:])
        + f" ({AUTO_HELP}; default: auto)",
    )
    demo.set_defaults(run=run_demo)

    seg = commands.add_parser(
        "segment",
        help="segment an image from points and/or a box and save the mask as a PNG",
        description="Segment IMAGE from prompts and write the chosen mask as a black and white "
        "PNG of the image's size.",
    )
    seg.add_argument("image", help="image file (any format Pillow reads)")
    seg.add_argument(
        "--point",
        type=_point,
        action="append",
        default=[],
        metavar="X,Y[,LABEL]",
        help="a prompt point in pixels; LABEL 1 = foreground (default), 0 = background; repeat",
    )
    seg.add_argument("--box", type=_box, metavar="X0,Y0,X1,Y1", help="a prompt box in pixels")
    seg.add_argument(
        "--model",
        choices=MODEL_NAMES,
        default="auto",
        metavar="MODEL",
        help=", ".join(MODEL_NAMES[1:]) + f" or auto ({AUTO_HELP}; default: auto)",
    )
    seg.add_argument(
        "--checkpoint",
        default=None,
        metavar="FILE",
        help="a checkpoint file for --model (e.g. the official sam2.1_hiera_tiny.pt; "
        "default: the cache, else a download)",
    )
    seg.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best one)")
    seg.add_argument(
        "--candidate",
        choices=["best", "0", "1", "2"],
        default="best",
        help="which of the three candidates (fine to coarse) to save (default: best score)",
    )
    seg.add_argument("--out", required=True, help="where to write the mask PNG")
    seg.set_defaults(run=run_segment, parser=seg)

    pre = commands.add_parser(
        "precompute",
        help="encode a folder of images into an embedding store the widget opens instantly",
        description="Encode every image of IMAGES (a folder or a glob) that the store does not "
        "hold yet. Re-running after an interruption encodes only what is missing.",
    )
    pre.add_argument("images", help="a folder of images, or a glob pattern such as 'a/*.jpg'")
    pre.add_argument(
        "--store", required=True, help="where: a folder (e.g. emb.zarr) or an fsspec URL"
    )
    pre.add_argument(
        "--model",
        choices=SAM_MODELS,
        default="vit_b",
        metavar="MODEL",
        help=", ".join(SAM_MODELS) + " (default: vit_b)",
    )
    pre.add_argument("--checkpoint", default=None, help="a checkpoint file for --model")
    pre.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this process; ray: a Ray cluster ($RAY_ADDRESS) or a local one, "
        "one model per GPU (pip install sam-widget[ray])",
    )
    pre.add_argument("--workers", type=int, default=None, help="Ray actors (default: one per GPU)")
    pre.add_argument(
        "--everything", action="store_true", help="also store automatic masks (COCO RLE)"
    )
    pre.add_argument(
        "--dtype",
        choices=["float32", "float16"],
        default="float32",
        help="storage precision (float16: half the bytes, see the README)",
    )
    pre.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best one)")
    pre.set_defaults(run=run_precompute, parser=pre)
    return parser


DEBUG_ENV = "SAM_WIDGET_DEBUG"  # set to 1 to see the traceback of an error


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())  # messages with steps on several lines, on one
    if not isinstance(err, (ValueError, OSError, RuntimeError)):  # not one of our messages
        text = f"{type(err).__name__}: {text}" if text else type(err).__name__
        text += f" (unexpected; set {DEBUG_ENV}=1 to see where it came from)"
    return text or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sam-widget`` command with ``argv`` (default: ``sys.argv[1:]``).

    Every error is one line on stderr, ``sam-widget COMMAND: error: ...``, with exit status 1
    (2 for usage errors, 130 for Ctrl-C); ``SAM_WIDGET_DEBUG=1`` shows the traceback instead.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(f"sam-widget {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # bad image, prompts, weights, or a bug: one line, no traceback
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        print(f"sam-widget {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
