import copy

import pytest
import torch

from drcnet.archs.dfr_block import DFRBlock, RegionNorm, energy_attention


def random_mask(shape, p, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < p).float()


def test_energy_attention_follows_its_formula():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 7)
    mean = x.mean(dim=(2, 3), keepdim=True)
    d = (x - mean) ** 2
    v = d.sum(dim=(2, 3), keepdim=True) / (5 * 7 - 1)
    expected = x * torch.sigmoid(d / (4 * (v + 1e-4)) + 0.5)
    torch.testing.assert_close(energy_attention(x, 1e-4), expected)


def test_energy_attention_on_a_single_pixel_is_finite():
    out = energy_attention(torch.randn(1, 3, 1, 1))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize('p', [0.0, 0.3, 1.0])
def test_fast_region_norm_equals_the_reference_with_gradients(p):
    torch.manual_seed(0)
    norm = RegionNorm(6, 'sample')
    with torch.no_grad():
        norm.bn_norm.weight.uniform_(0.5, 1.5)
        norm.bn_norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(3, 6, 9, 11, requires_grad=True)
    mask = random_mask((3, 1, 9, 11), p, seed=1)
    mask[1] = 0.0 if p else 1.0  # an image with one empty region
    fast = norm(x, mask)
    ref = norm.reference(x, mask)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    g_fast = torch.autograd.grad(fast.square().sum(), [x, norm.bn_norm.weight])
    g_ref = torch.autograd.grad(ref.square().sum(), [x, norm.bn_norm.weight])
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_region_norm_of_an_empty_region_contributes_its_scaled_bias():
    norm = RegionNorm(2, 'sample')
    with torch.no_grad():
        norm.bn_norm.bias.copy_(torch.tensor([1.0, -2.0]))
    x = torch.randn(1, 2, 4, 4)
    out = norm(x, torch.zeros(1, 1, 4, 4))
    # all pixels form one region (a plain instance norm) plus bias * sqrt(1 / 16) of the empty one
    plain = torch.nn.functional.instance_norm(x, weight=norm.bn_norm.weight, bias=norm.bn_norm.bias)
    torch.testing.assert_close(out, plain + norm.bn_norm.bias.view(1, 2, 1, 1) * 0.25, atol=1e-5, rtol=0)


def test_region_norm_normalises_each_region_apart():
    norm = RegionNorm(1, 'sample')
    x = torch.zeros(1, 1, 4, 4)
    x[..., :2, :] = torch.tensor([10.0, 12.0, 14.0, 16.0])
    x[..., 2:, :] = torch.tensor([-1.0, 0.0, 1.0, 2.0])
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1
    out = norm(x, mask)
    # same within-region pattern -> same normalised values in both halves
    torch.testing.assert_close(out[..., :2, :], out[..., 2:, :], atol=1e-4, rtol=0)


def test_dfr_block_returns_downsampled_and_skip():
    block = DFRBlock(8, 16, downsample=True)
    down, skip = block(torch.randn(2, 8, 12, 10))
    assert skip.shape == (2, 16, 12, 10) and down.shape == (2, 16, 6, 5)
    none, skip = DFRBlock(8, 16, downsample=False)(torch.randn(2, 8, 12, 10))
    assert none is None and skip.shape == (2, 16, 12, 10)


# --- fast paths against the reference ------------------------------------------------------------
from drcnet.archs.dfr_block import (  # noqa: E402
    AdaptiveFeatureNorm, SpatialResponse, _energy_attention_, energy_attention_reference, set_reference_path)


def mixed_mask(shape, seed, tiny_region=True):
    """A random mask; image 0 gets a region of 3 pixels, image 1 (if any) an empty region."""
    mask = random_mask(shape, 0.4, seed)
    if tiny_region:
        mask[0] = 1.0
        mask[0, 0, 0, :3] = 0.0  # the outside region holds 3 pixels only
    if shape[0] > 1:
        mask[1] = 0.0
    return mask


