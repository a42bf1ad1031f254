"""Synthetic degradations for clean photographs: pure functions of an image and a seeded generator.

Every function takes float32 RGB HxWx3 in [0, 1] and a ``numpy.random.Generator`` and returns a new
float32 array in [0, 1]; nothing is read from global random state. Recipes and the numbers they are
calibrated against are in the project's DEGRADATIONS.md: additive Gaussian noise, Poisson-Gaussian
camera noise in linear light (Foi et al. 2008), additive rain-streak layers (Rain100L/H-like), and
motion blur with linear or camera-shake trajectory kernels (Boracchi and Foi 2012).
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import cv2
import numpy as np

__all__ = ['RAIN_PRESETS', 'DEGRADATIONS', 'blur', 'draw_uniform', 'draw_log_uniform', 'gaussian_noise',
           'linear_motion_kernel', 'linear_to_srgb', 'line_kernel', 'poisson_gaussian_noise', 'quantize',
           'rain', 'rain_layer', 'random_gaussian_noise', 'random_motion_blur', 'random_motion_kernel',
           'random_poisson_gaussian_noise', 'srgb_to_linear', 'trajectory_kernel']

Range = Union[float, int, Sequence[float]]

DEGRADATIONS = ('gaussian_noise', 'poisson_gaussian', 'rain', 'motion_blur')


# ----------------------------------------------------------------------------------------------- helpers
def _as_range(spec: Range, name: str) -> tuple:
    """A number as (x, x) or a two-element [lo, hi] as (lo, hi); anything else is an error naming ``name``."""
    if isinstance(spec, (int, float, np.integer, np.floating)) and not isinstance(spec, bool):
        return float(spec), float(spec)
    try:
        lo, hi = (float(v) for v in spec)
    except (TypeError, ValueError):
        raise ValueError(f'{name}: expected a number or a [low, high] pair, got {spec!r}') from None
    if lo > hi:
        raise ValueError(f'{name}: low {lo} is above high {hi}')
    return lo, hi


def draw_uniform(spec: Range, rng: np.random.Generator, name: str = 'value') -> float:
    """``spec`` itself when a number, else a uniform draw from the [low, high] pair."""
    lo, hi = _as_range(spec, name)
    return lo if lo == hi else float(rng.uniform(lo, hi))


def draw_log_uniform(spec: Range, rng: np.random.Generator, name: str = 'value') -> float:
    """``spec`` itself when a number, else a log-uniform draw from the positive [low, high] pair."""
    lo, hi = _as_range(spec, name)
    if lo <= 0:
        raise ValueError(f'{name}: a log-uniform range needs positive bounds, got {spec!r}')
    return lo if lo == hi else float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _draw_int(spec: Range, rng: np.random.Generator, name: str) -> int:
    lo, hi = _as_range(spec, name)
    return int(round(lo)) if lo == hi else int(rng.integers(int(round(lo)), int(round(hi)) + 1))


def _check_image(img: np.ndarray) -> np.ndarray:
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'expected an HxWx3 image, got shape {img.shape}')
    return img.astype(np.float32, copy=False)


def quantize(img: np.ndarray) -> np.ndarray:
    """Round to the 8-bit grid, as a degraded input stored as PNG would be."""
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.float32) / np.float32(255.0)


# ------------------------------------------------------------------------------------------------ noise
def gaussian_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """clip(x + N(0, (sigma/255)^2)) per pixel and channel; ``sigma`` on the 0..255 scale."""
    img = _check_image(img)
    if sigma < 0:
        raise ValueError(f'sigma must be >= 0, got {sigma}')
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    noise *= np.float32(sigma / 255.0)
    return np.clip(img + noise, 0.0, 1.0)


def random_gaussian_noise(img: np.ndarray, rng: np.random.Generator, sigma: Range = 25) -> np.ndarray:
    """Gaussian noise with sigma fixed or drawn uniformly from [low, high] (blind denoising: [0, 55])."""
    return gaussian_noise(img, draw_uniform(sigma, rng, 'sigma'), rng)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """The sRGB transfer function inverted (IEC 61966-2-1), float32 in and out."""
    x = np.clip(x, 0.0, 1.0).astype(np.float32, copy=False)
    curve = cv2.pow((x + np.float32(0.055)) * np.float32(1 / 1.055), 2.4)  # OpenCV's pow is several times faster
    return np.where(x <= 0.04045, x * np.float32(1 / 12.92), curve)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Linear light to sRGB (IEC 61966-2-1), float32 in and out."""
    x = np.clip(x, 0.0, 1.0).astype(np.float32, copy=False)
    curve = cv2.pow(x, 1 / 2.4) * np.float32(1.055) - np.float32(0.055)
    return np.where(x <= 0.0031308, x * np.float32(12.92), curve)


