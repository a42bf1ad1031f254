"""Statistics in float32 under mixed precision: the one wrapper the networks of ``drcnet.archs`` share."""
from __future__ import annotations

import functools

import torch

__all__ = ['float32_statistics']


def float32_statistics(fn):
    """Run ``fn(x, ...)`` in at least float32 with autocast off, and return its result in x's dtype.

    Sums over a feature map overflow float16 (a 320 x 320 map of variance 1.4 already has an infinite
    sum of squares) and lose bits in bfloat16, so per-image statistics are never taken in either.
    """
    def widen(t):  # float16 and bfloat16 to float32; float32 and float64 as they are
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            return t.to(torch.promote_types(t.dtype, torch.float32))
        return t

    @functools.wraps(fn)
    def wrapper(x: torch.Tensor, *args, **kwargs):
        with torch.autocast(x.device.type, enabled=False):
            out = fn(widen(x), *map(widen, args), **{k: widen(v) for k, v in kwargs.items()})
        return out.to(x.dtype)
    return wrapper
