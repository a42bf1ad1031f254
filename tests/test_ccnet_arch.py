"""CCNet: the authors' state-dict layout and parameter counts per task, the strip attention against a direct
formula, any input size, batch independence and the float32 islands under CPU autocast."""
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from drcnet.archs.ccnet_arch import (CCNET_CONFIGS, LDIM, MIN_SIDE, STRIP_KERNELS, CCNet, ChannelLayerNorm,
                                     InstanceNorm2dFloat32, StripLayer)
from drcnet.engine.checkpoint import load_network

# (key, shape) lists of the authors' networks as built by their code, one file per task configuration
STATE_DICTS = Path(__file__).parent / 'fixtures' / 'peer_state_dicts'  # copies of the spec's lists

# PEERS.md 2.3: (state-dict list, parameters measured on the authors' code, state-dict entries)
AUTHORS = {'deblur': ('CCNet_Deblur.txt', 11_173_509, 884), 'desnow': ('CCNet_Desnow.txt', 4_757_589, 404),
           'dehaze': ('CCNet_ITS.txt', 4_264_529, 308)}


def authors_list(name):
    lines = (STATE_DICTS / name).read_text().splitlines()
    return [tuple(line.split('\t')) for line in lines[1:]]


@pytest.mark.parametrize('task', sorted(AUTHORS))
def test_each_task_configuration_has_the_authors_keys_shapes_and_parameter_count(task):
    name, params, entries = AUTHORS[task]
    net = CCNet(**CCNET_CONFIGS[task])
    ours = [(key, str(tuple(value.shape))) for key, value in net.state_dict().items()]
    assert ours == authors_list(name)
    assert len(ours) == entries
    assert sum(p.numel() for p in net.parameters()) == params


def test_defaults_are_the_deblurring_configuration():
    assert CCNET_CONFIGS['deblur'] == {'base_channel': 36, 'num_res': 16}
    net = CCNet()
    assert len(net.Encoder[0].layers) == 16 and net.feat_extract[0].main[0].out_channels == 36


def test_an_authors_checkpoint_loads_strictly_and_restores_the_same(tmp_path):
    torch.manual_seed(0)
    authors = CCNet(**CCNET_CONFIGS['dehaze'])
    for p in authors.parameters():  # gamma starts at zero; make every tensor matter
        p.data.normal_(0, 0.02)
    path = tmp_path / 'model.pkl'
    torch.save({'model': authors.state_dict()}, path)  # the authors' checkpoint format
    ours = CCNet(**CCNET_CONFIGS['dehaze'])
    report = load_network(ours, path, param_key='auto', strict=True)
    assert report['param_key'] == 'model' and report['loaded'] == AUTHORS['dehaze'][2]
    for key, value in authors.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key


def reflect_strip_oracle(x, taps, dilation, along):
    """Float64 numpy: each image's channels filtered by its own taps along one axis, mirrored borders."""
    x, taps = x.detach().double().numpy(), taps.detach().double().numpy()
    k = taps.shape[1]
    pad = dilation * (k - 1) // 2
    axis = 3 if along == 'w' else 2
    widths = [(0, 0)] * 4
    widths[axis] = (pad, pad)
    padded = np.pad(x, widths, mode='reflect')
    out = np.zeros_like(x)
    length = x.shape[axis]
    for b in range(x.shape[0]):
        for t in range(k):
            window = np.take(padded[b:b + 1], np.arange(t * dilation, t * dilation + length), axis=axis)
            out[b:b + 1] += taps[b, t] * window
    return torch.from_numpy(out)


@pytest.mark.parametrize('along', ['w', 'h'])
@pytest.mark.parametrize('kernel_size, dilation', [(7, 1), (11, 6)])
def test_strip_layer_is_a_per_image_strip_filter_with_sigmoid_taps_of_the_pooled_input(along, kernel_size, dilation):
    torch.manual_seed(0)
    layer = StripLayer(5, kernel_size, dilation, along).double()
    x = torch.randn(3, 5, 33, 37, dtype=torch.float64)
    taps = torch.sigmoid(torch.einsum('kc,bc->bk', layer.conv.weight[:, :, 0, 0], x.mean(dim=(2, 3))))
    expected = reflect_strip_oracle(x, taps, dilation, along)
    # float64, sums of 11 products of O(1) values: rounding near 1e-15; 1e-12 leaves room for the order of sums
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-12)


