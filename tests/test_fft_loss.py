"""FFTLoss: L1 between 2-D spectra against a direct DFT, its reductions, float32 under autocast, and CCNet's
multi-scale objective with bilinearly down-sampled targets."""
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from drcnet.losses.fft_loss import FFTLoss
from drcnet.registry import LOSS_REGISTRY, build


def dft_oracle(x):
    """Float64 numpy: F_H x F_W^T with explicit DFT matrices; (..., H, W) -> real, imaginary parts."""
    h, w = x.shape[-2:]
    fh = np.exp(-2j * np.pi * np.outer(np.arange(h), np.arange(h)) / h)
    fw = np.exp(-2j * np.pi * np.outer(np.arange(w), np.arange(w)) / w)
    spec = fh @ x.detach().numpy() @ fw.T
    return spec.real, spec.imag


def test_value_is_the_mean_absolute_difference_of_real_and_imaginary_parts():
    torch.manual_seed(0)
    pred, target = torch.rand(2, 3, 9, 14, dtype=torch.float64), torch.rand(2, 3, 9, 14, dtype=torch.float64)
    (pr, pi), (tr, ti) = dft_oracle(pred), dft_oracle(target)
    expected = np.concatenate([np.abs(pr - tr).ravel(), np.abs(pi - ti).ravel()]).mean()
    # float64 DFT of 126 terms of values <= 1: rounding ~1e-13 at most
    assert FFTLoss()(pred, target).item() == pytest.approx(expected, rel=0, abs=1e-12)


def test_reductions_and_weight():
    torch.manual_seed(0)
    pred, target = torch.rand(2, 3, 8, 10), torch.rand(2, 3, 8, 10)
    none = FFTLoss(reduction='none')(pred, target)
    assert none.shape == (2, 3, 8, 10, 2)
    # float32 sums of 960 terms: relative error below 960 * 2**-24 ~ 6e-5
    assert FFTLoss(reduction='sum')(pred, target).item() == pytest.approx(none.sum().item(), rel=6e-5)
    assert FFTLoss(loss_weight=0.1)(pred, target).item() == pytest.approx(0.1 * none.mean().item(), rel=6e-5)
    assert FFTLoss()(pred, pred).item() == 0


def test_mistakes_are_named():
    with pytest.raises(ValueError, match="reduction: 'avg'"):
        FFTLoss(reduction='avg')
    with pytest.raises(ValueError, match='same'):
        FFTLoss()(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match='did you mean'):
        build(LOSS_REGISTRY, {'type': 'FFTLoss', 'loss_wieght': 0.1}, where='train.fft_opt')


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=['fp16', 'bf16'])
def test_computed_in_float32_under_autocast_on_sizes_that_are_not_powers_of_two(dtype):
    torch.manual_seed(0)
    target = torch.rand(2, 3, 27, 41)
    pred = (target + 0.1 * torch.randn_like(target)).to(dtype).requires_grad_()  # as a network under autocast gives
    expected = FFTLoss()(pred.detach().float(), target)
    with torch.autocast('cpu', dtype=dtype):
        value = FFTLoss()(pred, target)
    assert value.dtype == torch.float32
    assert torch.equal(value, expected)  # the same float32 computation on the same values
    value.backward()
    assert pred.grad.dtype == dtype and torch.isfinite(pred.grad).all()


def test_a_bright_image_whose_spectrum_leaves_the_fp16_range_stays_finite():
    # the DC term of an unnormalised spectrum is the image sum: 256 x 256 white pixels give 65536 > 65504
    target = torch.ones(1, 1, 256, 256)
    pred = torch.full_like(target, 0.5).half()
    with torch.autocast('cpu', dtype=torch.float16):
        value = FFTLoss(reduction='sum')(pred, target)
    assert value.item() == 0.5 * 256 * 256  # only the DC term differs


def test_ccnet_objective_on_every_scale_with_bilinearly_down_sampled_targets():
    """CCNet trains with sum over scales of L1 + 0.1 * FFT against the target resized bilinearly to each scale."""
    from drcnet.archs.ccnet_arch import CCNet

    torch.manual_seed(0)
    net = CCNet(base_channel=4, num_res=1)
    lq, gt = torch.rand(2, 3, 32, 48), torch.rand(2, 3, 32, 48)
    fft = FFTLoss(loss_weight=0.1)
    total = 0
    for out in net(lq):
        target = gt if out.shape[-2:] == gt.shape[-2:] else F.interpolate(gt, size=out.shape[-2:], mode='bilinear',
                                                                          align_corners=False)
        total = total + F.l1_loss(out, target) + fft(out, target)
    total.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_resizing_to_the_output_size_equals_the_authors_quarter_and_half_scale_factors():
    # the authors resize with scale_factor 0.5 and 0.25 (bilinear, align_corners False) on 256-pixel crops;
    # resizing to an output's size gives the same targets whenever the sides are multiples of 4
    torch.manual_seed(0)
    gt = torch.rand(2, 3, 32, 48)
    for factor in (0.5, 0.25):
        by_factor = F.interpolate(gt, scale_factor=factor, mode='bilinear', align_corners=False)
        by_size = F.interpolate(gt, size=by_factor.shape[-2:], mode='bilinear', align_corners=False)
        torch.testing.assert_close(by_size, by_factor, rtol=0, atol=0)
