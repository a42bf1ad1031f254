"""Pixel losses for ``train.pixel_opt`` / ``train.edge_opt``.

basicsr registers ``L1Loss`` and ``MSELoss``, used as they are. ``CharbonnierLoss`` here replaces basicsr's
class of that name: ours takes the papers' epsilon (MPRNet, DGUNet: ``mean(sqrt(d^2 + eps^2))``, eps 1e-3),
where basicsr's put its ``eps`` under the root as given (default 1e-12), so that MPRNet's loss was
``eps: 1.0e-6`` there. This module also adds the PSNR loss of HINet/NAFNet and MPRNet/DGUNet's edge loss.
Every loss here computes in float32, also under autocast.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from drcnet.registry import LOSS_REGISTRY, register_replacing

__all__ = ['CharbonnierLoss', 'EdgeLoss', 'PSNRLoss']

_REDUCTIONS = ('mean', 'sum')


def _check_common(cls: str, reduction: str, eps: float) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f'{cls}.reduction: {reduction!r} is not one of {", ".join(_REDUCTIONS)}')
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps <= 0:
        raise ValueError(f'{cls}.eps: expected a number > 0, got {eps!r}')


def _check_pair(cls: str, pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(f'{cls}: pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same '
                         f'(B, C, H, W) shape')


def charbonnier(diff: torch.Tensor, eps: float, reduction: str = 'mean') -> torch.Tensor:
    """``sqrt(diff^2 + eps^2)``, averaged or summed."""
    value = torch.sqrt(diff * diff + eps * eps)
    return value.mean() if reduction == 'mean' else value.sum()


@register_replacing(LOSS_REGISTRY)
class CharbonnierLoss(nn.Module):
    """Charbonnier loss ``loss_weight * mean(sqrt((pred - target)^2 + eps^2))``, eps as in MPRNet/DGUNet (1e-3)."""

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean', eps: float = 1e-3):
        super().__init__()
        _check_common('CharbonnierLoss', reduction, eps)
        self.loss_weight, self.reduction, self.eps = float(loss_weight), reduction, float(eps)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """pred, target (B, C, H, W) -> scalar (float32)."""
        _check_pair('CharbonnierLoss', pred, target)
        with torch.autocast(pred.device.type, enabled=False):
            return self.loss_weight * charbonnier(pred.float() - target.float(), self.eps, self.reduction)

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}, reduction={self.reduction!r}, eps={self.eps}'


GAUSS_TAPS = (0.05, 0.25, 0.4, 0.25, 0.05)


@LOSS_REGISTRY.register()
class EdgeLoss(nn.Module):
    """Charbonnier loss between the first levels of the Laplacian pyramids of pred and target (MPRNet, DGUNet).

    The first level is ``img - G(up(down(G(img))))``: G is the 5x5 Gaussian, the outer product of
    [.05, .25, .4, .25, .05], with replicate padding; down keeps the even pixels, up puts them back, times 4,
    into a zero image. DGUNet trains with ``loss_weight: 0.05``.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean', eps: float = 1e-3):
        super().__init__()
        _check_common('EdgeLoss', reduction, eps)
        self.loss_weight, self.reduction, self.eps = float(loss_weight), reduction, float(eps)
        taps = torch.tensor(GAUSS_TAPS, dtype=torch.float32)
        self.register_buffer('kernel', torch.outer(taps, taps)[None, None], persistent=False)

    def gaussian(self, img: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the same, each channel blurred by the 5x5 Gaussian (replicate padding)."""
        channels = img.shape[1]
        weight = self.kernel.to(img.dtype).expand(channels, 1, 5, 5)
        return F.conv2d(F.pad(img, (2, 2, 2, 2), mode='replicate'), weight, groups=channels)

    def laplacian(self, img: torch.Tensor) -> torch.Tensor:
        """The first level of the Laplacian pyramid of ``img`` (B, C, H, W)."""
        blurred = self.gaussian(img)
        upsampled = torch.zeros_like(blurred)
        upsampled[:, :, ::2, ::2] = 4 * blurred[:, :, ::2, ::2]
        return img - self.gaussian(upsampled)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """pred, target (B, C, H, W) -> scalar (float32)."""
        _check_pair('EdgeLoss', pred, target)
        with torch.autocast(pred.device.type, enabled=False):
            diff = self.laplacian(pred.float()) - self.laplacian(target.float())
            return self.loss_weight * charbonnier(diff, self.eps, self.reduction)

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}, reduction={self.reduction!r}, eps={self.eps}'


@LOSS_REGISTRY.register()
class PSNRLoss(nn.Module):
    """Negative PSNR: ``loss_weight * 10 * log10(MSE_b + eps)`` per image b, averaged (or summed) over the batch.

    For images in [0, 1] this is minus the PSNR in dB, so minimising it maximises the PSNR.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean', eps: float = 1e-8):
        super().__init__()
        _check_common('PSNRLoss', reduction, eps)
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
