"""Pickle inspection: refuse a checkpoint that would run code, before torch.load sees it.

`scan_pickle` walks a pickle's opcodes (``pickletools.genops``, nothing is executed) and allows
only the globals a plain state dict of tensors needs; `sam_widget.weights` calls it on every
pickle of a checkpoint file before loading it with ``weights_only=True``.
"""

from __future__ import annotations

import io
import pickletools
import re
from typing import IO

# The globals a plain state dict of tensors needs (what torch.save writes for an OrderedDict of
# tensors/parameters), and nothing that could run arbitrary code.
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "Size"),
    ("torch", "device"),
}
_TORCH_STORAGE = re.compile(r"^(Untyped|[A-Z][A-Za-z0-9]*)Storage$")
_TORCH_DTYPE = re.compile(
    r"^(float|half|bfloat|double|int|uint|long|short|bool|complex|cfloat|cdouble|chalf)\d*$"
)


def _allowed(module: str, name: str) -> bool:
    if (module, name) in _ALLOWED_GLOBALS:
        return True
    if module == "torch" and (_TORCH_STORAGE.match(name) or _TORCH_DTYPE.match(name)):
        return True
    return False


_STRING_OPS = {
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
    "UNICODE",
    "BINUNICODE",
    "SHORT_BINUNICODE",
    "BINUNICODE8",
}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}


def scan_pickle(data: bytes | IO[bytes], *, source: str = "checkpoint") -> None:
    """Walk one pickle's opcodes without executing them; raise ``CheckpointError`` if it
    imports anything a state dict of tensors does not need (that is how pickled code runs).

    Fails closed: a ``STACK_GLOBAL`` whose module/name cannot be traced to string literals is
    refused too. Reads exactly one pickle (up to its STOP opcode) from a stream.
    """
    from .weights import CheckpointError  # (weights imports this module: no cycle at import)

    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    stack: list[str | None] = []  # recent pushes (strings we can trace, None otherwise)
    memo: dict[int, str | None] = {}
    found: list[str] = []
    try:
        for opcode, arg, _pos in pickletools.genops(stream):
            name = opcode.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                if not _allowed(module, attr):
                    found.append(f"{module}.{attr}")
                stack.append(None)
            elif name == "STACK_GLOBAL":
                attr = stack.pop() if stack else None
                module = stack.pop() if stack else None
                if module is None or attr is None:
                    found.append("<an import built at load time>")
                elif not _allowed(module, attr):
                    found.append(f"{module}.{attr}")
                stack.append(None)
            elif name in ("PROTO", "FRAME", "STOP"):
                continue
            elif name in _STRING_OPS:
                stack.append(arg if isinstance(arg, str) else None)
            elif name in _PUT_OPS:
                memo[int(arg)] = stack[-1] if stack else None
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else None
            elif name in _GET_OPS:
                stack.append(memo.get(int(arg)))
            else:
                stack.append(None)
            del stack[:-8]  # only the last two pushes ever matter
    except (ValueError, EOFError) as e:  # pickletools' messages for malformed data
        raise CheckpointError(
            f"{source} is corrupt: its pickle cannot be parsed ({e}). Download it again."
        ) from e
    if found:
        names = ", ".join(sorted(set(found)))
        raise CheckpointError(
            f"{source} is not a plain state dict: its pickle imports {names}, which could run "
            "code when loaded. It was refused and nothing in it was executed. Use the official "
            "checkpoint, or re-save your weights as a plain state dict of tensors "
            "(torch.save(model.state_dict(), path))."
        )