# Above this many expected photons the Poisson law is replaced by its Gaussian limit, which numpy
# draws several times faster; the two differ by far less than the 8-bit step at these counts.
_POISSON_EXACT_BELOW = 10.0


def poisson_gaussian_noise(img: np.ndarray, a: float, b: float, rng: np.random.Generator) -> np.ndarray:
    """Camera-like noise of variance a*x + b in linear light: y = Poisson(x/a)*a + N(0, b), back to sRGB."""
    img = _check_image(img)
    if a <= 0 or b < 0:
        raise ValueError(f'poisson_gaussian: need a > 0 and b >= 0, got a={a}, b={b}')
    lin = srgb_to_linear(img)
    z = rng.standard_normal(lin.shape, dtype=np.float32)
    # bright pixels: the Gaussian limit of Poisson(x/a)*a plus the read noise, variance a*x + b
    noisy = lin + np.sqrt(lin * np.float32(a) + np.float32(b)) * z
    low = lin < np.float32(_POISSON_EXACT_BELOW * a)
    if low.any():  # dark pixels: exact photon counts, plus read noise
        noisy[low] = rng.poisson(lin[low] / np.float32(a)).astype(np.float32) * np.float32(a) \
            + np.float32(math.sqrt(b)) * z[low]
    return linear_to_srgb(noisy)


def random_poisson_gaussian_noise(img: np.ndarray, rng: np.random.Generator, a: Range = (1e-3, 2e-2),
                                  b: Range = (1e-6, 1e-3)) -> np.ndarray:
    """Poisson-Gaussian noise with a and b fixed or drawn log-uniformly from their ranges."""
    return poisson_gaussian_noise(img, draw_log_uniform(a, rng, 'a'), draw_log_uniform(b, rng, 'b'), rng)


# ------------------------------------------------------------------------------------------------- rain
RAIN_PRESETS = {
    # Rain100L-like: one sparse layer of thin streaks (input Y-PSNR about 27 dB).
    'light': dict(layers=1, density=0.0012, length=(15, 30), width=1, angle=(-20, 20), angle_spread=0,
                  intensity=(0.3, 0.6)),
    # Rain100H-like: three dense layers within 10 degrees of a base angle (input Y-PSNR about 13 dB).
    'heavy': dict(layers=3, density=0.0025, length=(20, 40), width=(1, 3), angle=(-20, 20), angle_spread=10,
                  intensity=(0.6, 1.0)),
}

_LINE_SUPERSAMPLE = 4
# The streak layer's brightness is set by this percentile of its non-zero values, so a few
# overlapping streaks saturate while the typical streak lands at the drawn intensity.
_RAIN_PERCENTILE = 99.3


def line_kernel(length: float, angle: float, width: float = 1.0, from_vertical: bool = False,
                supersample: int = _LINE_SUPERSAMPLE) -> np.ndarray:
    """An anti-aliased line segment ``length`` x ``width`` pixels centred on an odd square canvas.

    ``angle`` in degrees, from the horizontal axis (counter-clockwise), or from the vertical (positive
    leans the top to the right) when ``from_vertical``. Each pixel holds the fraction of its area the
    segment covers, measured on a ``supersample`` x finer grid; peak 1, not normalised.
    """
    if length <= 0 or width <= 0:
        raise ValueError(f'line kernel: length and width must be positive, got {length}, {width}')
    theta = math.radians(angle)
    if from_vertical:
        dx, dy = math.sin(theta), -math.cos(theta)
    else:  # image rows grow downwards, so a counter-clockwise angle has negative dy
        dx, dy = math.cos(theta), -math.sin(theta)
    extent = max(abs(dx) * length + abs(dy) * width, abs(dy) * length + abs(dx) * width)
    size = int(math.ceil(extent)) + 2
    size += 1 - size % 2
    s = int(supersample)
    centre = (size - 1) / 2.0
    coords = (np.arange(size * s, dtype=np.float32) + 0.5) / s - 0.5 - centre  # sub-pixel centres
    yy, xx = np.meshgrid(coords, coords, indexing='ij')
    along = np.abs(xx * dx + yy * dy)
    across = np.abs(-xx * dy + yy * dx)
    inside = (along <= length / 2.0) & (across <= width / 2.0)
    kernel = inside.astype(np.float32).reshape(size, s, size, s).mean(axis=(1, 3))
    peak = kernel.max()
    return kernel / peak if peak > 0 else kernel


