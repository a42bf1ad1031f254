"""Frequency loss of MIMO-UNet and CCNet for ``train.fft_opt``: L1 between the 2-D Fourier spectra."""
from __future__ import annotations

import torch
from torch import nn

from drcnet.registry import LOSS_REGISTRY

__all__ = ['FFTLoss']

_REDUCTIONS = ('none', 'mean', 'sum')


def spectrum(x: torch.Tensor) -> torch.Tensor:
    """Real and imaginary parts of ``torch.fft.fft2`` over (H, W), unnormalised: (..., H, W) -> (..., H, W, 2)."""
    freq = torch.fft.fft2(x, dim=(-2, -1))
    return torch.stack([freq.real, freq.imag], dim=-1)


@LOSS_REGISTRY.register()
class FFTLoss(nn.Module):
    """``loss_weight * L1(spectrum(pred), spectrum(target))`` over real and imaginary parts, as CCNet trains
    (there with ``loss_weight: 0.1`` on every output scale).

    Computed in float32 (float64 input stays float64) with autocast off: half-precision FFTs exist only for
    power-of-two sizes on CUDA, and the unnormalised spectrum's DC term (the image sum) leaves fp16's range.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean'):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f'FFTLoss.reduction: {reduction!r} is not one of {", ".join(_REDUCTIONS)}')
        self.loss_weight = float(loss_weight)
        self.reduction = reduction

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """pred, target (B, C, H, W) -> scalar ('mean', 'sum') or (B, C, H, W, 2) ('none')."""
        if pred.shape != target.shape or pred.dim() < 2:
            raise ValueError(f'FFTLoss: pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the '
                             f'same (..., H, W) shape')
        dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)
        with torch.autocast(pred.device.type, enabled=False):
            diff = (spectrum(pred.to(dtype)) - spectrum(target.to(dtype))).abs()
            if self.reduction == 'mean':
                diff = diff.mean()
            elif self.reduction == 'sum':
                diff = diff.sum()
        return self.loss_weight * diff

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}, reduction={self.reduction!r}'
