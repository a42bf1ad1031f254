"""One loss term over every image a network returns (``drcnet.archs.outputs``), with per-output weights.

An output smaller than the target (a multi-scale network's 1/2 or 1/4 image) is compared with the target
resized to its size by ``F.interpolate(..., mode='bilinear', align_corners=False)``, computed from the
full-size target each time. That is how MIMO-UNet-style multi-scale networks (CCNet) are trained:
``interpolate(gt, scale_factor=0.5 or 0.25, mode='bilinear')``, which for sizes divisible by 4 samples the
same points as giving the size (tested). Multi-stage networks (MPRNet, DGUNet, DRCNet) return full-size
images, and each is compared with the target itself.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['PerOutputLoss', 'resize_target', 'targets_for']


def resize_target(gt: torch.Tensor, size) -> torch.Tensor:
    """``gt`` (B, C, H, W) at spatial ``size`` (h, w): itself when the size matches, else bilinearly resized."""
    size = tuple(size)
    if tuple(gt.shape[-2:]) == size:
        return gt
    return F.interpolate(gt, size=size, mode='bilinear', align_corners=False)


def targets_for(preds: Sequence[torch.Tensor], gt: torch.Tensor) -> list:
    """One target per output, each at that output's size (resized once per distinct size)."""
    cache: dict = {}
    out = []
    for p in preds:
        size = tuple(p.shape[-2:])
        if size not in cache:
            cache[size] = resize_target(gt, size)
        out.append(cache[size])
    return out


class PerOutputLoss(nn.Module):
    """``sum_i w_i * loss(pred_i, target_i)`` over a network's outputs.

    Args:
        loss: a loss module called as ``loss(pred, target)``.
        output_weights: one weight per output (final last); None weighs every output 1.
        key: the option block it was built from (e.g. 'train.pixel_opt'), for error messages.
    """

    def __init__(self, loss: nn.Module, output_weights: Sequence[float] | None = None, key: str = 'loss'):
        super().__init__()
        if output_weights is not None:
            if isinstance(output_weights, (str, bytes)) or not isinstance(output_weights, Sequence) or not all(
                    isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in output_weights):
                raise ValueError(f'{key}.output_weights: expected a list of numbers >= 0, got {output_weights!r}')
            if not output_weights or not any(output_weights):
                raise ValueError(f'{key}.output_weights: at least one weight must be > 0, got {output_weights!r}')
            output_weights = [float(w) for w in output_weights]
        self.loss = loss
        self.output_weights = output_weights
        self.key = key

    def weights_for(self, count: int) -> list:
        """The weight of each of ``count`` outputs; a list of another length is an error naming the key."""
        if self.output_weights is None:
            return [1.0] * count
        if len(self.output_weights) != count:
            raise ValueError(f'{self.key}.output_weights: {len(self.output_weights)} weights given, but the network '
                             f'returns {count} output(s) (final last); give {count} weights or leave the key out '
                             f'(all 1)')
        return self.output_weights

    def forward(self, preds: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
        """Outputs and their same-sized targets (:func:`targets_for`) -> the weighted sum (scalar)."""
        total = None
        for w, p, t in zip(self.weights_for(len(preds)), preds, targets):
            if w == 0:
                continue
            term = w * self.loss(p, t)
            total = term if total is None else total + term
        return total

    def extra_repr(self) -> str:
        return f'key={self.key!r}, output_weights={self.output_weights}'
