"""The DFR block's operations against their step-by-step definitions (tests/reference.py).

Tolerances (tests/tolerance.py): a float32 result is held against the same computation in float64
within ``float32_bound`` of its largest reduction, a bound that does not depend on the CPU the suite runs on.
"""
import copy
import math

import pytest
import torch

import reference
from drcnet.archs.dfr_block import AdaptiveFeatureNorm, DFRBlock, RegionNorm, energy_attention
from tolerance import assert_close_to, assert_same_up_to_rounding, float32_bound, rounding_gap

U64 = 2.0 ** -53  # float64 unit roundoff

def random_mask(shape, p, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < p).float()


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


def norm_reference(norm, x, mask):
    return reference.region_norm(x, mask, norm.bn_norm.weight, norm.bn_norm.bias, norm.region_stats)


def test_energy_attention_equals_its_definition_with_gradients():
    x = features((2, 6, 7, 9), seed=7).requires_grad_()
    x64 = x.detach().double().requires_grad_()
    out, truth = energy_attention(x, 1e-4), reference.energy_attention(x64, 1e-4)
    assert out.dtype == torch.float32
    assert_close_to(out, truth, 7 * 9, 'output')
    probe = features(x.shape, seed=8).double()
    grad, = torch.autograd.grad((out * probe.float()).sum(), x)
    grad64, = torch.autograd.grad((truth * probe).sum(), x64)
    assert_close_to(grad, grad64, 7 * 9, 'gradient')


def test_energy_attention_on_a_single_pixel_is_finite():
    g = torch.Generator().manual_seed(0)
    assert torch.isfinite(energy_attention(torch.randn(1, 3, 1, 1, generator=g))).all()


@pytest.mark.parametrize('region_stats', ['sample', 'batch'])
@pytest.mark.parametrize('p', [0.0, 0.3, 1.0, 'mixed'])
def test_region_norm_equals_its_definition_with_gradients(region_stats, p):
    norm = affine_norm(5, region_stats)
    shape = (3, 5, 8, 13)
    x = features(shape, seed=2).requires_grad_()
    mask = mixed_mask((3, 1, 8, 13), seed=3) if p == 'mixed' else random_mask((3, 1, 8, 13), p, seed=1)
    norm64, x64 = copy.deepcopy(norm).double(), x.detach().double().requires_grad_()
    out, truth = norm(x, mask), norm_reference(norm64, x64, mask.double())
    terms = shape[2] * shape[3] * (shape[0] if region_stats == 'batch' else 1)
    assert_close_to(out, truth, terms, 'output')
    params, params64 = [x, norm.bn_norm.weight, norm.bn_norm.bias], [x64, norm64.bn_norm.weight, norm64.bn_norm.bias]
    # a fixed random projection: sum(out^2) of a normalised map has a gradient that is zero but for rounding
    probe = features(shape, seed=11).double()
    grads = torch.autograd.grad((out * probe.float()).sum(), params)
    grads64 = torch.autograd.grad((truth * probe).sum(), params64)
    # the weight and bias gradients sum over every pixel of the batch
    for name, a, b in zip(('x', 'weight', 'bias'), grads, grads64):
        assert_close_to(a, b, shape[0] * shape[2] * shape[3], f'gradient of {name}')


def test_region_norm_of_an_empty_region_contributes_its_scaled_bias():
    norm = RegionNorm(2, 'sample')
    with torch.no_grad():
        norm.bn_norm.bias.copy_(torch.tensor([1.0, -2.0]))
    x = features((1, 2, 4, 4), seed=0)
    out = norm(x, torch.zeros(1, 1, 4, 4))
    # all pixels form one region (a plain instance norm) plus bias * sqrt(1 / 16) of the empty one
    weight, bias = norm.bn_norm.weight.double(), norm.bn_norm.bias.double()
    plain = torch.nn.functional.instance_norm(x.double(), weight=weight, bias=bias)
    assert_close_to(out, plain + bias.view(1, 2, 1, 1) * 0.25, 16)


