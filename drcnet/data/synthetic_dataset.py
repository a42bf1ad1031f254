"""Clean photographs degraded on the fly: training data for users who have no paired benchmark."""
from __future__ import annotations

import logging
import random
from typing import Sequence, Union

import numpy as np
from torch.utils.data import Dataset

from drcnet.data import degradations as deg
from drcnet.data.image_io import list_images, read_image
from drcnet.data.samples import SAMPLE_NAMES, load_sample_uint8
from drcnet.data.transforms import augment_pair, centre_crop_box, to_tensor
from drcnet.registry import DATASET_REGISTRY, did_you_mean

__all__ = ['SyntheticDegradationDataset']

logger = logging.getLogger('basicsr')

Range = Union[float, Sequence[float]]
SOURCES = ('samples', 'folder')
RAIN_CHOICES = ('light', 'heavy', 'mixed')
BLUR_KINDS = ('linear', 'trajectory', 'mixed')
PHASES = ('train', 'val', 'test')


def _check_range(value, key: str, low: float = 0.0, positive: bool = False) -> None:
    lo, hi = deg._as_range(value, key)
    if lo < low or (positive and lo <= 0):
        raise ValueError(f'{key}: values must be {"> 0" if positive else f">= {low}"}, got {value!r}')


@DATASET_REGISTRY.register()
class SyntheticDegradationDataset(Dataset):
    """Clean images degraded on the fly into (lq, gt) pairs; the embedded default data set.

    source: 'samples' (scikit-image's colour photographs; ``samples`` picks names, default all) or
        'folder' (every image in ``dataroot_gt``).
    degradation: 'gaussian_noise', 'poisson_gaussian', 'rain' or 'motion_blur', or a list of them
        (one drawn per image). Numbers are fixed; [low, high] pairs are drawn per image:
        gaussian_noise: ``sigma`` (0..255 scale; blind: [0, 55]).
        poisson_gaussian: ``poisson_a``, ``poisson_b`` (log-uniform; variance a*x + b in linear light).
        rain: ``rain`` preset 'light' | 'heavy' | 'mixed', overridden by ``rain_layers``, ``rain_density``,
            ``rain_length``, ``rain_width``, ``rain_angle`` (degrees from vertical), ``rain_angle_spread``,
            ``rain_intensity``.
        motion_blur: ``blur_kernel`` 'linear' | 'trajectory' | 'mixed', ``blur_length`` (linear, odd) and
            ``blur_angle`` (linear, degrees), ``blur_size`` (trajectory canvas), ``blur_noise`` (sigma added
            after blurring).
    Training: a random ``gt_size`` crop (degraded with its surroundings, so borders stay real), a fresh
    degradation, a flip/rotation; ``images_per_epoch`` sets the epoch length (default: one per image).
    Validation/test: the whole image or its centred ``crop_size`` square, degraded identically in every
    run (the generator is seeded with ``seed`` and the image index). ``quantize`` rounds lq to 8 bits.
    """

    def __init__(self, source: str = 'samples', dataroot_gt: str | None = None, samples: Sequence[str] | None = None,
                 degradation: Union[str, Sequence[str]] = 'gaussian_noise', sigma: Range = 25,
                 poisson_a: Range = (1e-3, 2e-2), poisson_b: Range = (1e-6, 1e-3), rain: str = 'light',
                 rain_layers: int | None = None, rain_density: Range | None = None, rain_length: Range | None = None,
                 rain_width: Range | None = None, rain_angle: Range | None = None,
                 rain_angle_spread: float | None = None, rain_intensity: Range | None = None,
                 blur_kernel: str = 'mixed', blur_length: Range = (5, 25), blur_angle: Range = (0, 180),
                 blur_size: int = 31,
                 blur_noise: Range = 0, gt_size: int | None = None, crop_size: int | None = None,
                 images_per_epoch: int | None = None, use_hflip: bool = True, use_rot: bool = True,
                 phase: str = 'train', seed: int = 0, quantize: bool = True):
        super().__init__()
        self._check_choice('phase', phase, PHASES)
        self._check_choice('source', source, SOURCES)
        self.phase, self.source, self.seed, self.quantize = phase, source, int(seed), bool(quantize)
        self.use_hflip, self.use_rot = bool(use_hflip), bool(use_rot)

        if source == 'samples':
            if dataroot_gt is not None:
                raise ValueError("dataroot_gt: only read with source: folder (source is 'samples')")
            names = list(samples) if samples is not None else list(SAMPLE_NAMES)
            if not names:
                raise ValueError('samples: the list is empty; choose from ' + ', '.join(SAMPLE_NAMES))
            for name in names:
                self._check_choice('samples', name, SAMPLE_NAMES)
            self.images = names
        else:
            if samples is not None:
                raise ValueError("samples: only read with source: samples (source is 'folder')")
            if dataroot_gt is None:
                raise ValueError('dataroot_gt: source: folder needs a folder of clean images')
            self.images = [str(p) for p in list_images(dataroot_gt)]
            if not self.images:
                raise ValueError(f'dataroot_gt: no images in {dataroot_gt}')

        kinds = [degradation] if isinstance(degradation, str) else list(degradation)
        if not kinds:
            raise ValueError('degradation: the list is empty; choose from ' + ', '.join(deg.DEGRADATIONS))
        for kind in kinds:
            self._check_choice('degradation', kind, deg.DEGRADATIONS)
        self.degradations = kinds
        _check_range(sigma, 'sigma')
        _check_range(poisson_a, 'poisson_a', positive=True)
        _check_range(poisson_b, 'poisson_b', positive=True)
        self._check_choice('rain', rain, RAIN_CHOICES)
        self._check_choice('blur_kernel', blur_kernel, BLUR_KINDS)
        _check_range(blur_length, 'blur_length', low=1)
        _check_range(blur_noise, 'blur_noise')
        deg._as_range(blur_angle, 'blur_angle')
        if int(blur_size) < 3:
            raise ValueError(f'blur_size: must be at least 3, got {blur_size!r}')
        rain_overrides = dict(layers=rain_layers, density=rain_density, length=rain_length, width=rain_width,
                              angle=rain_angle, angle_spread=rain_angle_spread, intensity=rain_intensity)
        for key, value in rain_overrides.items():
            if value is not None and key != 'angle':
                _check_range(value, f'rain_{key}', positive=key in ('layers', 'length', 'width'))
            elif value is not None:
                deg._as_range(value, 'rain_angle')
        self.sigma, self.poisson_a, self.poisson_b = sigma, poisson_a, poisson_b
        self.rain, self.rain_overrides = rain, {k: v for k, v in rain_overrides.items() if v is not None}
        self.blur_kernel, self.blur_length, self.blur_size = blur_kernel, blur_length, int(blur_size)
        self.blur_noise, self.blur_angle = blur_noise, blur_angle

        if phase == 'train':
            if gt_size is None:
                raise ValueError('gt_size: training crops need a size (e.g. gt_size: 128)')
            if crop_size is not None:
                raise ValueError('crop_size: the centred crop is for validation/test; training crops use gt_size')
        elif images_per_epoch is not None:
            raise ValueError('images_per_epoch: sets the length of a training epoch; remove it from '
                             f'the {phase} data set')
        for key, value in (('gt_size', gt_size), ('crop_size', crop_size), ('images_per_epoch', images_per_epoch)):
            if value is not None and (int(value) != value or value < 1):
                raise ValueError(f'{key}: expected a positive integer, got {value!r}')
        self.gt_size = None if gt_size is None else int(gt_size)
        self.crop_size = None if crop_size is None else int(crop_size)
        self.length = int(images_per_epoch) if images_per_epoch else len(self.images)
        if source == 'samples' and self.gt_size:
            for name in self.images:
                h, w = load_sample_uint8(name).shape[:2]
                if min(h, w) < self.gt_size:
                    raise ValueError(f'gt_size {self.gt_size} is larger than sample {name} ({w}x{h}, WxH)')
        logger.info('SyntheticDegradationDataset (%s): %d %s image(s), %s, %d items per epoch', phase,
                    len(self.images), source, '/'.join(self.degradations), self.length)

    @staticmethod
    def _check_choice(key: str, value, choices) -> None:
        if value not in choices:
            raise ValueError(f'{key}: {value!r} is not one of {", ".join(choices)}{did_you_mean(value, choices)}')

    # ------------------------------------------------------------------------------------- degrading
    def _margin(self, kind: str) -> int:
        """Pixels of real surroundings a crop needs so the degradation near its border is not padded."""
        if kind == 'motion_blur':
            return max(self.blur_size, int(deg._as_range(self.blur_length, 'blur_length')[1]) + 2) // 2 + 1
        if kind == 'rain':
            return 24
        return 0

    def degrade(self, img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
        """Apply degradation ``kind`` with this data set's parameters to a float RGB image."""
        if kind == 'gaussian_noise':
            out = deg.random_gaussian_noise(img, rng, self.sigma)
        elif kind == 'poisson_gaussian':
            out = deg.random_poisson_gaussian_noise(img, rng, self.poisson_a, self.poisson_b)
        elif kind == 'rain':
            preset = self.rain if self.rain != 'mixed' else ('light' if rng.random() < 0.5 else 'heavy')
            out = deg.rain(img, rng, preset, **self.rain_overrides)
        else:
            out = deg.random_motion_blur(img, rng, kind=self.blur_kernel, length=self.blur_length,
                                         angle=self.blur_angle, size=self.blur_size, noise_sigma=self.blur_noise)
        return deg.quantize(out) if self.quantize else out

    # --------------------------------------------------------------------------------------- reading
    def _name(self, index: int) -> str:
        return f'samples/{self.images[index]}' if self.source == 'samples' else self.images[index]

    def _region(self, index: int, top: int, left: int, height: int, width: int) -> np.ndarray:
        if self.source == 'samples':
            crop = load_sample_uint8(self.images[index])[top:top + height, left:left + width]
            return crop.astype(np.float32) / np.float32(255.0)
        return np.ascontiguousarray(read_image(self.images[index])[top:top + height, left:left + width])

    def _size(self, index: int) -> tuple:
        if self.source == 'samples':
            return load_sample_uint8(self.images[index]).shape[:2]
        return None

    def _degraded_crop(self, index: int, box: tuple | None, kind: str, rng: np.random.Generator,
                       full: np.ndarray | None = None) -> tuple:
        """(gt, lq) for the crop ``box`` = (top, left, h, w), degraded together with a margin around it."""
        top, left, ch, cw = box
        m = self._margin(kind)
        h, w = self._size(index) if full is None else full.shape[:2]
        t0, l0 = max(0, top - m), max(0, left - m)
        t1, l1 = min(h, top + ch + m), min(w, left + cw + m)
        region = full[t0:t1, l0:l1] if full is not None else self._region(index, t0, l0, t1 - t0, l1 - l0)
        degraded = self.degrade(region, kind, rng)
        inner = (slice(top - t0, top - t0 + ch), slice(left - l0, left - l0 + cw))
        return np.ascontiguousarray(region[inner]), np.ascontiguousarray(degraded[inner])

    def __getitem__(self, index: int) -> dict:
        index = index % len(self.images)
        name = self._name(index)
        full = None if self.source == 'samples' else read_image(self.images[index])
        h, w = self._size(index) if full is None else full.shape[:2]
        if self.phase == 'train':
            # python's random, as basicsr's crops use it; the training loader seeds it for each sample
            rng = np.random.default_rng(random.getrandbits(64))
            if h < self.gt_size or w < self.gt_size:
                raise ValueError(f'gt_size {self.gt_size} is larger than the image {name} ({w}x{h}, WxH)')
            box = (int(rng.integers(0, h - self.gt_size + 1)), int(rng.integers(0, w - self.gt_size + 1)),
                   self.gt_size, self.gt_size)
        else:
            rng = np.random.default_rng([self.seed, index])
            box = centre_crop_box(h, w, self.crop_size)
        kind = self.degradations[int(rng.integers(len(self.degradations)))] if len(self.degradations) > 1 \
            else self.degradations[0]
        gt, lq = self._degraded_crop(index, box, kind, rng, full)
        if self.phase == 'train':
            gt, lq = augment_pair(gt, lq, self.use_hflip, self.use_rot)
        return {'lq': to_tensor(lq), 'gt': to_tensor(gt), 'lq_path': name, 'gt_path': name}

    def __len__(self) -> int:
        return self.length
