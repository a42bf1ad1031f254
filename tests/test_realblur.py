"""drcnet.metrics.realblur: RealBlur's protocol recovers known sub-pixel shifts of a photograph and scores the
aligned pair; test.py uses it for the sets that ask for it."""
import json

import numpy as np
import pytest
import torch
import yaml

from drcnet.archs.drcnet_arch import DRCNet
from drcnet.data.image_io import read_image, write_image
from drcnet.data.samples import load_sample_uint8
from drcnet.engine.checkpoint import save_network
from drcnet.engine.evaluator import evaluate, score
from drcnet.engine.schema import OptionError, validate
from drcnet.metrics import calculate_psnr
from drcnet.metrics.realblur import ecc_align, masked_psnr, masked_ssim, realblur_scores
from drcnet.test import main

SHIFTS = [(0.37, -0.61), (-2.4, 1.55)]  # (dx, dy) in pixels
METRICS = {'psnr': {'type': 'calculate_psnr'}, 'ssim': {'type': 'calculate_ssim'}}


def shifted_pair(name: str, shift, box=(100, 120, 160, 200)):
    """(restored, gt) uint8 crops of a photograph, restored(x, y) = gt(x - dx, y - dy).

    The shift is applied exactly, as a phase ramp on the whole photograph's spectrum (no interpolation);
    the crop keeps well away from the borders, where the spectrum's periodic wrap-around would show.
    """
    src = load_sample_uint8(name).astype(np.float64)
    h, w = src.shape[:2]
    ramp = np.exp(-2j * np.pi * (np.fft.fftfreq(w)[None, :] * shift[0] + np.fft.fftfreq(h)[:, None] * shift[1]))
    moved = np.fft.ifft2(np.fft.fft2(src, axes=(0, 1)) * ramp[..., None], axes=(0, 1)).real
    top, left, bh, bw = box

    def crop(a):
        return np.clip(np.round(a[top:top + bh, left:left + bw]), 0, 255).astype(np.uint8)
    return crop(moved), crop(src)