def rain_layer(shape: tuple, rng: np.random.Generator, density: float, length: float, width: float,
               angle: float, intensity: float) -> np.ndarray:
    """One additive streak layer (HxW, float32 in [0, 1]); ``angle`` in degrees from vertical."""
    h, w = shape[:2]
    seeds = rng.random((h, w), dtype=np.float32)
    mask = seeds < np.float32(density)
    layer = np.zeros((h, w), np.float32)
    count = int(mask.sum())
    if count == 0:
        return layer
    layer[mask] = rng.uniform(0.6, 1.0, count).astype(np.float32)
    layer = cv2.GaussianBlur(layer, (0, 0), 0.5)
    kernel = line_kernel(length, angle, width, from_vertical=True)
    layer = cv2.filter2D(layer, -1, kernel, borderType=cv2.BORDER_CONSTANT)
    values = layer[layer > 1e-4]
    if values.size == 0:
        return np.zeros((h, w), np.float32)
    ref = float(np.percentile(values, _RAIN_PERCENTILE))
    layer *= np.float32(intensity / max(ref, 1e-8))
    return np.clip(layer, 0.0, 1.0)


def rain(img: np.ndarray, rng: np.random.Generator, preset: str | None = None, layers: int | None = None,
         density: Range | None = None, length: Range | None = None, width: Range | None = None,
         angle: Range | None = None, angle_spread: float | None = None, intensity: Range | None = None,
         return_layer: bool = False):
    """Add rain streaks: O = clip(B + S) with S the sum of ``layers`` streak layers.

    ``preset`` 'light' or 'heavy' (see RAIN_PRESETS) supplies every parameter; explicit keyword arguments
    override it; numbers are fixed, [low, high] pairs are drawn per image. ``angle`` is the base angle in
    degrees from vertical; each layer leans within ``angle_spread`` degrees of it. With ``return_layer``
    also returns S (HxW).
    """
    img = _check_image(img)
    if preset is not None and preset not in RAIN_PRESETS:
        raise ValueError(f"rain preset {preset!r} is not one of {', '.join(RAIN_PRESETS)}")
    params = dict(RAIN_PRESETS[preset or 'light'])
    given = dict(layers=layers, density=density, length=length, width=width, angle=angle,
                 angle_spread=angle_spread, intensity=intensity)
    params.update({k: v for k, v in given.items() if v is not None})
    base = draw_uniform(params['angle'], rng, 'rain.angle')
    streaks = np.zeros(img.shape[:2], np.float32)
    for _ in range(int(params['layers'])):
        streaks += rain_layer(
            img.shape, rng,
            density=draw_uniform(params['density'], rng, 'rain.density'),
            length=draw_uniform(params['length'], rng, 'rain.length'),
            width=draw_uniform(params['width'], rng, 'rain.width'),
            angle=base + draw_uniform([-params['angle_spread'], params['angle_spread']], rng, 'rain.angle_spread'),
            intensity=draw_uniform(params['intensity'], rng, 'rain.intensity'))
    out = np.clip(img + streaks[:, :, None], 0.0, 1.0)
    return (out, np.clip(streaks, 0.0, 1.0)) if return_layer else out


# ------------------------------------------------------------------------------------------ motion blur
def linear_motion_kernel(length: int, angle: float) -> np.ndarray:
    """A straight motion path of ``length`` pixels at ``angle`` degrees from horizontal, summing to 1."""
    kernel = line_kernel(length, angle, width=1.0, supersample=8)
    return (kernel / kernel.sum()).astype(np.float32)


