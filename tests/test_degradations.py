"""drcnet.data.degradations: each recipe measures as DEGRADATIONS.md asks."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from drcnet import _compat  # noqa: F401
from basicsr.metrics import calculate_psnr
from drcnet.data import degradations as D
from drcnet.data.samples import load_sample

PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket')


def _centre(img: np.ndarray, size: int = 256) -> np.ndarray:
    h, w = img.shape[:2]
    return np.ascontiguousarray(img[(h - size) // 2:(h + size) // 2, (w - size) // 2:(w + size) // 2])


@pytest.fixture(scope='module')
def crops():
    return [_centre(load_sample(n)) for n in PHOTOS]


def _mean_psnr(crops, degrade, y_channel=False, reps=2, seed=0) -> float:
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(reps):
        for clean in crops:
            out = D.quantize(degrade(clean, rng))
            a, b = (out[..., ::-1], clean[..., ::-1]) if y_channel else (out, clean)  # basicsr's Y wants BGR
            scores.append(calculate_psnr(a * 255, b * 255, crop_border=0, input_order='HWC',
                                         test_y_channel=y_channel))
    return float(np.mean(scores))


@pytest.mark.parametrize('sigma', [15, 25, 50])
def test_gaussian_noise_std_within_5_percent_on_flat_image(sigma):
    flat = np.full((256, 256, 3), 0.5, np.float32)
    noisy = D.gaussian_noise(flat, sigma, np.random.default_rng(sigma))
    measured = (noisy - flat).std() * 255
    assert abs(measured - sigma) <= 0.05 * sigma, measured
    assert abs((noisy - flat).mean()) < 0.01


def test_gaussian_noise_blind_range_draws_inside_it():
    flat = np.full((64, 64, 3), 0.5, np.float32)
    rng = np.random.default_rng(0)
    stds = [(D.random_gaussian_noise(flat, rng, sigma=[5, 30]) - flat).std() * 255 for _ in range(40)]
    assert 4.0 < min(stds) < 12 and 23 < max(stds) < 31.5
    assert len({round(s, 3) for s in stds}) == 40  # a fresh sigma per call


def test_gaussian_noise_psnr_anchor(crops):
    assert _mean_psnr(crops, lambda x, r: D.gaussian_noise(x, 25, r)) == pytest.approx(20.6, abs=0.3)


def test_poisson_gaussian_variance_is_affine_in_linear_light():
    a, b = 0.004, 2e-4
    rng = np.random.default_rng(1)
    for level in (0.05, 0.2, 0.5):
        srgb = float(D.linear_to_srgb(np.array([level], np.float32))[0])
        flat = np.full((256, 256, 3), srgb, np.float32)
        lin = D.srgb_to_linear(D.poisson_gaussian_noise(flat, a, b, rng))
        assert lin.mean() == pytest.approx(level, rel=0.03)
        assert lin.var() == pytest.approx(a * level + b, rel=0.06), level


def test_poisson_gaussian_psnr_anchors(crops):
    heavy = _mean_psnr(crops, lambda x, r: D.poisson_gaussian_noise(x, 0.01, 1e-4, r))
    light = _mean_psnr(crops, lambda x, r: D.poisson_gaussian_noise(x, 0.002, 1e-5, r))
    assert heavy == pytest.approx(24.4, abs=0.7)
    assert light == pytest.approx(31.5, abs=0.7)


def _streak_direction(layer: np.ndarray) -> np.ndarray:
    """Unit vector (x, y) along which ``layer`` varies least: the streak direction."""
    gx = cv2.Sobel(layer, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(layer, cv2.CV_64F, 0, 1, ksize=3)
    tensor = np.array([[np.sum(gx * gx), np.sum(gx * gy)], [np.sum(gx * gy), np.sum(gy * gy)]])
    values, vectors = np.linalg.eigh(tensor)
    return vectors[:, 0]


@pytest.mark.parametrize('angle', [-20.0, 0.0, 15.0])
def test_rain_adds_bright_streaks_along_the_asked_angle(angle):
    clean = _centre(load_sample('coffee'))
    out, layer = D.rain(clean, np.random.default_rng(3), 'light', angle=angle, return_layer=True)
    diff = out - clean
    assert diff.min() >= -1e-6  # additive: never darkens
    streaked = diff.max(axis=2) > 0.05
    assert 0.005 < streaked.mean() < 0.3  # sparse
    assert np.percentile(diff.max(axis=2)[streaked], 90) > 0.2  # bright
    direction = _streak_direction(layer)
    expected = np.array([math.sin(math.radians(angle)), -math.cos(math.radians(angle))])
    assert abs(direction @ expected) > math.cos(math.radians(5)), (direction, expected)


def test_rain_presets_land_on_their_y_psnr(crops):
    light = _mean_psnr(crops, lambda x, r: D.rain(x, r, 'light'), y_channel=True, reps=4)
    heavy = _mean_psnr(crops, lambda x, r: D.rain(x, r, 'heavy'), y_channel=True, reps=4)
    assert 26.0 <= light <= 29.0, light
    assert 12.0 <= heavy <= 14.0, heavy
    with pytest.raises(ValueError, match='drizzle'):
        D.rain(crops[0], np.random.default_rng(0), 'drizzle')


@pytest.mark.parametrize('length,angle', [(5, 0.0), (15, 37.0), (25, 90.0), (11, 135.0)])
def test_linear_kernels_are_normalised_centred_lines(length, angle):
    k = D.linear_motion_kernel(length, angle)
    assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    assert k.min() >= 0 and k.sum() == pytest.approx(1.0, abs=1e-5)
    ys, xs = np.mgrid[:k.shape[0], :k.shape[1]]
    c = (k.shape[0] - 1) / 2
    assert (k * xs).sum() == pytest.approx(c, abs=0.05) and (k * ys).sum() == pytest.approx(c, abs=0.05)
    # spread along the motion equals a box of ``length`` (std L/sqrt(12)), across it is under a pixel
    t = math.radians(angle)
    along = (xs - c) * math.cos(t) - (ys - c) * math.sin(t)
    across = (xs - c) * math.sin(t) + (ys - c) * math.cos(t)
    assert math.sqrt((k * along ** 2).sum()) == pytest.approx(length / math.sqrt(12), rel=0.06)
    assert math.sqrt((k * across ** 2).sum()) < 0.5


def test_trajectory_kernels_are_normalised_centred_and_varied():
    kernels = [D.trajectory_kernel(np.random.default_rng(s), size=31) for s in range(8)]
    for k in kernels:
        assert k.shape == (31, 31) and k.min() >= 0
        assert k.sum() == pytest.approx(1.0, abs=1e-5)
        ys, xs = np.mgrid[:31, :31]
        assert (k * xs).sum() == pytest.approx(15, abs=0.6) and (k * ys).sum() == pytest.approx(15, abs=0.6)
        assert (k > 1e-4).sum() > 5  # a path, not a point
    assert not np.allclose(kernels[0], kernels[1])
    for kind in ('linear', 'trajectory', 'mixed'):
        k = D.random_motion_kernel(np.random.default_rng(0), kind=kind)
        assert k.sum() == pytest.approx(1.0, abs=1e-5)


def test_blur_keeps_flat_images_and_mean_brightness(crops):
    flat = np.full((64, 64, 3), 0.3, np.float32)
    k = D.trajectory_kernel(np.random.default_rng(2))
    np.testing.assert_allclose(D.blur(flat, k), flat, atol=1e-5)  # normalised, reflect borders
    out = D.blur(crops[0], D.linear_motion_kernel(15, 30))
    assert out.mean() == pytest.approx(crops[0].mean(), abs=0.01)


def test_motion_blur_psnr_is_in_range_of_the_recipe(crops):
    linear = _mean_psnr(crops, lambda x, r: D.blur(x, D.linear_motion_kernel(15, r.uniform(0, 180))), reps=3)
    shake = _mean_psnr(crops, lambda x, r: D.blur(x, D.trajectory_kernel(r, 31)), reps=3)
    assert 22.0 <= linear <= 25.5, linear
    assert 22.0 <= shake <= 26.0, shake


def test_same_seed_same_output_other_seed_other_output(crops):
    img = crops[1][:96, :96]
    for fn in (lambda r: D.random_gaussian_noise(img, r, [0, 55]),
               lambda r: D.random_poisson_gaussian_noise(img, r),
               lambda r: D.rain(img, r, 'heavy'),
               lambda r: D.random_motion_blur(img, r, noise_sigma=[1, 2])):
        a, b, c = fn(np.random.default_rng(7)), fn(np.random.default_rng(7)), fn(np.random.default_rng(8))
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
        assert a.dtype == np.float32 and a.shape == img.shape and 0 <= a.min() and a.max() <= 1


def test_bad_parameters_name_themselves():
    img = np.zeros((8, 8, 3), np.float32)
    with pytest.raises(ValueError, match='sigma'):
        D.random_gaussian_noise(img, np.random.default_rng(0), sigma=[30, 10])
    with pytest.raises(ValueError, match='a > 0'):
        D.poisson_gaussian_noise(img, 0, 1e-4, np.random.default_rng(0))
    with pytest.raises(ValueError, match='kind'):
        D.random_motion_kernel(np.random.default_rng(0), kind='zoom')
    with pytest.raises(ValueError, match='HxWx3'):
        D.gaussian_noise(np.zeros((8, 8), np.float32), 5, np.random.default_rng(0))
