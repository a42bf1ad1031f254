"""Pixel losses: PSNRLoss against basicsr's PSNR, Charbonnier and the edge loss against float64 oracles written
from their definitions (PEERS.md 1.4), and basicsr's L1 / MSE from options."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from basicsr.metrics import calculate_psnr

from conftest import photo_tensor
from drcnet.losses import CharbonnierLoss, EdgeLoss, PSNRLoss
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
    ('CharbonnierLoss', lambda p, g: torch.sqrt((p - g) ** 2 + 1e-3 ** 2).mean()),
    ('PSNRLoss', lambda p, g: 10 * torch.log10(((p - g) ** 2).flatten(1).mean(1) + 1e-8).mean()),
])
def test_pixel_losses_build_from_options(name, expected):
    cfg = {'type': name, 'loss_weight': 2.0}
    loss = build(LOSS_REGISTRY, cfg, where='train.pixel_opt')
    pred, gt = pair()
    assert loss(pred, gt).item() == pytest.approx(2.0 * expected(pred.double(), gt.double()).item(), rel=1e-5)


# --- Charbonnier and edge loss (MPRNet / DGUNet) ----------------------------------------------------------------
def gaussian_oracle(img: np.ndarray) -> np.ndarray:
    """5x5 Gaussian of [.05, .25, .4, .25, .05] with replicate padding, one channel (H, W), float64, by loops."""
    taps = np.array([0.05, 0.25, 0.4, 0.25, 0.05])
    kernel = np.outer(taps, taps)
    padded = np.pad(img, 2, mode='edge')
    out = np.zeros_like(img)
    for dy in range(5):
        for dx in range(5):
            out += kernel[dy, dx] * padded[dy:dy + img.shape[0], dx:dx + img.shape[1]]
    return out


def laplacian_oracle(img: np.ndarray) -> np.ndarray:
    blurred = gaussian_oracle(img)
    sparse = np.zeros_like(blurred)
    sparse[::2, ::2] = 4 * blurred[::2, ::2]
    return img - gaussian_oracle(sparse)


def edge_oracle(pred: torch.Tensor, gt: torch.Tensor, eps: float = 1e-3) -> float:
    values = []
    maps = [t.double().numpy().reshape(-1, *t.shape[-2:]) for t in (pred, gt)]
    for p, g in zip(*maps):
        d = laplacian_oracle(p) - laplacian_oracle(g)
        values.append(np.sqrt(d * d + eps * eps))
    return float(np.mean(values))


def test_charbonnier_is_the_papers_with_epsilon_1e_3_and_replaces_basicsrs():
    pred, gt = pair()
    d = (pred.double() - gt.double()).numpy()
    oracle = np.mean(np.sqrt(d * d + 1e-6))
    # float32 differences and square roots, mean over 11,520 values: relative error well below 1e-6
    assert CharbonnierLoss()(pred, gt).item() == pytest.approx(oracle, rel=1e-6)
    assert CharbonnierLoss(eps=0.1, reduction='sum')(pred, gt).item() == pytest.approx(
        np.sum(np.sqrt(d * d + 0.01)), rel=1e-6)
    assert LOSS_REGISTRY.get('CharbonnierLoss') is CharbonnierLoss
    from basicsr.losses import build_loss  # basicsr's own builder sees ours too
    assert isinstance(build_loss({'type': 'CharbonnierLoss'}), CharbonnierLoss)
    with pytest.raises(ValueError, match='CharbonnierLoss.eps: expected a number > 0'):
        CharbonnierLoss(eps=0)


def test_edge_loss_equals_the_laplacian_charbonnier_oracle():
    pred, gt = pair(2)
    pred, gt = pred[..., :27, :37], gt[..., :27, :37]  # odd sizes: the replicate border and even sampling matter
    value = EdgeLoss()(pred, gt).item()
    # two 25-tap float32 convolutions per map (relative error ~1e-6 of values <= 4) then a mean: 1e-5 relative
    assert value == pytest.approx(edge_oracle(pred, gt), rel=1e-5)
    assert EdgeLoss(loss_weight=0.05)(pred, gt).item() == pytest.approx(0.05 * value, rel=1e-6)
    assert EdgeLoss()(gt, gt).item() == pytest.approx(1e-3, rel=1e-6)  # equal images: sqrt(eps^2)
    # even and odd taps each sum to 1/2, so down, up x4 and blur give a constant back away from the border:
    # the first level of a constant is zero there (float32 rounding of values ~0.7 only)
    lap = EdgeLoss().laplacian(torch.full((1, 3, 20, 22), 0.7))
    assert lap[..., 4:-4, 4:-4].abs().max() < 1e-6 and lap.abs().max() > 1e-3


def test_edge_loss_kernel_is_a_buffer_that_follows_the_module_and_is_not_saved():
    loss = EdgeLoss()
    assert [name for name, _ in loss.named_buffers()] == ['kernel'] and loss.state_dict() == {}
    assert loss.to(torch.float64).kernel.dtype == torch.float64
    pred, gt = pair()
    x = pred.clone().requires_grad_()
    loss(x, gt).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize('cls', [CharbonnierLoss, EdgeLoss])
def test_charbonnier_and_edge_losses_compute_in_float32_under_autocast(cls):
    pred, gt = pair(3)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        value = cls()(pred, gt)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(cls()(pred, gt).item(), rel=1e-6)  # the same float32 computation
    with pytest.raises(ValueError, match='same'):
        cls()(pred, gt[..., :8])
