"""The compiled CPU kernels of the DFR block against the reference computations, and their fallback."""
import copy
import logging
import os

import pytest
import torch
import torch.nn.functional as F

from drcnet.archs import cpu_kernels
from drcnet.archs.dfr_block import AdaptiveFeatureNorm, DFRBlock, RegionNorm, energy_attention_reference
from drcnet.archs.drcnet_arch import DRCNet


@pytest.fixture(scope='module')
def ops():
    """The kernels; a machine with a C++ compiler must build them (the test says why it could not)."""
    if os.environ.get(cpu_kernels.ENV, '1').strip().lower() in ('0', 'false', 'no', 'off'):
        pytest.skip(f'{cpu_kernels.ENV} turns the CPU kernels off')
    built = cpu_kernels.kernels()
    assert built is not None, 'the DFR CPU kernels did not build: see the warning logged above'
    return built


def maps(shape, seed, layout, spread=1.0, offset=1.0):
    """Features with per-channel offsets, as a dense map ('planar', 'channels_last') or as the first half of
    the channels of a map twice as wide ('planar_slice', 'channels_last_slice', as the DFR block norms)."""
    g = torch.Generator().manual_seed(seed)
    b, c, h, w = shape
    wide = 2 * c if layout.endswith('slice') else c
    x = torch.randn(b, wide, h, w, generator=g) * spread + torch.linspace(-offset, offset, wide).view(1, -1, 1, 1)
    if layout.startswith('channels_last'):
        x = x.contiguous(memory_format=torch.channels_last)
    return x, x[:, :c]


def blob_mask(shape, seed):
    """A (B, 1, H, W) bool mask of smooth blobs; image 1 (if any) has an empty degraded region, image 2
    (if any) a degraded region of three pixels only."""
    g = torch.Generator().manual_seed(seed)
    b, _, h, w = shape
    noise = F.avg_pool2d(torch.rand(b, 1, h + 4, w + 4, generator=g), 5, stride=1)
    mask = noise > noise.median()
    if b > 1:
        mask[1] = False
    if b > 2:
        mask[2] = False
        mask[2, 0, 0, :3] = True
    return mask


def affine_norm(channels, seed=0):
    torch.manual_seed(seed)
    norm = RegionNorm(channels, 'sample')
    with torch.no_grad():
        norm.bn_norm.weight.uniform_(0.5, 1.5)
        norm.bn_norm.bias.uniform_(-0.5, 0.5)
    return norm


def norm_reference64(norm, x, mask, gamma, beta):
    """The region norm's definition and its modulation, in float64."""
    with torch.no_grad():
        ref = copy.deepcopy(norm).double().reference(x.double(), mask.double())
        return ref * (1 + gamma.double()) + beta.double()


@pytest.mark.parametrize('layout', ['planar', 'channels_last', 'planar_slice', 'channels_last_slice'])
@pytest.mark.parametrize('shape', [(3, 5, 9, 11), (1, 16, 70, 66), (2, 9, 1, 1)])
def test_region_norm_kernel_equals_the_reference(ops, layout, shape):
    # 5 and 9 channels: the blocks of eight and the channels left over; 70 x 66 pixels: several chunks
    norm = affine_norm(shape[1])
    full, x = maps(shape, seed=1, layout=layout)
    mask = blob_mask((shape[0], 1) + shape[2:], seed=2)
    g = torch.Generator().manual_seed(3)
    affine = torch.randn(shape[0], 2, *shape[2:], generator=g)
    gamma, beta = affine[:, :1], affine[:, 1:]  # the strided halves of one map, as the block passes them
    expected = norm_reference64(norm, x, mask, gamma, beta).float()
    before = full.clone()
    with torch.no_grad():
        out = ops.region_norm_(x, mask, gamma, beta, norm.bn_norm.weight, norm.bn_norm.bias)
    assert out.data_ptr() == x.data_ptr()
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full[:, shape[1]:], before[:, shape[1]:], atol=0, rtol=0)  # the rest untouched


def test_region_norm_kernel_is_as_accurate_as_the_reference_on_ill_conditioned_features(ops):
    # channel offsets 50x the spread, a 3-pixel region and an empty one: float32 rounding shows
    norm = affine_norm(5)
    _, x = maps((3, 5, 8, 13), seed=7, layout='channels_last_slice', spread=0.1, offset=5.0)
    mask = blob_mask((3, 1, 8, 13), seed=8)
    zeros = torch.zeros(3, 1, 8, 13)
    with torch.no_grad():
        truth = norm_reference64(norm, x, mask, zeros, zeros)
        err_ref = (norm.reference(x, mask.float()).double() - truth).abs().max()
        out = ops.region_norm_(x.clone(), mask, zeros, zeros, norm.bn_norm.weight, norm.bn_norm.bias)
    assert (out.double() - truth).abs().max() <= 4 * err_ref + 1e-6