def displacement(warp: np.ndarray, shape) -> np.ndarray:
    """(H*W, 2) displacement (x, y) that ``warp`` gives each ground-truth pixel."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]]
    points = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    mapped = warp.astype(np.float64) @ points
    return (mapped[:2] / mapped[2] - points[:2]).T


@pytest.mark.parametrize('name', ['chelsea', 'astronaut'])
@pytest.mark.parametrize('shift', SHIFTS)
def test_translation_ecc_recovers_a_known_subpixel_shift(name, shift):
    restored, gt = shifted_pair(name, shift)
    warp = ecc_align(restored, gt, motion='translation').warp
    # OpenCV resamples (inside ECC too) on a grid of 1/32 pixel, and both images are rounded to 8 bits:
    # a shift is known to about that grid, so the bound is one grid step. A missed alignment is off by
    # the whole shift (0.7 px or more here).
    assert warp[0, 2] == pytest.approx(shift[0], abs=1 / 32)
    assert warp[1, 2] == pytest.approx(shift[1], abs=1 / 32)


@pytest.mark.parametrize('shift', SHIFTS)
def test_realblur_protocol_aligns_the_shifted_pair_and_scores_it_far_higher(shift):
    restored, gt = shifted_pair('chelsea', shift)
    al = ecc_align(restored, gt)  # the protocol's homography
    d = displacement(al.warp, gt.shape)
    # a homography's eight parameters also fit the 8-bit noise, which tilts its perspective terms and moves
    # the corners more than the centre: the mean displacement error is bounded at 1/16 px (two grid steps
    # of 1/32 px), the largest at 1/4 px, against shifts of 0.7-2.9 px
    errors = np.hypot(d[:, 0] - shift[0], d[:, 1] - shift[1])
    assert errors.mean() < 1 / 16 and errors.max() < 1 / 4
    # the region the warp covers: all but a band about as wide as the shift along two edges
    assert al.region.shape == gt.shape and set(np.unique(al.region)) == {0.0, 1.0}
    covered = al.region[..., 0].mean()
    assert 1 - (abs(shift[0]) + 1) / gt.shape[1] - (abs(shift[1]) + 1) / gt.shape[0] - 0.01 < covered < 1

    raw = calculate_psnr(restored, gt, 0)
    scores = realblur_scores(restored, gt)
    assert scores['psnr'] > raw + 8  # measured gains are 10-17 dB; the misaligned pair is at 21-29 dB
    assert scores['ssim'] > 0.95
    assert scores == {'psnr': masked_psnr(al.gt, al.restored, al.region),
                      'ssim': masked_ssim(al.gt, al.restored, al.region)}
    assert score(restored, gt, METRICS, False, protocol='realblur') == scores


def test_masked_scores_count_only_the_region():
    rng = np.random.default_rng(0)
    gt = rng.random((40, 48, 3))
    test = np.clip(gt + rng.normal(0, 0.01, gt.shape), 0, 1)
    region = np.ones_like(gt)
    region[:, :8] = 0  # a garbage band outside the region must not count
    garbage = test.copy()
    garbage[:, :8] = 1 - gt[:, :8]
    expected = 10 * np.log10(1 / np.mean((gt[:, 8:] - test[:, 8:]) ** 2))
    assert masked_psnr(gt * region, garbage * region, region) == pytest.approx(expected, rel=1e-12)
    assert masked_ssim(gt * region, garbage * region, region) == pytest.approx(
        masked_ssim(gt * region, test * region, region), abs=1e-3)


def test_motion_and_sizes_are_checked():
    restored, gt = shifted_pair('chelsea', SHIFTS[0])
    with pytest.raises(ValueError, match="motion: 'affine' is not one of homography, translation"):
        ecc_align(restored, gt, motion='affine')
    with pytest.raises(ValueError, match='differ in size'):
        ecc_align(restored[:-1], gt)


def test_only_sets_with_protocol_realblur_are_aligned(tmp_path):
    root = tmp_path / 'datasets'
    restored, gt = shifted_pair('chelsea', SHIFTS[0])
    for name in ('RealBlur_J', 'GoPro'):
        write_image(root / name / 'input' / 'scene.png', restored)
        write_image(root / name / 'target' / 'scene.png', gt)
    weights = tmp_path / 'net.pth'
    torch.manual_seed(0)
    save_network(DRCNet(wf=8, depth=2), weights, {'type': 'DRCNet', 'wf': 8, 'depth': 2})
    sets = {'test_1': ('GoPro', 'standard'), 'test_2': ('RealBlur_J', 'realblur')}
    opts = {'name': 'eval', 'device': 'cpu', 'network_g': {'type': 'DRCNet', 'wf': 8, 'depth': 2},
            'datasets': {k: {'name': n, 'type': 'PairedRestorationDataset', 'dataroot_gt': str(root / n / 'target'),
                             'dataroot_lq': str(root / n / 'input'), 'protocol': p} for k, (n, p) in sets.items()},
            'path': {'pretrain_network_g': str(weights), 'results_root': str(tmp_path / 'results')},
            'val': {'save_img': True, 'pbar': False}}
    (tmp_path / 'test.yml').write_text(yaml.safe_dump(opts))
    assert main(['-opt', str(tmp_path / 'test.yml')]) == 0
    out = tmp_path / 'results' / 'eval'
    rows = {r['dataset']: r for r in json.loads((out / 'metrics.json').read_text())['rows']}
    assert rows['GoPro']['protocol'] == 'RGB' and rows['RealBlur_J']['protocol'] == 'RealBlur-ECC'
    assert '| RealBlur_J | RealBlur-ECC |' in (out / 'metrics.md').read_text()
    for name, protocol in (('GoPro', 'standard'), ('RealBlur_J', 'realblur')):
        saved = np.round(read_image(out / name / 'scene.png') * 255).astype(np.uint8)
        expected = score(saved, gt, METRICS, False, protocol=protocol)
        assert rows[name]['psnr'] == pytest.approx(expected['psnr'], abs=1e-9)
        assert rows[name]['ssim'] == pytest.approx(expected['ssim'], abs=1e-9)


def test_evaluate_labels_the_protocol_column():
    restored, gt = shifted_pair('chelsea', SHIFTS[1])
    loader = [{'lq': torch.from_numpy(restored).permute(2, 0, 1)[None].float() / 255,
               'gt': torch.from_numpy(gt).permute(2, 0, 1)[None].float() / 255, 'lq_path': ['scene']}]
    plain = evaluate(lambda x: x, loader, 'RealBlur_J', pbar=False)
    aligned = evaluate(lambda x: x, loader, 'RealBlur_J', pbar=False, protocol='realblur')
    assert plain['protocol'] == 'RGB' and aligned['protocol'] == 'RealBlur-ECC'
    assert aligned['psnr'] > plain['psnr'] + 8


def _options(**set_keys):
    ds = {'name': 'RealBlur_J', 'type': 'PairedRestorationDataset', 'dataroot_gt': 'gt', 'dataroot_lq': 'lq'}
    return {'name': 'x', 'network_g': {'type': 'DRCNet'}, 'datasets': {'test_1': {**ds, **set_keys}}}


def test_protocol_option_is_checked_with_the_key_named():
    assert validate(_options(), is_train=False)['datasets']['test_1']['protocol'] == 'standard'
    with pytest.raises(OptionError, match=r"datasets.test_1.protocol: 'realblurr' is not one of standard, realblur"):
        validate(_options(protocol='realblurr'), is_train=False)
    with pytest.raises(OptionError, match='datasets.test_1.test_y_channel'):
        validate(_options(protocol='realblur', test_y_channel=True), is_train=False)
    opts = _options(protocol='realblur')
    opts['val'] = {'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4}}}
    with pytest.raises(OptionError, match=r'val.metrics.psnr.crop_border: 4 does not apply to datasets.test_1'):
        validate(opts, is_train=False)
