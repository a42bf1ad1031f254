"""Pixel losses: our PSNRLoss against basicsr's PSNR, and basicsr's L1 / MSE / Charbonnier from options."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from basicsr.metrics import calculate_psnr

from conftest import photo_tensor
from drcnet.losses import PSNRLoss
from drcnet.registry import LOSS_REGISTRY, build


def pair(seed: int = 0):
    gt = torch.cat([photo_tensor(n)[..., 40:72, 60:100] for n in ('astronaut', 'rocket', 'coffee')])
    g = torch.Generator().manual_seed(seed)
    noise = torch.stack([s * torch.randn(gt.shape[1:], generator=g) for s in (0.02, 0.05, 0.1)])
    return (gt + noise).clamp(0, 1), gt


def basicsr_psnr(pred: torch.Tensor, gt: torch.Tensor):
    return [calculate_psnr(p.permute(1, 2, 0).double().numpy() * 255, g.permute(1, 2, 0).double().numpy() * 255,
                           crop_border=0, input_order='HWC') for p, g in zip(pred, gt)]


def test_psnr_loss_is_minus_mean_psnr():
    pred, gt = pair()
    psnrs = basicsr_psnr(pred, gt)
    assert len(set(np.round(psnrs, 2))) == 3  # three noise levels, three different PSNRs
    # float32 mean of 3 x 32 x 40 squared errors: relative error <= 3840 u = 2.3e-4, i.e. 10 / ln 10 x 2.3e-4
    # = 1.0e-3 dB against basicsr's float64 (three such values summed and halved below: 1.5e-3 dB)
    assert PSNRLoss()(pred, gt).item() == pytest.approx(-np.mean(psnrs), abs=1e-3)
    assert PSNRLoss(loss_weight=0.5, reduction='sum')(pred, gt).item() == pytest.approx(-0.5 * np.sum(psnrs),
                                                                                         abs=2e-3)


def test_psnr_loss_gradient_improves_psnr():
    pred, gt = pair(1)
    x = pred.clone().requires_grad_()
    PSNRLoss()(x, gt).backward()
    better = (x - 1e-3 * x.grad.sign()).detach()
    assert np.all(np.array(basicsr_psnr(better, gt)) > np.array(basicsr_psnr(pred, gt)))


def test_psnr_loss_under_autocast_and_bad_input():
    pred, gt = pair()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        value = PSNRLoss()(pred.bfloat16(), gt.bfloat16())
    assert value.dtype == torch.float32 and value.item() == pytest.approx(PSNRLoss()(pred, gt).item(), abs=0.1)
    with pytest.raises(ValueError, match="PSNRLoss.reduction: 'none' is not one of mean, sum"):
        PSNRLoss(reduction='none')
    with pytest.raises(ValueError, match='same'):
        PSNRLoss()(pred, gt[:, :, :8])


@pytest.mark.parametrize('name, expected', [
    ('L1Loss', lambda p, g: (p - g).abs().mean()),
    ('MSELoss', lambda p, g: ((p - g) ** 2).mean()),
    ('CharbonnierLoss', lambda p, g: torch.sqrt((p - g) ** 2 + 1e-6).mean()),
    ('PSNRLoss', lambda p, g: 10 * torch.log10(((p - g) ** 2).flatten(1).mean(1) + 1e-8).mean()),
])
def test_pixel_losses_build_from_options(name, expected):
    cfg = {'type': name, 'loss_weight': 2.0}
    if name == 'CharbonnierLoss':
        cfg['eps'] = 1e-6
    loss = build(LOSS_REGISTRY, cfg, where='train.pixel_opt')
    pred, gt = pair()
    assert loss(pred, gt).item() == pytest.approx(2.0 * expected(pred.double(), gt.double()).item(), rel=1e-5)
