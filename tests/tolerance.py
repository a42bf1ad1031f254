"""Tolerances that follow from the size of a computation, the same on every CPU the suite runs on.

Summing n float32 values costs at most about n * u relative to the sum of their magnitudes (u = 2**-24,
recursive summation; blocked and pairwise sums do better), and each further elementwise operation one u
more. ``float32_bound(n)`` is that bound for a computation whose reductions add up to n terms, with 32
operations of head-room for the elementwise chain around them. A float32 result is held against the same
computation in float64 within that bound; two float32 routes to one value (another memory layout, tiling,
a batch against images one by one, a resumed run) each stay within it of the exact value, so they differ
by at most twice it. Bounds are relative to the largest magnitude of the result.
"""
from __future__ import annotations

import torch
from torch import nn

U32 = 2.0 ** -24  # float32 unit roundoff


def float32_bound(terms: int, ops: int = 32) -> float:
    """Relative error bound of a float32 computation whose reductions add up to ``terms`` terms."""
    return (terms + ops) * U32


def assert_close_to(value: torch.Tensor, truth: torch.Tensor, terms: int, what: str = '') -> None:
    """``value`` (float32) within float32_bound(terms) of ``truth`` (float64), relative to truth's largest magnitude."""
    err = (value.double() - truth).abs().max().item()
    bound = float32_bound(terms) * truth.abs().max().item()
    assert err <= bound, f'{what}: error {err:.3g} > bound {bound:.3g}'


def rounding_gap(terms: int, a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest difference two float32 routes to the same values ``a`` and ``b`` may show: twice the bound."""
    return 2 * float32_bound(terms) * max(a.abs().max().item(), b.abs().max().item())


def assert_same_up_to_rounding(a: torch.Tensor, b: torch.Tensor, terms: int, what: str = '') -> None:
    """Two float32 computations of the same values, by routes whose reductions add up to ``terms`` terms."""
    assert a.shape == b.shape, f'{what}: shapes {tuple(a.shape)} and {tuple(b.shape)}'
    err = (a.double() - b.double()).abs().max().item()
    bound = rounding_gap(terms, a, b)
    assert err <= bound, f'{what}: difference {err:.3g} > bound {bound:.3g}'


def network_terms(net: nn.Module, pixels: int) -> int:
    """Terms along any path through ``net``: every convolution's reduction length (a path crosses some of them,
    an upper bound), and statistics over at most ``pixels`` positions (an image, or a batch's)."""
    convs = 0
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            convs += module.weight[0].numel()  # in_channels / groups x kh x kw
        elif isinstance(module, nn.ConvTranspose2d):
            convs += module.weight.shape[0] * module.weight[0, 0].numel() // module.groups
    return pixels + convs
