"""Matrix products for CPU inference, through oneDNN where it is the faster library.

PyTorch's CPU ``F.linear`` / ``torch.mm`` call MKL's sgemm. On AMD processors MKL takes its
AVX2 code path even where the CPU has AVX-512 (Zen 4 and 5), while oneDNN, which PyTorch also
ships, dispatches on the instruction set itself: on this project's AMD EPYC test machine its
float32 products run about twice as fast (``benchmarks/bench_sam2.py`` and the figures in the
README). `linear` and `matmul` use oneDNN's linear kernel (``torch.ops.mkldnn._linear_pointwise``,
the one PyTorch's own compiler emits for CPU linears, optionally with the GELU fused in) for
float32 CPU tensors when no gradient is recorded and no autocast is on, and the usual operators
otherwise (training, GPUs, reduced precision, a PyTorch built without oneDNN).

Both libraries compute float32 products with float32 accumulation; results differ by the order
of the additions only (a few 1e-7 of the values' spread, see ``tests/test_parity_sam2.py``).
``SAM_WIDGET_ONEDNN=0`` in the environment turns this off.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

__all__ = ["linear", "matmul", "onednn_available"]

_available: bool | None = None


def onednn_available() -> bool:
    """Whether oneDNN's linear kernel is there and agrees with ``F.linear`` (checked once)."""
    global _available
    if _available is None:
        _available = False
        if os.environ.get("SAM_WIDGET_ONEDNN", "1") != "0" and torch.backends.mkldnn.is_available():
            try:
                g = torch.Generator().manual_seed(0)
                x, w, b = (torch.randn(*s, generator=g) for s in ((5, 24), (7, 24), (7,)))
                with torch.no_grad():
                    y = torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu", [None], "none")
                _available = bool(torch.allclose(y, F.gelu(F.linear(x, w, b)), atol=1e-5))
            except (AttributeError, RuntimeError, TypeError):
                pass
    return _available


def _autocast_cpu() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # older signature
        return torch.is_autocast_cpu_enabled()


def _use_onednn(x: torch.Tensor) -> bool:
    """float32 CPU inference outside autocast (whose reduced precision F.linear applies)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not _autocast_cpu()
        and onednn_available()
    )


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, gelu: bool = False
) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, then the exact (erf) GELU if ``gelu``: (..., in) ->
    (..., out) with ``weight`` (out, in)."""
    if _use_onednn(x):
        if gelu:
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [None], "none")
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [None], "")
    y = F.linear(x, weight, bias)
    return F.gelu(y) if gelu else y


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for 2-D ``a`` (m, k) and ``b`` (k, n)."""
    if _use_onednn(a) and b.dtype == torch.float32:
        return torch.ops.mkldnn._linear_pointwise(a, b.t(), None, "none", [None], "")
    return a @ b
