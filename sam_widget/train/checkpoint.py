"""Fine-tuned parts on disk: only what was trained, tied to the base it was trained on.

A file holds the trained parts' tensors, the base variant's name and the digest of every
tensor it does NOT hold (the frozen parts the training saw). Applying it to a model whose other
tensors differ (another variant, other weights) is refused: a decoder trained on one image
encoder's embeddings is wrong on another's.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

FORMAT = "sam-widget/finetuned"
VERSION = 1


def state_prefixes(model: torch.nn.Module, parts: Iterable[str]) -> tuple[str, ...]:
    """The state-dict key prefixes of ``parts``: a part's attribute may be another name for a
    submodule (SAM 2.1's ``mask_decoder`` is its ``sam_mask_decoder``)."""
    children = {id(m): name for name, m in model.named_children()}
    prefixes = []
    for part in parts:
        module = getattr(model, part, None)
        prefixes.append(f"{children.get(id(module), part)}.")
    return tuple(prefixes)


def weights_digest(model: torch.nn.Module, exclude: Iterable[str] = ()) -> str:
    """SHA-256 of a model's state dict (names, dtypes, shapes and bytes, in name order),
    leaving out the tensors of the ``exclude`` parts (part names, e.g. "mask_decoder")."""
    prefixes = state_prefixes(model, exclude)
    sha = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        if name.startswith(prefixes):
            continue
        t = state[name].detach().to("cpu").contiguous()
        sha.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        sha.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return sha.hexdigest()


def _variant(model: Any) -> str:
    return str(getattr(model, "variant", None) or "custom")


def save(sam: torch.nn.Module, path: str | os.PathLike[str],
         parts: Sequence[str] | None = None) -> Path:
    """Write the fine-tuned ``parts`` of ``sam`` (default: what ``finetune`` trained) with the
    base variant and the digest of everything else; returns the path."""
    from .family import training_family

    family = training_family(sam)
    if parts is None:
        parts = getattr(sam, "finetuned_parts", None)
        if not parts:
            raise ValueError(
                "this model was not fine-tuned by sw.train.finetune: say what to save, e.g. "
                "save(sam, path, parts=('mask_decoder',))"
            )
    parts = (parts,) if isinstance(parts, str) else tuple(parts)
    unknown = [p for p in parts if p not in family.parts]
    if unknown:
        raise ValueError(f"parts must name some of {family.parts}, got {unknown}")
    if set(parts) == set(family.parts):
        raise ValueError("with every part trained there is no base to tie to: save the "
                         "whole state dict with torch.save(sam.state_dict(), path)")
    prefixes = state_prefixes(sam, parts)
    state = {k: v.detach().to("cpu").clone() for k, v in sam.state_dict().items()
             if k.startswith(prefixes)}
    record = {
        "format": FORMAT,
        "version": VERSION,
        "base_variant": _variant(sam),
        "base_digest": weights_digest(sam, exclude=parts),
        "parts": list(parts),
        "state_dict": state,
    }
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(record, path)
    return path


def read(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A fine-tuned file's record, read safely (``weights.load_state_dict``: scanned pickle,
    ``weights_only``); a clear error for anything else."""
    from sam_widget.weights import CheckpointError, load_state_dict

    record = load_state_dict(path)
    if record.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a fine-tuned file written by sw.train.save (no {FORMAT!r} format "
            "entry); a full checkpoint loads with load_model(variant, checkpoint=path)"
        )
    if record.get("version") != VERSION:
        raise CheckpointError(f"{path} has format version {record.get('version')}; this "
                              f"sam-widget reads version {VERSION}: upgrade sam-widget")
    return record


def load(sam: torch.nn.Module, path: str | os.PathLike[str]) -> torch.nn.Module:
    """Apply a file written by `save` to ``sam`` in place (and return it); refused with a
    ``CheckpointError`` when ``sam`` is not the base the file was trained on."""
    from sam_widget.weights import CheckpointError

    record = read(path)
    parts = tuple(record["parts"])
    base = record["base_variant"]
    if base != _variant(sam):
        raise CheckpointError(
            f"{path} was fine-tuned on {base}, not {_variant(sam)}: load it with "
            f"sw.load_model({base!r}, finetuned=...)"
        )
    digest = weights_digest(sam, exclude=parts)
    if digest != record["base_digest"]:
        raise CheckpointError(
            f"{path} was fine-tuned on other {base} weights (their digest "
            f"{record['base_digest'][:16]}..., this model's {digest[:16]}...): its "
            f"{', '.join(parts)} would see another image encoder's embeddings. Load the base "
            "it was trained on (the same checkpoint file)."
        )
    state = record["state_dict"]
    prefixes = state_prefixes(sam, parts)
    expected = {k: v for k, v in sam.state_dict().items() if k.startswith(prefixes)}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    bad = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or bad:
        raise CheckpointError(
            f"{path} does not fit this model's {', '.join(parts)}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, other shapes {bad[:5]}"
        )
    with torch.no_grad():
        for k, v in expected.items():
            v.copy_(state[k])
    sam.finetuned_parts = parts
    return sam
