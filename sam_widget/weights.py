"""Official SAM / MobileSAM / SAM 2.1 checkpoints: where they come from, where they live, how
they load.

This module is the only place that touches checkpoint files. It knows each official file's URL,
byte size and checksums (``REGISTRY``), finds a copy on disk without touching the network
(``find_checkpoint``), downloads one safely (``download``: temporary file beside the target,
size + SHA-256 + MD5-prefix check, atomic rename), and loads it into our own ``Sam`` modules
(``load_model``) with ``torch.load(..., map_location="cpu", weights_only=True)``. A SAM 2.1
file is the official ``{"model": state_dict}``; its video-only entries
(``sam_widget.models.sam2.VIDEO_ONLY_KEYS``) are the only ones set aside, everything else loads
strictly.

Safety: a ``.pth`` file is a pickle, and a pickle can run code. Before torch sees a file we walk
its pickle opcodes (``scan_pickle``) and refuse anything that imports more than the handful of
globals a plain state dict needs. That holds even where ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` is
set (torch 2.14 honours our explicit ``weights_only=True`` over that variable, but older
releases did not always, and the scan does not depend on which torch is installed).

Resolution order of ``load_model(variant)``: an explicit ``checkpoint`` path; the directory named
by ``$SAM_WIDGET_CHECKPOINT_DIR``; torch hub's cache (``torch.hub.get_dir()/checkpoints``); else
download into the first of those two directories.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from .pickle_scan import scan_pickle
from .state_dicts import describe_state_dict, expected_description, identify_state_dict

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "REGISTRY",
    "VARIANTS",
    "ENV_DIR",
    "can_download",
    "cache_dir",
    "describe_state_dict",
    "download",
    "find_checkpoint",
    "identify_state_dict",
    "load_model",
    "load_state_dict",
    "scan_pickle",
    "verify_cached",
    "verify_file",
]

ENV_DIR = "SAM_WIDGET_CHECKPOINT_DIR"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, unsafe or for another model; the message says why
    and what to do about it."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One downloadable checkpoint file."""

    variant: str  # "vit_b" | "vit_l" | "vit_h" | "mobile_sam" | "sam2.1_hiera_*"
    filename: str  # the file's name on disk (the official name)
    url: str  # where to download it
    size: int | None  # exact byte size, None where no public source establishes it
    sha256: str | None  # full SHA-256 (hex), None where no public source establishes it
    md5_prefix: str | None = None  # leading hex digits of the MD5 (the official SAM file names)
    homepage: str = "https://github.com/facebookresearch/segment-anything#model-checkpoints"


