"""SyntheticDegradationDataset: fresh degradations in training, identical validation across runs."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from drcnet.data.image_io import ImageReadError, write_image
from drcnet.data.samples import load_sample
from drcnet.data.synthetic_dataset import SyntheticDegradationDataset
from drcnet.registry import DATASET_REGISTRY, build

VAL = ['motorcycle_left', 'motorcycle_right']


@pytest.mark.parametrize('degradation', ['gaussian_noise', 'poisson_gaussian', 'rain', 'motion_blur'])
def test_validation_is_identical_across_two_runs(degradation):
    def run(seed):
        ds = SyntheticDegradationDataset(samples=VAL, degradation=degradation, crop_size=96, phase='val', seed=seed)
        return [ds[i] for i in range(len(ds))]
    first, second, other = run(0), run(0), run(1)
    assert len(first) == 2
    for a, b, c in zip(first, second, other):
        assert a['lq'].shape == (3, 96, 96) and a['lq_path'] == b['lq_path']
        assert torch.equal(a['lq'], b['lq']) and torch.equal(a['gt'], b['gt'])
        assert torch.equal(a['gt'], c['gt']) and not torch.equal(a['lq'], c['lq'])
        assert not torch.equal(a['lq'], a['gt'])
    assert not torch.equal(first[0]['lq'] - first[0]['gt'], first[1]['lq'] - first[1]['gt'])


def test_validation_crop_is_the_centre_of_the_clean_photo():
    ds = SyntheticDegradationDataset(samples=['chelsea'], crop_size=100, phase='val', degradation='rain')
    item = ds[0]
    photo = load_sample('chelsea')  # 300 x 451
    expected = photo[100:200, 175:275]
    np.testing.assert_array_equal(item['gt'].numpy().transpose(1, 2, 0), expected)
    assert item['gt_path'] == item['lq_path'] == 'samples/chelsea'
    whole = SyntheticDegradationDataset(samples=['chelsea'], phase='test')[0]
    assert whole['gt'].shape == (3, 300, 451)


def test_gaussian_noise_in_validation_measures_sigma():
    ds = SyntheticDegradationDataset(samples=VAL, sigma=25, crop_size=128, phase='val', quantize=False)
    for i in range(len(ds)):
        item = ds[i]
        assert (item['lq'] - item['gt']).std().item() * 255 == pytest.approx(25, rel=0.07)
    quantized = SyntheticDegradationDataset(samples=VAL, sigma=25, crop_size=128, phase='val')[0]['lq']
    # k / 255 in float32 times 255: a relative rounding of 2 u, 3e-5 at 255; 1e-3 is far from any half-step
    torch.testing.assert_close(quantized * 255, (quantized * 255).round(), atol=1e-3, rtol=0)


def test_training_draws_fresh_degradations_and_crops():
    random.seed(1)
    ds = build(DATASET_REGISTRY, {'type': 'SyntheticDegradationDataset', 'samples': ['astronaut', 'coffee'],
                                  'degradation': ['gaussian_noise', 'motion_blur'], 'sigma': [10, 50],
                                  'gt_size': 48, 'images_per_epoch': 10}, where='datasets.train', phase='train')
    assert len(ds) == 10
    items = [ds[0] for _ in range(6)]
    for item in items:
        assert item['lq'].shape == item['gt'].shape == (3, 48, 48)
        assert item['lq'].dtype == torch.float32 and 0 <= item['lq'].min() and item['lq'].max() <= 1
        assert item['gt_path'] == 'samples/astronaut'
    assert len({round(float(it['gt'].sum()), 3) for it in items}) == 6  # new crops
    residuals = [float((it['lq'] - it['gt']).abs().mean()) for it in items]
    assert len({round(r, 5) for r in residuals}) == 6  # new degradations
    assert ds[3]['gt_path'] == 'samples/coffee'  # index wraps over the images


def test_training_crops_keep_degraded_and_clean_aligned(tmp_path):
    """Blurring a crop with a delta-like kernel is the identity: lq must equal gt pixel for pixel."""
    random.seed(0)  # training crops and degradations draw from python's random, as basicsr's do
    write_image(tmp_path / 'clean' / 'coffee.png', load_sample('astronaut')[300:380, 150:250])
    ds = SyntheticDegradationDataset(source='folder', dataroot_gt=str(tmp_path / 'clean'), degradation='motion_blur',
                                     blur_kernel='linear', blur_length=1, blur_angle=0, gt_size=40, images_per_epoch=12,
                                     quantize=False)
    for i in range(12):
        item = ds[i]
        torch.testing.assert_close(item['lq'], item['gt'], atol=1e-6, rtol=0)
    blurred = SyntheticDegradationDataset(source='folder', dataroot_gt=str(tmp_path / 'clean'),
                                          degradation='motion_blur', blur_kernel='linear', blur_length=15,
                                          gt_size=40, quantize=False)[0]
    assert (blurred['lq'] - blurred['gt']).abs().mean() > 0.01
    # a blurred image keeps its brightness: the borders were blurred with real surroundings
    assert float(blurred['lq'].mean()) == pytest.approx(float(blurred['gt'].mean()), abs=0.03)


def test_folder_source_reads_clean_images_and_names_bad_files(tmp_path):
    folder = tmp_path / 'clean'
    write_image(folder / 'a.png', load_sample('rocket')[:64, :64])
    (folder / 'b.png').write_bytes(b'\x89PNG\r\n\x1a\nbroken')
    ds = SyntheticDegradationDataset(source='folder', dataroot_gt=str(folder), phase='val', degradation='rain')
    assert ds[0]['gt_path'].endswith('a.png')
    with pytest.raises(ImageReadError, match='b.png'):
        ds[1]
    with pytest.raises(ValueError, match='no images'):
        (tmp_path / 'empty').mkdir()
        SyntheticDegradationDataset(source='folder', dataroot_gt=str(tmp_path / 'empty'), phase='val')
    with pytest.raises(FileNotFoundError, match='missing'):
        SyntheticDegradationDataset(source='folder', dataroot_gt=str(tmp_path / 'missing'), phase='val')


def test_bad_options_name_the_key():
    with pytest.raises(ValueError, match="samples: 'astronot'.*did you mean 'astronaut'"):
        SyntheticDegradationDataset(samples=['astronot'], phase='val')
    with pytest.raises(ValueError, match="degradation: 'gaussian'"):
        SyntheticDegradationDataset(degradation='gaussian', phase='val')
    with pytest.raises(ValueError, match='crop_size'):
        SyntheticDegradationDataset(crop_size=64, gt_size=64)
    with pytest.raises(ValueError, match='images_per_epoch'):
        SyntheticDegradationDataset(images_per_epoch=100, phase='val')
    with pytest.raises(ValueError, match='gt_size'):
        SyntheticDegradationDataset(phase='train')
    with pytest.raises(ValueError, match='gt_size 400 is larger than sample chelsea'):
        SyntheticDegradationDataset(samples=['chelsea'], gt_size=400)
    with pytest.raises(ValueError, match='sigma'):
        SyntheticDegradationDataset(sigma=[40, 10], phase='val')
    with pytest.raises(ValueError, match="rain: 'storm'"):
        SyntheticDegradationDataset(degradation='rain', rain='storm', phase='val')
    with pytest.raises(ValueError, match='dataroot_gt'):
        SyntheticDegradationDataset(source='folder', phase='val')
    with pytest.raises(ValueError, match='rain_dnsity'):
        build(DATASET_REGISTRY, {'type': 'SyntheticDegradationDataset', 'rain_dnsity': 0.01}, where='datasets.val',
              phase='val')


def test_rain_options_reach_the_streaks():
    light = SyntheticDegradationDataset(samples=['coffee'], degradation='rain', crop_size=128, phase='val')[0]
    dense = SyntheticDegradationDataset(samples=['coffee'], degradation='rain', rain_density=0.01, crop_size=128,
                                        phase='val')[0]
    heavy = SyntheticDegradationDataset(samples=['coffee'], degradation='rain', rain='heavy', crop_size=128,
                                        phase='val')[0]
    amount = [float((x['lq'] - x['gt']).clamp(min=0).mean()) for x in (light, dense, heavy)]
    assert amount[0] < amount[1] and amount[0] < amount[2]
    assert float((light['lq'] - light['gt']).min()) >= -1 / 255  # streaks only brighten (up to rounding)
