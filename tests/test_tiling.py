import math

import pytest
import torch

from drcnet.archs.drcnet_arch import DRCNet
from drcnet.inference.tiling import axis_weights, restore, tile_starts, tiled_forward
from tests.conftest import photo_tensor
from tolerance import assert_same_up_to_rounding, rounding_gap


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return (10 * torch.log10(1.0 / torch.mean((a.clamp(0, 1) - b.clamp(0, 1)) ** 2))).item()


@pytest.mark.parametrize('size,tile,overlap', [(451, 128, 32), (300, 128, 32), (300, 97, 16), (129, 128, 32),
                                               (50, 128, 32), (200, 40, 39)])
def test_tiles_cover_the_axis_and_stay_inside(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    length = min(tile, size)
    assert starts[0] == 0 and starts[-1] + length == size
    assert all(0 <= s and s + length <= size for s in starts)
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))  # overlap at least as asked
    covered = torch.zeros(size, dtype=torch.float64)
    count = torch.zeros(size, dtype=torch.int64)
    for s, w in zip(starts, axis_weights(starts, length, 'hann')):
        assert w.min() > 0
        covered[s:s + length] += w
        count[s:s + length] += 1
    # where two tiles meet, their ramps cross-fade to one; more tiles on a pixel are normalised later
    pairs = count <= 2
    assert torch.allclose(covered[pairs], torch.ones_like(covered[pairs]))
    assert covered.min() > 0


def test_tiled_identity_is_exact_for_sizes_the_tile_does_not_divide():
    img = photo_tensor('chelsea')  # 300x451
    calls = []

    def fn(x):
        calls.append(tuple(x.shape[-2:]))
        return x * 2 - 0.25

    for tile, overlap in [(128, 32), (97, 16), (300, 8)]:
        calls.clear()
        out = tiled_forward(fn, img, tile, overlap)
        assert out.shape == img.shape
        # each pixel: a weighted sum of at most 4 equal tile values over the sum of their weights
        assert_same_up_to_rounding(out, img * 2 - 0.25, 4 + 4)
        assert set(calls) == {(min(tile, 300), tile)}  # every call sees a full tile, no padding


def test_no_seam_where_tiles_disagree():
    """Each tile returns its own constant (a worst case for seams); the blend must ramp smoothly."""
    img = torch.zeros(1, 3, 300, 451)
    tile, overlap = 128, 32
    counter = iter(range(1000))

    def per_tile_constant(x):
        return torch.full_like(x, float(next(counter)))

    out = tiled_forward(per_tile_constant, img, tile, overlap)
    cols = len(tile_starts(451, tile, overlap))
    largest_jump = float(cols)  # neighbours differ by 1 across columns, by `cols` across rows
    step = max((out[..., 1:, :] - out[..., :-1, :]).abs().max().item(),
               (out[..., :, 1:] - out[..., :, :-1]).abs().max().item())
    # the blend's largest slope, plus the rounding of two neighbouring blends of at most 4 tiles each
    assert step <= largest_jump * math.sin(math.pi / (2 * overlap)) + rounding_gap(4 + 4, out, out)
    assert step < 0.1 * largest_jump  # hard stitching would jump by largest_jump


def test_tiled_drcnet_matches_the_whole_image_on_chelsea():
    clean = photo_tensor('chelsea')  # 300x451
    noisy = (clean + 0.08 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    torch.manual_seed(0)
    net = DRCNet(wf=8, depth=2).eval()
    whole = restore(net, noisy)
    tiled = restore(net, noisy, tile=128, overlap=32)
    assert tiled.shape == whole.shape == clean.shape
    # the network's per-image statistics (instance norm, energy attention) see each tile alone,
    # so tiles are not bit-identical to the whole image; the blend keeps the difference far below 0.05 dB
    assert abs(psnr(tiled, clean) - psnr(whole, clean)) < 0.05
    assert psnr(tiled, whole) > 30.0
    odd = restore(net, noisy[..., :150, :230], tile=97, overlap=16)
    assert odd.shape == (1, 3, 150, 230)
    assert abs(psnr(odd, clean[..., :150, :230]) - psnr(whole[..., :150, :230], clean[..., :150, :230])) < 0.1


def test_single_call_when_the_tile_covers_the_image_and_batch_works():
    img = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    calls = []

    def fn(x):
        calls.append(x.shape)
        return x.flip(1)

    assert torch.equal(tiled_forward(fn, img, tile=64, overlap=8), img.flip(1))
    assert calls == [img.shape]
    calls.clear()
    assert_same_up_to_rounding(tiled_forward(fn, img, tile=24, overlap=8), img.flip(1), 4 + 4)
    assert all(c[0] == 2 for c in calls) and len(calls) == len(tile_starts(40, 24, 8)) * len(tile_starts(56, 24, 8))


def test_bad_tile_settings_are_errors():
    img = torch.zeros(1, 3, 40, 40)
    with pytest.raises(ValueError, match=r'tile \(16\).*overlap \(16\)'):
        tiled_forward(lambda x: x, img, 16, 16)
    with pytest.raises(ValueError, match='window'):
        tiled_forward(lambda x: x, img, 16, 4, window='box')
    with pytest.raises(ValueError, match='keep B, H and W'):
        tiled_forward(lambda x: x[..., ::2, ::2], img, 16, 4)