def trajectory_kernel(rng: np.random.Generator, size: int = 31, steps: int = 512, exposure: Range = (0.5, 1.0),
                      anxiety: Range = (0.0, 0.005), max_length: float | None = None) -> np.ndarray:
    """A camera-shake point-spread function on a ``size`` x ``size`` canvas, summing to 1.

    A particle takes ``steps`` small steps of fixed speed; each step is pulled back towards the start
    (centripetal term), jittered at random, and rarely reversed abruptly (Boracchi and Foi 2012). The
    visited positions over the first ``exposure`` fraction are splatted bilinearly and centred.
    """
    if size < 3:
        raise ValueError(f'trajectory kernel size must be at least 3, got {size}')
    max_length = float(max_length if max_length is not None else size * 0.9)
    anx = draw_uniform(anxiety, rng, 'anxiety')
    centripetal = 0.7 * rng.random()
    jitter = 10.0 * rng.random()
    big_shake_rate = 0.2 * rng.random()
    step = max_length / (steps - 1)
    direction = complex(math.cos(angle := 2 * math.pi * rng.random()), math.sin(angle))
    v = direction * (anx if anx > 0 else step)
    noise = rng.standard_normal((steps, 2))
    shake = rng.random(steps)
    turn = rng.random(steps) - 0.5
    pos = np.zeros(steps, np.complex128)
    x = 0j
    for t in range(steps - 1):
        kick = 2 * v * complex(math.cos(math.pi + turn[t]), math.sin(math.pi + turn[t])) \
            if shake[t] < big_shake_rate * anx else 0j
        v = v + kick + anx * (jitter * complex(noise[t, 0], noise[t, 1]) - centripetal * x) * step
        v = v / abs(v) * step if abs(v) > 0 else direction * step
        x = x + v
        pos[t + 1] = x
    frac = draw_uniform(exposure, rng, 'exposure')
    pos = pos[:max(2, int(round(frac * steps)))]
    px, py = pos.real, pos.imag
    # fit the path inside the canvas (keeping a one-pixel border), then centre its centre of mass
    span = max(px.max() - px.min(), py.max() - py.min(), 1e-6)
    limit = size - 3
    if span > limit:
        px, py = px * (limit / span), py * (limit / span)
    centre = (size - 1) / 2.0
    px = px - px.mean() + centre
    py = py - py.mean() + centre
    px = np.clip(px, 0, size - 1.001)
    py = np.clip(py, 0, size - 1.001)
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - x0, py - y0
    psf = np.zeros((size, size), np.float64)
    np.add.at(psf, (y0, x0), (1 - fx) * (1 - fy))
    np.add.at(psf, (y0, x0 + 1), fx * (1 - fy))
    np.add.at(psf, (y0 + 1, x0), (1 - fx) * fy)
    np.add.at(psf, (y0 + 1, x0 + 1), fx * fy)
    return (psf / psf.sum()).astype(np.float32)


def random_motion_kernel(rng: np.random.Generator, kind: str = 'mixed', length: Range = (5, 25),
                         angle: Range = (0, 180), size: int = 31) -> np.ndarray:
    """A normalised blur kernel: 'linear' (odd length, angle), 'trajectory' (camera shake), or 'mixed' (either)."""
    if kind not in ('linear', 'trajectory', 'mixed'):
        raise ValueError(f"motion blur kind {kind!r} is not one of linear, trajectory, mixed")
    if kind == 'mixed':
        kind = 'linear' if rng.random() < 0.5 else 'trajectory'
    if kind == 'trajectory':
        return trajectory_kernel(rng, size=size)
    n = _draw_int(length, rng, 'length')
    n += 1 - n % 2
    return linear_motion_kernel(n, draw_uniform(angle, rng, 'angle'))


def blur(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve every channel with ``kernel`` (reflect padding at the borders)."""
    img = _check_image(img)
    flipped = np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float32)  # filter2D correlates
    out = cv2.filter2D(img, -1, flipped, borderType=cv2.BORDER_REFLECT)
    return np.clip(out, 0.0, 1.0)


def random_motion_blur(img: np.ndarray, rng: np.random.Generator, kind: str = 'mixed', length: Range = (5, 25),
                       angle: Range = (0, 180), size: int = 31, noise_sigma: Range = 0) -> np.ndarray:
    """Blur with a random motion kernel, then optionally add a little Gaussian noise (sigma on 0..255)."""
    out = blur(img, random_motion_kernel(rng, kind=kind, length=length, angle=angle, size=size))
    sigma = draw_uniform(noise_sigma, rng, 'noise_sigma')
    return gaussian_noise(out, sigma, rng) if sigma > 0 else out