# Where each number comes from (all checked against several public repositories that pin the
# same files, found with code search on 2026-11-25; the values agree across all of them):
# - URLs: segment-anything README "Model Checkpoints"; MobileSAM README / weights/mobile_sam.pt
#   at commit f706ad9c4eb7f219c00d9050e46328518ffb65d2 (a pinned commit, so the bytes cannot move).
# - MD5 prefixes: the six hex characters in each official SAM file name (MobileSAM's name has
#   none).
# - SHA-256 + sizes: vit_b 375042383 / ec2df627... (e.g. the QGIS "ai segmentation" plugin,
#   micro-sam's pooch registry, several Docker/CI manifests); vit_l 1249524607 / 3adcc431...
#   (micro-sam registry, 3D Slicer SAM extension checksum, Fooocus model manifests); vit_h
#   2564550879 / a7bf3b02... (the PyTorch tutorials' download script pins the SHA-256;
#   micro-sam, Fooocus manifests pin size and hash); mobile_sam 40728226 / 6dbb9052...
#   (micro-sam "vit_t", several manifests citing the pinned MobileSAM commit).
_FAIR = "https://dl.fbaipublicfiles.com/segment_anything/"
_MOBILESAM_COMMIT = "f706ad9c4eb7f219c00d9050e46328518ffb65d2"
REGISTRY: dict[str, Checkpoint] = {
    "vit_b": Checkpoint(
        variant="vit_b",
        filename="sam_vit_b_01ec64.pth",
        url=_FAIR + "sam_vit_b_01ec64.pth",
        size=375_042_383,
        sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        md5_prefix="01ec64",
    ),
    "vit_l": Checkpoint(
        variant="vit_l",
        filename="sam_vit_l_0b3195.pth",
        url=_FAIR + "sam_vit_l_0b3195.pth",
        size=1_249_524_607,
        sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        md5_prefix="0b3195",
    ),
    "vit_h": Checkpoint(
        variant="vit_h",
        filename="sam_vit_h_4b8939.pth",
        url=_FAIR + "sam_vit_h_4b8939.pth",
        size=2_564_550_879,
        sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        md5_prefix="4b8939",
    ),
    "mobile_sam": Checkpoint(
        variant="mobile_sam",
        filename="mobile_sam.pt",
        url=(
            "https://github.com/ChaoningZhang/MobileSAM/raw/"
            f"{_MOBILESAM_COMMIT}/weights/mobile_sam.pt"
        ),
        size=40_728_226,
        sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
        md5_prefix=None,
        homepage="https://github.com/ChaoningZhang/MobileSAM",
    ),
}
# SAM 2.1 (facebookresearch/sam2 README "Download Checkpoints", checkpoints/download_ckpts.sh:
# the 092824 release). Meta publishes no checksum for these files, and no public source we
# found pins their exact byte sizes (only rounded MB figures), so size and SHA-256 are None:
# a download is checked for being a complete, plain torch archive (``_scan_file``) and the
# loaded state dict for having exactly the model's keys and shapes (``load_model``).
_FAIR_SAM2 = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
for _name in ("tiny", "small", "base_plus", "large"):
    _variant = f"sam2.1_hiera_{_name}"
    REGISTRY[_variant] = Checkpoint(
        variant=_variant,
        filename=f"{_variant}.pt",
        url=f"{_FAIR_SAM2}{_variant}.pt",
        size=None,
        sha256=None,
        homepage="https://github.com/facebookresearch/sam2#download-checkpoints",
    )
del _name, _variant
VARIANTS = tuple(REGISTRY)
SAM2_VARIANTS = tuple(v for v in VARIANTS if v.startswith("sam2."))

# --------------------------------------------------------------------------------------------
# where checkpoints live


def _entry(variant: str) -> Checkpoint:
    try:
        return REGISTRY[variant]
    except KeyError:
        raise ValueError(
            f"unknown SAM variant {variant!r}; choose one of {', '.join(VARIANTS)}"
        ) from None


def _hub_dir() -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def cache_dir() -> Path:
    """The directory downloads go to: ``$SAM_WIDGET_CHECKPOINT_DIR`` if set, else torch hub's
    ``checkpoints`` directory (``~/.cache/torch/hub/checkpoints`` by default)."""
    env = os.environ.get(ENV_DIR)
    return Path(env).expanduser() if env else _hub_dir()


def _search_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get(ENV_DIR)
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(_hub_dir())
    return dirs


def _candidates(entry: Checkpoint) -> list[Path]:
    """The files named like ``entry`` in the search folders whose size is the official one."""
    found = []
    for directory in _search_dirs():
        path = directory / entry.filename
        if path.is_file() and (entry.size is None or path.stat().st_size == entry.size):
            found.append(path)
    return found


def find_checkpoint(variant: str) -> Path | None:
    """The checkpoint file for ``variant`` on this machine, or None; never uses the network.

    Looks in ``$SAM_WIDGET_CHECKPOINT_DIR`` and then in ``torch.hub.get_dir()/checkpoints``
    for the official file name. A file whose size differs from the official size (an
    interrupted copy) is skipped. Its bytes are checked when it is loaded (``verify_cached``).
    """
    found = _candidates(_entry(variant))
    return found[0] if found else None


def _manual_steps(entry: Checkpoint) -> str:
    target = cache_dir() / entry.filename
    return (
        f"To get the weights by hand, download\n    {entry.url}\n"
        f"(see {entry.homepage}) and either save it as\n    {target}\n"
        f"or put it in a folder named by the environment variable {ENV_DIR}, "
        f"or pass load_model({entry.variant!r}, checkpoint='path/to/{entry.filename}')."
    )


# --------------------------------------------------------------------------------------------
# download