def test_region_norm_kernel_result_does_not_depend_on_the_threads(ops):
    norm = affine_norm(8)
    _, x = maps((1, 8, 96, 96), seed=4, layout='channels_last_slice')
    mask = blob_mask((1, 1, 96, 96), seed=5)
    gamma = beta = torch.zeros(1, 1, 96, 96)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            with torch.no_grad():
                results.append(ops.region_norm_(x.clone(), mask, gamma, beta, norm.bn_norm.weight, norm.bn_norm.bias))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0], results[1])


@pytest.mark.parametrize('layout', ['planar', 'channels_last_slice'])
def test_channel_stats_kernel_is_the_channel_mean_and_maximum(ops, layout):
    _, x = maps((2, 11, 13, 70), seed=6, layout=layout)
    x[1, 4, 2, 3] = float('nan')
    stats = ops.channel_stats(x)
    expected = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
    torch.testing.assert_close(stats, expected, atol=1e-6, rtol=1e-6, equal_nan=True)
    assert torch.isnan(stats[1, :, 2, 3]).all()  # a NaN channel makes both statistics NaN, as in PyTorch


@pytest.mark.parametrize('layout', ['planar', 'channels_last', 'channels_last_slice'])
@pytest.mark.parametrize('shape', [(2, 16, 37, 29), (2, 5, 70, 66), (1, 3, 1, 1)])
def test_energy_attention_kernels_equal_the_formula(ops, layout, shape):
    full, x = maps(shape, seed=9, layout=layout, spread=2.0)
    expected = F.leaky_relu(energy_attention_reference(x.double(), 1e-4), 0.2)
    other = torch.randn(shape, generator=torch.Generator().manual_seed(10))
    if layout.startswith('channels_last'):
        other = other.contiguous(memory_format=torch.channels_last)
    x_before, other_before = x.clone(), other.clone()
    product = ops.energy_attention_mul_(other, x, 1e-4, 0.2)
    assert product.data_ptr() == other.data_ptr() and torch.equal(x, x_before)
    torch.testing.assert_close(product.double(), other_before.double() * expected, atol=1e-5, rtol=1e-5)
    ops.energy_attention_(x, 1e-4, 0.2)
    torch.testing.assert_close(x.double(), expected, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(x).all()


@pytest.mark.parametrize('shape', [(2, 2, 13, 70), (1, 2, 3, 5), (1, 2, 1, 1), (1, 2, 40, 9)])
def test_spatial_response_kernel_equals_the_convolutions(ops, shape):
    # rows and columns fewer than the kernel's 7, widths that are not a multiple of eight
    torch.manual_seed(11)
    sa = AdaptiveFeatureNorm(4).sa
    with torch.no_grad():
        sa.conv1.weight.mul_(8)  # responses all over (0, 1), saturated ones included
    stats = torch.randn(shape) * 2
    weight = torch.cat([sa.gamma_conv.weight, sa.beta_conv.weight])
    bias = torch.cat([sa.gamma_conv.bias, sa.beta_conv.bias])
    with torch.no_grad():
        response, affine = ops.spatial_response(stats, sa.conv1.weight, weight, bias)
        expected = torch.sigmoid(F.conv2d(stats.double(), sa.conv1.weight.double(), padding=3))
        torch.testing.assert_close(response.double(), expected, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(affine.double(), F.conv2d(expected, weight.double(), bias.double(), padding=3),
                                   atol=1e-5, rtol=1e-5)
        stats[0, 0, 0, 0] = float('nan')
        assert torch.isnan(ops.spatial_response(stats, sa.conv1.weight, weight, bias)[0][0, 0, 0, 0])


def test_kernels_reject_maps_they_cannot_read_and_name_them(ops):
    x = torch.randn(1, 4, 6, 6)
    mask = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
    affine = torch.zeros(1, 1, 6, 6)
    w, b = torch.ones(4), torch.zeros(4)
    with pytest.raises(RuntimeError, match='x: expected a Float CPU map, got Double'):
        ops.region_norm_(x.double(), mask, affine, affine, w, b)
    with pytest.raises(RuntimeError, match='mask: expected a Bool CPU map, got Float'):
        ops.region_norm_(x, mask.float(), affine, affine, w, b)
    with pytest.raises(RuntimeError, match='gamma: expected 1 channel'):
        ops.region_norm_(x, mask, torch.zeros(1, 2, 6, 6), affine, w, b)
    with pytest.raises(RuntimeError, match='beta: expected 1 map'):
        ops.region_norm_(x, mask, affine, torch.zeros(1, 1, 6, 5), w, b)
    with pytest.raises(RuntimeError, match='weight and bias: expected 4'):
        ops.region_norm_(x, mask, affine, affine, torch.ones(3), b)
    with pytest.raises(RuntimeError, match='x: its pixels must be evenly spaced'):
        ops.channel_stats(x[:, :, :, :3])
    with pytest.raises(RuntimeError, match='product: expected 4 channel'):
        ops.energy_attention_mul_(torch.zeros(1, 3, 6, 6), x, 1e-4, 0.2)
    with pytest.raises(RuntimeError, match='stats: expected 2 channel'):
        ops.spatial_response(x, torch.ones(1, 2, 7, 7), torch.ones(2, 1, 7, 7), torch.ones(2))
    with pytest.raises(RuntimeError, match=r'affine weight: expected .* of shape \[2, 1, 7, 7\]'):
        ops.spatial_response(x[:, :2], torch.ones(1, 2, 7, 7), torch.ones(2, 1, 5, 5), torch.ones(2))


def restore(net, x):
    with torch.inference_mode():
        return net(x)


@pytest.mark.parametrize('block', ['dfr', 'sf_ea', 'ea'])
@pytest.mark.parametrize('channels_last', [True, False])
def test_network_restores_the_same_with_and_without_kernels(ops, block, channels_last, photo, monkeypatch):
    torch.manual_seed(0)
    net = DRCNet(wf=8, depth=3, block=block).eval()
    net.cpu_channels_last = channels_last  # the blocks then see planar maps and slices
    # a steep spatial response, so that the masks hold both regions
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, AdaptiveFeatureNorm):
                module.sa.conv1.weight.mul_(20)
    x = torch.cat([photo('chelsea', (48, 64)), photo('coffee', (48, 64))])
    fast = restore(net, x)
    monkeypatch.setattr(cpu_kernels, 'kernels', lambda: None)
    torch.testing.assert_close(fast, restore(net, x), atol=1e-5, rtol=1e-5)


def test_block_uses_no_kernel_for_pooled_statistics_or_autocast(ops, monkeypatch):
    calls = []

    class Spy:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(ops, name)

    monkeypatch.setattr(cpu_kernels, 'kernels', lambda: Spy())
    x = torch.randn(2, 6, 10, 12)
    with torch.no_grad():
        DFRBlock(6, 8, downsample=False, region_stats='batch')(x)
        assert 'region_norm_' not in calls and 'energy_attention_mul_' in calls
        calls.clear()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            DFRBlock(6, 8, downsample=False)(x)
        assert calls == []
        DFRBlock(6, 8, downsample=False)(x)
        assert 'region_norm_' in calls


@pytest.fixture
def fresh_kernels(monkeypatch):
    cpu_kernels.kernels.cache_clear()
    yield monkeypatch
    cpu_kernels.kernels.cache_clear()


def test_kernels_can_be_turned_off_and_a_bad_setting_is_named(fresh_kernels):
    fresh_kernels.setenv(cpu_kernels.ENV, '0')
    assert cpu_kernels.kernels() is None
    cpu_kernels.kernels.cache_clear()
    fresh_kernels.setenv(cpu_kernels.ENV, 'sometimes')
    with pytest.raises(ValueError, match="DRCNET_CPU_KERNELS='sometimes'"):
        cpu_kernels.kernels()


def test_a_failed_build_falls_back_with_the_compiler_error(fresh_kernels, tmp_path, caplog):
    broken = tmp_path / 'dfr_cpu.cpp'
    broken.write_text('#include <ATen/ATen.h>\nint broken( {\n')
    fresh_kernels.setenv(cpu_kernels.ENV, '1')
    fresh_kernels.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path / 'build'))
    fresh_kernels.setattr(cpu_kernels, 'SOURCE', broken)
    with caplog.at_level(logging.WARNING, logger='basicsr'):
        assert cpu_kernels.kernels() is None
    message = caplog.text
    assert 'DFR CPU kernels unavailable' in message and 'error' in message and 'DRCNET_CPU_KERNELS=0' in message