def features(shape, seed, spread=1.0, offset=1.0):
    """Feature maps with per-channel offsets from -offset to +offset around a spread of ``spread``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * spread + torch.linspace(-offset, offset, shape[1]).view(1, -1, 1, 1)


def affine_norm(channels, region_stats, seed=0):
    torch.manual_seed(seed)
    norm = RegionNorm(channels, region_stats)
    with torch.no_grad():
        norm.bn_norm.weight.uniform_(0.5, 1.5)
        norm.bn_norm.bias.uniform_(-0.5, 0.5)
    return norm


def assert_grads_close(grads, expected, rel=1e-5):
    """Gradients agree to ``rel`` of their largest magnitude (float32 sums over many pixels)."""
    for a, b in zip(grads, expected):
        assert (a - b).abs().max() <= rel * b.abs().max() + 1e-6, ((a - b).abs().max(), b.abs().max())


def reference64(norm, x, mask):
    """The reference computed in float64: pooled ('batch') statistics of a 3-pixel region make the
    float32 reference itself drift by 1e-5, so the closed forms are held to the exact definition."""
    with torch.no_grad():
        return copy.deepcopy(norm).double().reference(x.detach().double(), mask.double()).float()


@pytest.mark.parametrize('region_stats', ['sample', 'batch'])
def test_closed_form_region_norm_equals_the_reference_with_gradients(region_stats):
    norm = affine_norm(5, region_stats)
    x = features((3, 5, 8, 13), seed=2).requires_grad_()
    mask = mixed_mask((3, 1, 8, 13), seed=3)
    fast, ref = norm(x, mask), norm.reference(x, mask)
    torch.testing.assert_close(fast, reference64(norm, x, mask), atol=1e-5, rtol=1e-5)
    if region_stats == 'sample':
        torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    params = [x, norm.bn_norm.weight, norm.bn_norm.bias]
    norm64, x64 = copy.deepcopy(norm).double(), x.detach().double().requires_grad_()
    grads64 = torch.autograd.grad(norm64.reference(x64, mask.double()).square().sum(),
                                  [x64, norm64.bn_norm.weight, norm64.bn_norm.bias])
    assert_grads_close(torch.autograd.grad(fast.square().sum(), params), [g.float() for g in grads64], rel=1e-4)


def in_place(norm, x, mask, gamma, beta):
    """modulated_ on the first half of a map twice as wide, as the DFR block calls it."""
    full = torch.cat([x, torch.randn_like(x)], dim=1).contiguous(memory_format=torch.channels_last
                                                                   if x.is_contiguous(memory_format=torch.channels_last)
                                                                   and not x.is_contiguous() else torch.contiguous_format)
    before = full.clone()
    c = x.shape[1]
    with torch.no_grad():
        out = norm.modulated_(full[:, :c], mask, gamma, beta)
    assert out.data_ptr() == full.data_ptr()  # written in place
    assert torch.equal(full[:, c:], before[:, c:])  # the other half untouched
    return out


@pytest.mark.parametrize('region_stats', ['sample', 'batch'])
@pytest.mark.parametrize('channels_last', [False, True])
def test_in_place_region_norm_equals_the_reference_on_a_channel_slice(region_stats, channels_last):
    norm = affine_norm(4, region_stats)
    x = features((2, 4, 9, 11), seed=4)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    mask = mixed_mask((2, 1, 9, 11), seed=5)
    g = torch.Generator().manual_seed(6)
    gamma, beta = torch.randn(2, 1, 9, 11, generator=g), torch.randn(2, 1, 9, 11, generator=g)
    expected = reference64(norm, x, mask) * (1 + gamma) + beta
    torch.testing.assert_close(in_place(norm, x, mask, gamma, beta), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('region_stats', ['sample', 'batch'])
def test_closed_forms_are_as_accurate_as_the_reference_on_ill_conditioned_features(region_stats):
    # channel offsets up to 50x the spread, a 3-pixel region, an empty one: float32 rounding shows
    norm = affine_norm(5, region_stats)
    x = features((3, 5, 8, 13), seed=7, spread=0.1, offset=5.0)
    mask = mixed_mask((3, 1, 8, 13), seed=8)
    zeros = torch.zeros(3, 1, 8, 13)
    with torch.no_grad():
        truth = copy.deepcopy(norm).double().reference(x.double(), mask.double())
        err_ref = (norm.reference(x, mask).double() - truth).abs().max()
        err_fast = (norm(x, mask).double() - truth).abs().max()
        err_in_place = (in_place(norm, x, mask, zeros, zeros).double() - truth).abs().max()
    assert (norm(x.double(), mask.double()) - truth).abs().max() < 1e-12  # exact algebra
    # rounding-level differences only: a cancellation (a sum as total minus the rest) costs 1e-3
    assert err_fast <= 4 * err_ref + 1e-6, (err_fast, err_ref)
    assert err_in_place <= 4 * err_ref + 1e-6, (err_in_place, err_ref)


def test_fast_energy_attention_equals_the_formula_in_place_and_with_gradients():
    x = features((2, 6, 7, 9), seed=7).requires_grad_()
    ref = energy_attention_reference(x, 1e-4)
    fast = energy_attention(x, 1e-4)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    g_fast, = torch.autograd.grad(fast.sum(), x)
    g_ref, = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(g_fast, g_ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        work = x.detach().clone()
        _energy_attention_(work, 1e-4)
    torch.testing.assert_close(work, ref.detach(), atol=1e-5, rtol=1e-5)
    tiny = torch.randn(1, 3, 1, 1)
    assert torch.isfinite(_energy_attention_(tiny.clone(), 1e-6)).all()


def test_fused_gamma_beta_convolution_equals_two_convolutions():
    torch.manual_seed(0)
    sa = SpatialResponse()
    x = torch.randn(2, 6, 10, 12)
    fused = sa(x)
    sa.use_reference = True
    for a, b in zip(fused, sa(x)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def mixed_block(block, region_stats='sample', seed=0):
    """A DFR block whose masks hold both regions (M_sr follows the channel mean steeply)."""
    torch.manual_seed(seed)
    dfr = DFRBlock(6, 8, downsample=True, use_csff=True, block=block, region_stats=region_stats, ea_lambda=1e-4)
    with torch.no_grad():
        for module in dfr.modules():
            if isinstance(module, AdaptiveFeatureNorm):
                module.sa.conv1.weight.zero_()
                module.sa.conv1.weight[0, 0, 3, 3] = 40.0
                module.rn.bn_norm.bias.fill_(0.3)
    return dfr


@pytest.mark.parametrize('block', ['dfr', 'base', 'sf', 'ea', 'sf_identity', 'sf_ea'])
@pytest.mark.parametrize('region_stats', ['sample', 'batch'])
def test_block_inference_training_and_reference_paths_agree(block, region_stats, photo):
    dfr = mixed_block(block, region_stats)
    g = torch.Generator().manual_seed(1)
    x = torch.cat([photo('chelsea', (20, 24)), photo('coffee', (20, 24))]).repeat(1, 2, 1, 1)[:, :6]
    enc, dec = torch.randn(2, 8, 20, 24, generator=g), torch.randn(2, 8, 20, 24, generator=g)
    x_before = x.clone()
    with torch.no_grad():
        down_fast, skip_fast = dfr(x, enc, dec)  # in place on the block's own maps
        set_reference_path(dfr, True)
        down_ref, skip_ref = dfr(x, enc, dec)
        set_reference_path(dfr, False)
    assert torch.equal(x, x_before)
    torch.testing.assert_close(skip_fast, skip_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(down_fast, down_ref, atol=1e-5, rtol=1e-5)

    params = list(dfr.parameters())
    down, skip = dfr(x, enc, dec)  # autograd path
    torch.testing.assert_close(skip, skip_ref, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(down.square().sum() + skip.sum(), params, allow_unused=True)
    set_reference_path(dfr, True)
    down, skip = dfr(x, enc, dec)
    grads_ref = torch.autograd.grad(down.square().sum() + skip.sum(), params, allow_unused=True)
    assert [a is None for a in grads] == [b is None for b in grads_ref]
    assert_grads_close([a for a in grads if a is not None], [b for b in grads_ref if b is not None], rel=1e-4)


@pytest.mark.parametrize('kernel', [1, 3])
def test_fused_convolutions_equal_their_plain_forms(kernel):
    from drcnet.archs.onednn import conv2d, conv_add_, conv_leaky_relu, conv_mul, conv_sigmoid
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 8, kernel, padding=kernel // 2)
    x = torch.randn(2, 6, 9, 11).contiguous(memory_format=torch.channels_last)
    acc = torch.randn(2, 8, 9, 11).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(conv2d(conv, x), conv(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(conv_add_(acc.clone(), conv, x), acc + conv(x), atol=1e-5, rtol=1e-5)
        # one part of a convolution over a concatenation: input channels 3..5, with and without the bias
        part = torch.nn.functional.conv2d(x[:, 3:], conv.weight[:, 3:], None, padding=kernel // 2)
        torch.testing.assert_close(conv2d(conv, x[:, 3:].contiguous(memory_format=torch.channels_last),
                                          slice(3, 6), bias=False), part, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(conv_add_(acc.clone(), conv, x[:, 3:], slice(3, 6), bias=False), acc + part,
                                   atol=1e-5, rtol=1e-5)
        first = torch.nn.functional.conv2d(x[:, :3], conv.weight[:, :3], conv.bias, padding=kernel // 2)
        torch.testing.assert_close(conv2d(conv, x[:, :3].contiguous(memory_format=torch.channels_last),
                                          slice(0, 3)), first, atol=1e-5, rtol=1e-5)
        out = conv_add_(acc, conv, x)
        assert out.data_ptr() == acc.data_ptr()  # accumulated in place
        torch.testing.assert_close(conv_leaky_relu(conv, x, 0.2),
                                   torch.nn.functional.leaky_relu(conv(x), 0.2), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(conv_sigmoid(conv, x), torch.sigmoid(conv(x)), atol=1e-5, rtol=1e-5)
        gate = torch.rand_like(acc)
        torch.testing.assert_close(conv_mul(conv, x, gate), conv(x) * gate, atol=1e-5, rtol=1e-5)


def test_packed_weights_follow_weight_and_input_changes():
    from drcnet.archs.onednn import conv2d
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 8, 3, padding=1)
    x = torch.randn(1, 4, 12, 10).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        first = conv2d(conv, x)
        conv.weight.mul_(-2)  # in place, as an optimiser step
        torch.testing.assert_close(conv2d(conv, x), conv(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(conv2d(conv, x), -2 * (first - conv.bias.view(1, -1, 1, 1))
                                   + conv.bias.view(1, -1, 1, 1), atol=1e-5, rtol=1e-5)
        conv.load_state_dict({'weight': torch.randn(8, 4, 3, 3), 'bias': torch.zeros(8)})
        torch.testing.assert_close(conv2d(conv, x), conv(x), atol=1e-5, rtol=1e-5)
        conv.weight = torch.nn.Parameter(torch.randn(8, 4, 3, 3))  # a new tensor
        torch.testing.assert_close(conv2d(conv, x), conv(x), atol=1e-5, rtol=1e-5)
        other = torch.randn(3, 4, 7, 9).contiguous(memory_format=torch.channels_last)  # another input shape
        torch.testing.assert_close(conv2d(conv, other), conv(other), atol=1e-5, rtol=1e-5)
    copy.deepcopy(conv)  # the packed weights live outside the module


def test_inference_under_cpu_autocast_stays_close_to_float32(photo):
    from drcnet.archs.drcnet_arch import DRCNet
    torch.manual_seed(0)
    net = DRCNet(wf=8, depth=3).eval()
    x = photo('rocket', (40, 48))
    with torch.inference_mode():
        full = net(x)[-1]
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = net(x)[-1]
    assert low.shape == full.shape and torch.isfinite(low).all()
    assert (low.float() - full).abs().max() < 0.1