def can_download(variant: str, timeout: float = 2.0) -> bool:
    """Whether ``variant``'s checkpoint URL answers within ``timeout`` seconds (a HEAD
    request; nothing is downloaded)."""
    entry = _entry(variant)
    headers = {"User-Agent": "sam-widget"}
    request = urllib.request.Request(entry.url, method="HEAD", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return 200 <= response.status < 300
    except urllib.error.HTTPError as e:
        if e.code not in (403, 405, 501):
            return False
    except (OSError, ValueError):  # URLError, timeouts, bad URL
        return False
    # some servers refuse HEAD: ask for the first byte instead (closed right away)
    request = urllib.request.Request(entry.url, headers={**headers, "Range": "bytes=0-0"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (OSError, ValueError):
        return False


def _hashes(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def _check_digests(entry: Checkpoint, size: int, sha256: str, md5: str, what: str) -> None:
    problems = []
    if entry.size is not None and size != entry.size:
        problems.append(f"it has {size:,} bytes where the official file has {entry.size:,}")
    if entry.sha256 is not None and sha256 != entry.sha256:
        problems.append(f"its SHA-256 is {sha256}, expected {entry.sha256}")
    if entry.md5_prefix is not None and not md5.startswith(entry.md5_prefix):
        problems.append(f"its MD5 is {md5}, expected one starting with {entry.md5_prefix}")
    if problems:
        raise CheckpointError(
            f"{what} is not the official {entry.filename}: {'; '.join(problems)}. "
            "The file is incomplete or corrupt (or the server sent something else); "
            "nothing was saved. Try again, or download it by hand.\n" + _manual_steps(entry)
        )


def verify_file(path: str | os.PathLike[str], variant: str) -> None:
    """Check a file's size, SHA-256 and MD5 prefix against the registry; raises
    ``CheckpointError`` if they differ. Reads the whole file."""
    entry = _entry(variant)
    path = Path(path)
    sha, md5 = _hashes(path)
    _check_digests(entry, path.stat().st_size, sha, md5, str(path))


def _record_path(path: Path) -> Path:
    """The sidecar that remembers a verified file: ``.<name>.verified`` beside it."""
    return path.with_name(f".{path.name}.verified")


def _stat_key(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _remember_verified(path: Path, entry: Checkpoint, key: dict[str, int]) -> None:
    """Write the sidecar (best effort: in a read-only folder the file is verified each time)."""
    record = _record_path(path)
    tmp = record.with_name(record.name + f".{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({**key, "sha256": entry.sha256}))
        os.replace(tmp, record)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass


def _is_remembered(path: Path, entry: Checkpoint, key: dict[str, int]) -> bool:
    try:
        record = json.loads(_record_path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record == {**key, "sha256": entry.sha256}


def verify_cached(path: str | os.PathLike[str], variant: str) -> None:
    """``verify_file``, remembered: once a file's size, SHA-256 and MD5 prefix matched, a
    sidecar ``.<name>.verified`` records its size, modification time and inode, and later calls
    cost one ``stat`` until any of those change (a rewrite, a copy, an edit)."""
    entry = _entry(variant)
    path = Path(path)
    if entry.sha256 is None and entry.md5_prefix is None and entry.size is None:
        return
    key = _stat_key(path)
    if _is_remembered(path, entry, key):
        return
    verify_file(path, variant)
    _remember_verified(path, entry, key)


def _move_aside(path: Path, problem: CheckpointError) -> Path:
    """Rename a cached file that failed verification (kept, for a look, never loaded) and
    say so; a folder we cannot write to is an error naming it."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        os.replace(path, aside)
    except OSError as e:
        raise CheckpointError(
            f"{path} is not the official file and cannot be moved aside ({e.strerror}: the "
            f"folder {path.parent} is not writable). Delete or replace it by hand.\n"
            + str(problem).split("\n", 1)[0]
        ) from None
    try:
        _record_path(path).unlink()
    except OSError:
        pass
    import warnings

    reason = str(problem).split(". The file", 1)[0]
    warnings.warn(
        f"{reason}. Its bytes are not the official ones (changed on disk, or a bad copy): it "
        f"was moved aside to {aside} and will not be loaded.",
        stacklevel=3,
    )
    return aside


def _folder_error(
    folder: Path, e: OSError, entry: Checkpoint, received: int = 0
) -> CheckpointError:
    """A write failure in the checkpoint folder, said as what it is: a full disk, a
    read-only folder, or another OS error, naming the folder."""
    code = getattr(e, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        need = f"{entry.size / 2**20:,.0f} MiB" if entry.size else "more"
        after = f" after {received:,} bytes" if received else ""
        return CheckpointError(
            f"the disk holding the checkpoint folder {folder} is full{after} "
            f"({entry.filename} needs {need}); nothing was saved. Free some space, or set "
            f"{ENV_DIR} to a folder on another disk."
        )
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return CheckpointError(
            f"the checkpoint folder {folder} is read-only ({e.strerror}); nothing was saved. "
            f"Set {ENV_DIR} to a writable folder, or download the file by hand.\n"
            + _manual_steps(entry)
        )
    return CheckpointError(
        f"cannot write to the checkpoint folder {folder}: {e}. Set {ENV_DIR} to a writable folder."
    )


def download(
    variant: str,
    *,
    directory: str | os.PathLike[str] | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    force: bool = False,
) -> Path:
    """Download ``variant``'s official checkpoint and return its path.

    The bytes go to a temporary file beside the target (so the final rename is atomic and an
    interrupted download never leaves a file under the official name); size, SHA-256 and MD5
    prefix are checked before the rename. ``directory`` defaults to ``cache_dir()``. An
    existing file of the right size is reused unless ``force``.
    """
    entry = _entry(variant)
    folder = Path(directory).expanduser() if directory is not None else cache_dir()
    target = folder / entry.filename
    if (
        not force
        and target.is_file()
        and (entry.size is None or target.stat().st_size == entry.size)
    ):
        try:
            verify_cached(target, variant)
            return target
        except CheckpointError as problem:
            _move_aside(target, problem)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if entry.size is not None and shutil.disk_usage(folder).free < entry.size:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.filename}.", suffix=".part", dir=folder)
    except OSError as e:
        raise _folder_error(folder, e, entry) from e
    tmp = Path(tmp_name)
    try:
        try:
            with os.fdopen(fd, "wb") as out:
                sha, md5, received = _fetch(
                    entry, out, progress=progress, timeout=timeout, folder=folder
                )
        except OSError as e:  # closing flushes the last bytes: the disk can fill up there too
            raise _folder_error(folder, e, entry) from e
        _check_digests(entry, received, sha, md5, f"the download from {entry.url}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _remember_verified(target, entry, _stat_key(target))  # just hashed while downloading
    return target


def _too_large(entry: Checkpoint, sent: str) -> CheckpointError:
    return CheckpointError(
        f"{entry.url} {sent}, more than the official {entry.filename} has ({entry.size:,} "
        "bytes); the download was stopped there and nothing was saved. That address no longer "
        "serves the official file.\n" + _manual_steps(entry)
    )


def _fetch(
    entry: Checkpoint, out: IO[bytes], *, progress: bool, timeout: float, folder: Path
) -> tuple[str, str, int]:
    """Stream ``entry.url`` into ``out``; returns (sha256, md5, bytes received). Stops as soon
    as more bytes than the registry's size arrive; write errors name ``folder``."""
    from tqdm.auto import tqdm

    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    received = 0
    request = urllib.request.Request(entry.url, headers={"User-Agent": "sam-widget"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and entry.size is not None and int(length) > entry.size:
                raise _too_large(entry, f"announces {int(length):,} bytes")
            total = int(length) if length and length.isdigit() else entry.size
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=entry.filename,
                disable=not progress,
            ) as bar:
                while True:
                    want = 1 << 20
                    if entry.size is not None:  # one byte past the size is enough to know
                        want = min(want, entry.size - received + 1)
                    chunk = response.read(want)
                    if not chunk:
                        break
                    if entry.size is not None and received + len(chunk) > entry.size:
                        raise _too_large(entry, f"sent over {entry.size:,} bytes")
                    try:
                        out.write(chunk)
                    except OSError as e:
                        raise _folder_error(folder, e, entry, received) from e
                    sha.update(chunk)
                    md5.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if length and length.isdigit() and received != int(length):
                raise CheckpointError(
                    f"the connection to {entry.url} closed after {received:,} of "
                    f"{int(length):,} bytes; nothing was saved. Try again.\n" + _manual_steps(entry)
                )
    except urllib.error.HTTPError as e:
        raise CheckpointError(
            f"the server answered {e.code} {e.reason} for {entry.url}.\n" + _manual_steps(entry)
        ) from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        partial = f" after {received:,} bytes" if received else ""
        raise CheckpointError(
            f"cannot download {entry.filename} from {entry.url}{partial}: {reason}. "
            "Is this machine offline or behind a firewall? Nothing was saved.\n"
            + _manual_steps(entry)
        ) from e
    except _http_incomplete() as e:
        raise CheckpointError(
            f"the connection to {entry.url} closed after {received:,} bytes; nothing was "
            "saved. Try again.\n" + _manual_steps(entry)
        ) from e
    return sha.hexdigest(), md5.hexdigest(), received


def _http_incomplete() -> type[Exception]:
    import http.client

    return http.client.HTTPException


# --------------------------------------------------------------------------------------------
# checkpoint files: every pickle inspected (`pickle_scan`) before torch.load sees the file


def _scan_file(path: Path) -> None:
    """Inspect every pickle in a checkpoint file (zip or legacy format) before loading it."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): an interrupted download? Delete it.")
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(0)
        if head.startswith(b"PK"):
            try:
                with zipfile.ZipFile(f) as archive:
                    # every entry separately (infolist, not names): an archive with two
                    # entries of one name must not hide one of them from the scan
                    pickles = [i for i in archive.infolist() if i.filename.endswith(".pkl")]
                    if not pickles:
                        raise CheckpointError(
                            f"{path} is a zip archive but not a torch checkpoint (no data.pkl)."
                        )
                    for info in pickles:
                        with archive.open(info) as member:
                            scan_pickle(member.read(), source=str(path))
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as e:
                raise CheckpointError(_truncated_message(path, size)) from e
        elif head[:1] == b"\x80":
            # legacy (pre-1.6) format: magic number, protocol, sys info, the data, storage keys
            for _ in range(5):
                scan_pickle(f, source=str(path))
        else:
            raise CheckpointError(
                f"{path} is not a PyTorch checkpoint (it starts with {head!r}). If you saved "
                "an HTML error page from a browser, download the file again."
            )


def _truncated_message(path: Path, size: int) -> str:
    hint = ""
    for entry in REGISTRY.values():
        if entry.filename == path.name and entry.size is not None and size != entry.size:
            hint = f" (it has {size:,} bytes; the official {entry.filename} has {entry.size:,})"
    return (
        f"{path} is truncated or corrupt{hint}: it is not a complete checkpoint archive. "
        "Delete it and download it again."
    )


# --------------------------------------------------------------------------------------------
# loading


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Safely read a checkpoint file into a state dict of CPU tensors.

    The pickle is inspected first (``scan_pickle``), then read with
    ``torch.load(path, map_location="cpu", weights_only=True)``. Tensors saved on a GPU come
    back on the CPU.
    """
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path}"
            + (" (it is a folder)" if path.is_dir() else "")
            + ". Check the path, or call load_model(variant) without a checkpoint to use the "
            f"cache ({cache_dir()}) and download the official weights."
        )
    _scan_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError / UnpicklingError / EOFError here
        raise CheckpointError(
            f"{path} could not be read as a checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); it is truncated or corrupt. "
            "Delete it and download it again."
        ) from None
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"{path} holds a {type(state).__name__}, not a state dict (a mapping of names to "
            "tensors)."
        )
    return dict(state)


def _resolve(variant: str, progress: bool) -> Path:
    """A verified cached copy (one whose bytes changed is moved aside), else a download."""
    for path in _candidates(_entry(variant)):
        try:
            verify_cached(path, variant)
            return path
        except CheckpointError as problem:
            _move_aside(path, problem)
    return download(variant, progress=progress)


def _variant_name(variant: Any) -> str | None:
    if isinstance(variant, str):
        return variant
    for attr in ("variant", "name"):
        value = getattr(variant, attr, None)
        if isinstance(value, str):
            return value
    return None


def _short_list(names: list[str], limit: int = 8) -> str:
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def load_model(
    variant: Any = "vit_b",
    checkpoint: str | os.PathLike[str] | None = None,
    device: Any = None,
    *,
    progress: bool = True,
    finetuned: str | os.PathLike[str] | None = None,
) -> Any:
    """Build ``variant`` (``sam_widget.models.build_sam``) and load official weights into it.

    Args:
        variant: "vit_b", "vit_l", "vit_h", "mobile_sam", "sam2.1_hiera_tiny",
            "sam2.1_hiera_small", "sam2.1_hiera_base_plus" or "sam2.1_hiera_large", or a model
            config accepted by ``build_sam`` (its ``variant`` name picks the registry entry
            when no ``checkpoint`` is given).
        checkpoint: a path to a checkpoint file; when None the file is found with
            ``find_checkpoint`` or downloaded (``download``).
        device: where to put the model ("cpu", "cuda", a torch.device); default: CUDA, then
            MPS, then CPU.
        progress: show a progress bar while downloading.
        finetuned: a file written by ``sw.train.save``: its fine-tuned parts replace the
            base's (refused when the file was made for another base; see ``sw.train.load``).

    Returns the model in eval mode. Raises ``CheckpointError`` with what to do when the file is
    missing, truncated, unsafe or for another variant.
    """
    import torch

    name = _variant_name(variant)
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
    elif isinstance(variant, str) or name in REGISTRY:
        _entry(name or "")  # unknown names fail before any I/O
        path = _resolve(name, progress)  # type: ignore[arg-type]
    else:
        raise CheckpointError(
            "load_model with a model config needs checkpoint='path/to/file.pth'; only the "
            f"official variants ({', '.join(VARIANTS)}) can be found or downloaded."
        )
    if not path.is_file() and checkpoint is not None:
        hint = ""
        if name in REGISTRY:
            hint = "\n" + _manual_steps(REGISTRY[name])
        raise CheckpointError(f"checkpoint not found: {path}.{hint}")

    state = load_state_dict(path)
    from sam_widget.models import build_sam
    from sam_widget.models.sam2 import Sam2, is_video_only_key

    model = build_sam(variant)
    ignored: list[str] = []
    if isinstance(model, Sam2):
        # the official SAM 2.1 file: {"model": state_dict}; set aside the video-only entries
        inner = state.get("model")
        if isinstance(inner, Mapping) and len(state) == 1:
            state = dict(inner)
        ignored = sorted(k for k in state if is_video_only_key(k))
        state = {k: v for k, v in state.items() if not is_video_only_key(k)}
    found = identify_state_dict(state)
    if name in REGISTRY and found is not None and found != name:
        raise CheckpointError(
            f"{path} is a checkpoint for {found}, not {name}: it has "
            f"{describe_state_dict(state)}: that is {found} ({name} has "
            f"{expected_description(name)}). Call load_model({found!r}, checkpoint=...) or "
            f"use the {name} file ({REGISTRY[name].filename})."
        )

    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit {name or 'this model'}: it has "
            f"{describe_state_dict(state)}.\n"
            f"  missing keys ({len(missing)}): {_short_list(missing)}\n"
            f"  unexpected keys ({len(unexpected)}): {_short_list(unexpected)}"
        )
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(getattr(state[k], "shape", ())) != tuple(v.shape)
    ]
    if mismatched:
        raise CheckpointError(
            f"{path} does not fit {name or 'this model'}: it has "
            f"{describe_state_dict(state)}; tensor shapes differ (checkpoint vs model): "
            f"{_short_list(mismatched)}"
        )
    model.load_state_dict(state, strict=True)
    model.ignored_checkpoint_keys = ignored  # for the curious: what the video model had more
    if finetuned is not None:
        from sam_widget.train.checkpoint import load as apply_finetuned

        apply_finetuned(model, finetuned)
    if device is None:
        device = _default_device()
    return model.to(torch.device(device)).eval()


def _default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"
