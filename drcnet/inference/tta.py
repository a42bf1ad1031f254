"""x8 self-ensemble: the eight flips and rotations of the square's symmetry group, averaged."""
from __future__ import annotations

from typing import Callable

import torch

Fn = Callable[[torch.Tensor], torch.Tensor]

# (quarter turns, horizontal flip first); the order only matters for floating-point summation
TRANSFORMS = tuple((k, flip) for flip in (False, True) for k in range(4))


def transform(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """Flip W (if asked), then rotate by k quarter turns; (B, C, H, W) -> (B, C, H, W) or (B, C, W, H)."""
    if flip:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k, dims=(-2, -1)) if k % 4 else x


def inverse(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """Undo :func:`transform`."""
    if k % 4:
        x = torch.rot90(x, -k, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x


def forward_x8(fn: Fn, img: torch.Tensor) -> torch.Tensor:
    """Mean of ``inverse(fn(transform(img)))`` over the 8 transforms; (B, C, H, W) -> (B, C, H, W).

    Rotations swap H and W, so ``fn`` must accept both orientations (fully convolutional networks do).
    One pass is held at a time.
    """
    total = None
    for k, flip in TRANSFORMS:
        out = inverse(fn(transform(img, k, flip)), k, flip)
        total = out.clone() if total is None else total.add_(out)
    return total.div_(len(TRANSFORMS))