def test_ldim_filters_along_w_then_h_and_blends_with_gamma_and_beta():
    torch.manual_seed(0)
    ldim = LDIM(4, 7, 4).double()
    ldim.gamma.data.normal_()
    ldim.beta.data.normal_()
    x = torch.randn(2, 4, 20, 24, dtype=torch.float64)
    out = x
    for layer in (*ldim.H_spatial_att, *ldim.W_spatial_att):
        out = layer(out)
    assert [layer.along for layer in ldim.H_spatial_att] == ['w', 'w']  # the "H" branch runs along W
    assert [layer.dilation for layer in ldim.W_spatial_att] == [1, 4]
    torch.testing.assert_close(ldim(x), ldim.gamma * out + ldim.beta * x, rtol=0, atol=0)
    fresh = LDIM(4, 7, 4).double()
    torch.testing.assert_close(fresh(x), x, rtol=0, atol=0)  # gamma 0, beta 1 at initialisation


def test_the_minimum_side_is_where_the_widest_strip_can_still_mirror_at_quarter_scale():
    assert MIN_SIDE == 124
    k, d = STRIP_KERNELS[0]
    layer = StripLayer(2, k, d, 'w')
    layer(torch.rand(1, 2, 8, MIN_SIDE // 4))
    with pytest.raises(RuntimeError):  # what the authors' network hits below 124 pixels
        layer(torch.rand(1, 2, 8, MIN_SIDE // 4 - 1))


@pytest.mark.parametrize('size', [(1, 1), (5, 7), (50, 70), (123, 126)])
def test_any_input_size_gives_the_three_scales_cropped_to_ceil(size):
    torch.manual_seed(0)
    net = CCNet(base_channel=4, num_res=1)
    h, w = size
    outs = net(torch.rand(2, 3, h, w))
    assert [tuple(o.shape) for o in outs] == [(2, 3, -(-h // 4), -(-w // 4)), (2, 3, -(-h // 2), -(-w // 2)),
                                               (2, 3, h, w)]
    assert all(torch.isfinite(o).all() for o in outs)


def test_each_image_is_restored_independently_of_its_batch_neighbours():
    torch.manual_seed(0)
    net = CCNet(base_channel=4, num_res=1).double()
    for name, p in net.named_parameters():
        if name.endswith('gamma'):  # let the per-image strip filters reach the output
            p.data.normal_()
    x = torch.rand(3, 3, 30, 26, dtype=torch.float64)
    together = net(x)
    for i in range(3):
        alone = net(x[i:i + 1])
        for a, b in zip(alone, together):
            # float64 (eps 2.2e-16) through ~40 layers of sums of < 2000 products: error far below 1e-10
            torch.testing.assert_close(a, b[i:i + 1], rtol=0, atol=1e-10)


def test_channel_layer_norm_equals_layer_norm_over_the_channels():
    torch.manual_seed(0)
    norm = ChannelLayerNorm(6).double()
    norm.weight.data.normal_()
    norm.bias.data.normal_()
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64) * 3 + 1
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.weight, norm.bias, 1e-5).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expected, rtol=0, atol=1e-12)  # float64, sums of 6 terms


@pytest.mark.parametrize('module', [ChannelLayerNorm(8), InstanceNorm2dFloat32(8, affine=True)],
                         ids=['channel_layer_norm', 'instance_norm'])
def test_normalisation_statistics_stay_in_float32_under_fp16_autocast(module):
    # activations of a few hundred square to more than fp16's largest value (65504)
    torch.manual_seed(0)
    x = (torch.randn(2, 8, 9, 11) * 300).half()
    expected = module(x.float())
    with torch.autocast('cpu', dtype=torch.float16):
        out = module(x)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    # the only error left is rounding the float32 result to fp16's 11-bit significand: 2**-11 relative
    torch.testing.assert_close(out.float(), expected, rtol=2 ** -11, atol=2 ** -24)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16], ids=['bf16', 'fp16'])
def test_the_network_trains_under_cpu_autocast(dtype):
    torch.manual_seed(0)
    net = CCNet(base_channel=4, num_res=1)
    x = torch.rand(1, 3, 27, 41)
    with torch.autocast('cpu', dtype=dtype):
        outs = net(x)
    assert [o.shape[-2:] for o in outs] == [(7, 11), (14, 21), (27, 41)]
    sum(o.float().square().mean() for o in outs).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_invalid_widths_are_named():
    with pytest.raises(ValueError, match='base_channel'):
        CCNet(base_channel=6)
    with pytest.raises(ValueError, match='num_res'):
        CCNet(base_channel=8, num_res=0)
