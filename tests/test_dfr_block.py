"""The DFR block's operations against their step-by-step definitions (tests/reference.py).

Tolerances: a float32 result is held against the same computation in float64. Summing n float32
values costs at most about n * u relative to the sum of their magnitudes (u = 2**-24, recursive
summation; blocked and pairwise sums do better), and each further elementwise operation one u more.
``float32_bound(n)`` is that bound, for the largest reduction of the computation, with 32 operations
of head-room for the chain that follows it; it does not depend on the CPU the suite runs on.
"""
import copy
import math

import pytest
import torch

import reference
from drcnet.archs.dfr_block import AdaptiveFeatureNorm, DFRBlock, RegionNorm, energy_attention

U32 = 2.0 ** -24  # float32 unit roundoff


def float32_bound(terms: int, ops: int = 32) -> float:
    """Relative error bound of a float32 computation whose largest sum has ``terms`` terms."""
    return (terms + ops) * U32


def assert_close_to(value, truth, terms, what=''):
    """``value`` (float32) within float32_bound(terms) of ``truth`` (float64), relative to truth's largest magnitude."""
    err = (value.double() - truth).abs().max().item()
    bound = float32_bound(terms) * truth.abs().max().item()
    assert err <= bound, f'{what}: error {err:.3g} > bound {bound:.3g}'


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
        assert (norm.double()(x.double(), mask.double()) - truth).abs().max() < 1e-12  # exact algebra
    # rounding-level differences only: a cancellation (a sum as total minus the rest) costs 1e-3
    assert err_closed_form <= 4 * err_definition + 1e-6, (err_closed_form, err_definition)


def mixed_block(block, x, region_stats='sample', seed=0, use_sf=True):
    """A DFR block whose masks on ``x`` hold both regions: M_sr follows the channel mean steeply, and
    conv_1's bias puts the median pixel of x's first-half channel mean at the threshold."""
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
                mean = dfr.conv_1(x)[:, :4].mean(dim=1)
                at_threshold = math.log(module.threshold / (1 - module.threshold)) / gain
                dfr.conv_1.bias[:4] += at_threshold - mean.median()
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
    torch.testing.assert_close(skip, expected)
    assert (skip - used(x)[1]).abs().max() > 1e-3


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
