"""Pixel losses for ``train.pixel_opt``.

basicsr already registers ``L1Loss``, ``MSELoss`` and ``CharbonnierLoss`` (``sqrt(d^2 + eps)``, so
MPRNet's Charbonnier with epsilon 1e-3 is ``eps: 1.0e-6``); they are used as they are. This module
adds the PSNR loss of HINet/NAFNet, which basicsr lacks.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from drcnet.registry import LOSS_REGISTRY

__all__ = ['PSNRLoss']

_REDUCTIONS = ('mean', 'sum')


@LOSS_REGISTRY.register()
class PSNRLoss(nn.Module):
    """Negative PSNR: ``loss_weight * 10 * log10(MSE_b + eps)`` per image b, averaged (or summed) over the batch.

    For images in [0, 1] this is minus the PSNR in dB, so minimising it maximises the PSNR.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean', eps: float = 1e-8):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f'PSNRLoss.reduction: {reduction!r} is not one of {", ".join(_REDUCTIONS)}')
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps <= 0:
            raise ValueError(f'PSNRLoss.eps: expected a number > 0, got {eps!r}')
        self.loss_weight = float(loss_weight)
        self.reduction = reduction
        self.eps = float(eps)
        self.scale = 10.0 / math.log(10.0)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """pred, target (B, C, H, W) -> scalar."""
        if pred.shape != target.shape or pred.dim() < 2:
            raise ValueError(f'PSNRLoss: pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the '
                             f'same (B, ...) shape')
        mse = (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)
        per_image = self.scale * torch.log(mse + self.eps)
        value = per_image.mean() if self.reduction == 'mean' else per_image.sum()
        return self.loss_weight * value

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}, reduction={self.reduction!r}, eps={self.eps}'