def test_region_norm_normalises_each_region_apart():
    norm = RegionNorm(1, 'sample')
    x = torch.zeros(1, 1, 4, 4)
    x[..., :2, :] = torch.tensor([10.0, 12.0, 14.0, 16.0])
    x[..., 2:, :] = torch.tensor([-1.0, 0.0, 1.0, 2.0])
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1
    out = norm(x, mask)
    truth = norm_reference(norm.double(), x.double(), mask.double())
    assert_close_to(out, truth, 16)
    # same within-region pattern -> the same normalised values in both halves, but for the instance norm's eps:
    # it weighs most, eps / (2 var) relative, on the half whose filled map has the smaller variance (1.25 / 2)
    gap = (out[..., :2, :] - out[..., 2:, :]).abs().max().item()
    bound = reference.IN_EPS / (2 * 0.625) * out.abs().max().item() + rounding_gap(16, out, out)
    assert 0 < gap <= bound, (gap, bound)


@pytest.mark.parametrize('region_stats', ['sample', 'batch'])
def test_closed_form_is_as_accurate_as_the_definition_on_ill_conditioned_features(region_stats):
    # channel offsets up to 50x the spread, a 3-pixel region, an empty one: float32 rounding shows
    norm = affine_norm(5, region_stats)
    x = features((3, 5, 8, 13), seed=7, spread=0.1, offset=5.0)
    mask = mixed_mask((3, 1, 8, 13), seed=8)
    with torch.no_grad():
        truth = norm_reference(copy.deepcopy(norm).double(), x.double(), mask.double())
        err_definition = (norm_reference(norm, x, mask).double() - truth).abs().max()
        err_closed_form = (norm(x, mask).double() - truth).abs().max()
        # the same algebra in float64: statistics over the batch's 312 pixels, each centred value carrying the
        # rounding of an x 50 times larger than the spread
        float64_bound = (3 * 8 * 13 + 32) * U64 * 50 * truth.abs().max()
        assert (norm.double()(x.double(), mask.double()) - truth).abs().max() <= float64_bound
    # rounding-level differences only (a cancellation, a sum as total minus the rest, would cost 1e-3): at most
    # a few times the definition's own error, or the plain float32 bound of the computation where that is smaller
    floor = float32_bound(3 * 8 * 13) * truth.abs().max()
    assert err_closed_form <= 4 * err_definition + floor, (err_closed_form, err_definition)


