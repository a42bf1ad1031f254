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