def mixed_block(block, x, region_stats='sample', seed=0, use_sf=True):
    """A DFR block whose masks on ``x`` hold both regions: M_sr follows the channel mean steeply, and
    conv_1's bias puts the threshold in the widest gap between the middle half of x's first-half channel means.

    Not on a pixel: a pixel at the threshold falls in either region by a rounding, and the block jumps by
    the difference of the two regions' statistics (float32 and float64 took different sides on some CPUs).
    """
    torch.manual_seed(seed)
    dfr = DFRBlock(6, 8, downsample=True, use_csff=True, use_sf=use_sf, block=block, region_stats=region_stats,
                   ea_lambda=1e-4)
    with torch.no_grad():
        for module in dfr.modules():
            if isinstance(module, AdaptiveFeatureNorm):
                gain = 40.0
                module.sa.conv1.weight.zero_()
                module.sa.conv1.weight[0, 0, 3, 3] = gain
                module.rn.bn_norm.bias.fill_(0.3)
                means = dfr.conv_1(x)[:, :4].mean(dim=1).flatten().sort().values
                middle = means[len(means) // 4:3 * len(means) // 4]
                gaps = middle[1:] - middle[:-1]
                widest = int(gaps.argmax())
                # every pixel's mean stays half the gap from the cut: far beyond a 3x3 convolution of 6
                # channels and a mean of 4 in float32 (float32_bound(58) of the means' magnitude)
                assert gaps[widest] / 2 > 100 * float32_bound(58) * means.abs().max(), gaps[widest]
                at_threshold = math.log(module.threshold / (1 - module.threshold)) / gain
                dfr.conv_1.bias[:4] += at_threshold - (middle[widest] + middle[widest + 1]) / 2
    return dfr


@pytest.mark.parametrize('block', ['dfr', 'base', 'sf', 'ea', 'sf_identity', 'sf_ea'])
@pytest.mark.parametrize('region_stats', ['sample', 'batch'])
def test_block_equals_its_definition_with_gradients(block, region_stats, photo):
    x = torch.cat([photo('chelsea', (20, 24)), photo('coffee', (20, 24))]).repeat(1, 2, 1, 1)[:, :6]
    dfr = mixed_block(block, x, region_stats)
    g = torch.Generator().manual_seed(1)
    enc, dec = torch.randn(2, 8, 20, 24, generator=g), torch.randn(2, 8, 20, 24, generator=g)
    dfr64 = copy.deepcopy(dfr).double()
    down, skip = dfr(x, enc, dec)
    down64, skip64 = reference.dfr_block(dfr64, x.double(), enc.double(), dec.double())
    if block in ('dfr', 'sf', 'sf_identity', 'sf_ea'):  # both regions are exercised
        response = dfr.norm.sa(dfr.conv_1(x)[:, :4])[0]
        assert 0.1 < (response >= dfr.norm.threshold).float().mean() < 0.9
    # a 3x3 convolution of 6 channels, then the statistics over each image's 20 x 24 (or the batch's) pixels
    terms = 54 + 20 * 24 * (2 if region_stats == 'batch' else 1)
    assert_close_to(skip, skip64, terms, 'skip')
    assert_close_to(down, down64, terms + 16 * 8, 'down-sampled')
    params = [p for p in dfr.parameters() if p.requires_grad]
    probe_down, probe_skip = features(down.shape, seed=12).double(), features(skip.shape, seed=13).double()
    grads = torch.autograd.grad((down * probe_down.float()).sum() + (skip * probe_skip.float()).sum(), params,
                                allow_unused=True)
    params64 = [p for p in dfr64.parameters() if p.requires_grad]
    grads64 = torch.autograd.grad((down64 * probe_down).sum() + (skip64 * probe_skip).sum(), params64,
                                  allow_unused=True)
    assert [a is None for a in grads] == [b is None for b in grads64]
    # parameter gradients sum over all pixels of the batch after the statistics
    for a, b in zip(grads, grads64):
        if b is not None:
            assert_close_to(a, b, terms + 2 * 20 * 24, 'gradient')


def test_dfr_block_returns_downsampled_and_skip():
    g = torch.Generator().manual_seed(0)
    block = DFRBlock(8, 16, downsample=True)
    down, skip = block(torch.randn(2, 8, 12, 10, generator=g))
    assert skip.shape == (2, 16, 12, 10) and down.shape == (2, 16, 6, 5)
    none, skip = DFRBlock(8, 16, downsample=False)(torch.randn(2, 8, 12, 10, generator=g))
    assert none is None and skip.shape == (2, 16, 12, 10)


def test_a_block_without_the_spatial_filter_keeps_frozen_filter_modules():
    # the release builds the filter's modules in every block (its checkpoints carry their keys) and
    # applies them on some levels only; the unused ones must not wait for gradients
    x = features((1, 6, 12, 10), seed=3)
    used, unused = mixed_block('dfr', x), mixed_block('dfr', x, use_sf=False)
    unused.load_state_dict(used.state_dict())
    assert all(not p.requires_grad for p in unused.norm.parameters())
    skip = unused(x)[1]
    skip.sum().backward()
    assert all(p.grad is None for p in unused.norm.parameters())
    assert all(p.grad is not None for p in unused.conv_1.parameters())
    # and the filter is really off: the output is conv_1's, activated, times the attention, plus identity
    expected = reference.dfr_block(unused, x)[1]
    # float32 both: a 3x3 convolution of 6 channels, the attention's statistics over 12 x 10 pixels
    assert_same_up_to_rounding(skip, expected, 54 + 120)
    used_skip = used(x)[1]
    assert (skip - used_skip).abs().max() > 100 * rounding_gap(54 + 120, skip, used_skip)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_statistics_under_autocast_are_taken_in_float32(dtype):
    # a 320 x 320 map of variance 1.4: its sum of squares (143,000) overflows float16 (65,504)
    norm = affine_norm(4, 'sample')
    x = features((1, 4, 320, 320), seed=9, spread=1.4 ** 0.5, offset=0.5)
    mask = random_mask((1, 1, 320, 320), 0.3, seed=10)
    with torch.no_grad():
        expected_norm, expected_attention = norm(x, mask), energy_attention(x, 1e-6)
        with torch.autocast('cpu', dtype=dtype):
            low = x.to(dtype)  # what a convolution under autocast hands the block
            out_norm, out_attention = norm(low, mask.to(dtype)), energy_attention(low, 1e-6)
    for out, expected in ((out_norm, expected_norm), (out_attention, expected_attention)):
        assert out.dtype == dtype and torch.isfinite(out).all()
        # the input's rounding to dtype (relative 2**-11 in float16, 2**-8 in bfloat16) carried through a
        # normalisation of O(1) values, and the output's own rounding: a few units of the format
        unit = torch.finfo(dtype).eps
        assert (out.float() - expected).abs().max() <= 8 * unit * expected.abs().max()
