"""DND (Darmstadt Noise Dataset) sRGB benchmark: denoise its boxes and write the submission files.

DND publishes no clean images; results are uploaded to its server. This follows the layout and the
file formats of DND's own submission kit (``dnd_denoise.py`` / ``bundle_submissions.py``):

- Input, all MATLAB v7.3 files (HDF5, read with h5py; h5py sees MATLAB arrays transposed):
  ``info.mat`` holds ``info/boundingboxes``, one object reference per image (a 1x50 cell), each
  pointing to a 20x4 array of boxes stored as (4, 20). A box row is ``[y1, x1, y2, x2]``: 1-based,
  inclusive MATLAB coordinates, rows first, so its pixels are ``[y1-1:y2, x1-1:x2]`` (512x512 on DND).
  ``images_srgb/0001.mat`` .. ``0050.mat`` each hold ``InoisySRGB``, an HxWx3 image in [0, 1] that
  h5py reads as (3, W, H); only the boxes are read from it, by slicing the HDF5 dataset.
- Output: one file per box, ``0001_01.mat`` .. ``0050_20.mat``, each ``{'Idenoised_crop': HxWx3
  float32}`` (scipy.io.savemat), then the upload form in ``bundled/``: ``0001.mat`` .. ``0050.mat``,
  each ``{'Idenoised': 1x20 cell of the boxes, 'israw': False, 'eval_version': '1.0'}``. Zip the
  ``bundled`` folder's files and upload them. Only the sRGB track is handled (not ``images_raw``).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch
from torch import nn

from drcnet.inference.tiling import restore

logger = logging.getLogger('basicsr')

PathLike = Union[str, os.PathLike]
Fn = Callable[[torch.Tensor], torch.Tensor]

BOXES_PER_IMAGE = 20
NOISY_KEY = 'InoisySRGB'
CROP_KEY = 'Idenoised_crop'
BUNDLE_KEY = 'Idenoised'
EVAL_VERSION = '1.0'


@dataclass(frozen=True)
class DndImage:
    """One DND image: its 1-based number, its noisy .mat file and its boxes (N, 4) as [y1, x1, y2, x2]."""

    index: int
    path: Path
    boxes: np.ndarray

    def box_name(self, k: int) -> str:
        """File name of box ``k`` (0-based) in the kit's per-box form, e.g. '0001_01.mat'."""
        return f'{self.index:04d}_{k + 1:02d}.mat'


def _h5py():
    try:
        import h5py
    except ImportError as err:  # h5py is a requirement; say which file needed it
        raise ImportError('reading DND files (MATLAB v7.3) needs h5py: pip install h5py') from err
    return h5py


def _boxes_from(raw: np.ndarray, where: str) -> np.ndarray:
    """A MATLAB Nx4 array as h5py reads it ((4, N)) to an (N, 4) integer array."""
    raw = np.asarray(raw)
    if raw.ndim != 2 or 4 not in raw.shape:
        raise ValueError(f'{where}: expected a 20x4 array of boxes, found shape {raw.shape}')
    boxes = raw.T if raw.shape[0] == 4 else raw
    if not np.all(np.isfinite(boxes)) or np.any(boxes != np.round(boxes)):
        raise ValueError(f'{where}: box coordinates must be whole numbers')
    boxes = boxes.astype(np.int64)
    bad = np.flatnonzero((boxes[:, 0] < 1) | (boxes[:, 1] < 1) | (boxes[:, 2] < boxes[:, 0]) |
                         (boxes[:, 3] < boxes[:, 1]))
    if bad.size:
        raise ValueError(f'{where}: box {bad[0] + 1} is not a valid [y1 x1 y2 x2] (1-based): {boxes[bad[0]].tolist()}')
    return boxes


def read_dnd_info(dnd_root: PathLike) -> list:
    """The DND images listed by ``dnd_root/info.mat``, as DndImage records (boxes read, pixels not)."""
    h5py = _h5py()
    root = Path(dnd_root)
    info_path = root / 'info.mat'
    if not info_path.is_file():
        raise FileNotFoundError(f'DND: {info_path} not found; expected the DND folder with info.mat and images_srgb/')
    images = []
    try:
        with h5py.File(info_path, 'r') as f:
            if 'info' not in f or 'boundingboxes' not in f['info']:
                raise ValueError(f'DND: {info_path} has no info.boundingboxes (is it the DND info.mat?)')
            refs = np.asarray(f['info']['boundingboxes']).reshape(-1)
            for i, ref in enumerate(refs):
                where = f'DND: {info_path} boundingboxes{{{i + 1}}}'
                if not isinstance(ref, h5py.Reference) or not ref:
                    raise ValueError(f'{where}: expected an object reference, found {type(ref).__name__}')
                boxes = _boxes_from(f[ref][()], where)
                images.append(DndImage(i + 1, root / 'images_srgb' / f'{i + 1:04d}.mat', boxes))
    except OSError as err:
        raise ValueError(f'DND: cannot read {info_path} as a MATLAB v7.3 (HDF5) file: {err}') from err
    if not images:
        raise ValueError(f'DND: {info_path} lists no images')
    return images


def read_noisy_box(path: PathLike, box: np.ndarray) -> np.ndarray:
    """Box ``[y1, x1, y2, x2]`` (1-based, inclusive) of ``path``'s InoisySRGB as float32 HxWx3."""
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'DND: noisy image {path} not found')
    y1, x1, y2, x2 = (int(v) for v in box)
    with h5py.File(path, 'r') as f:
        if NOISY_KEY not in f:
            raise ValueError(f'DND: {path} has no {NOISY_KEY!r} (keys: {", ".join(f.keys())})')
        ds = f[NOISY_KEY]
        if ds.ndim != 3 or ds.shape[0] != 3:
            raise ValueError(f'DND: {path} {NOISY_KEY} has shape {ds.shape}; expected (3, W, H) as h5py '
                             f'reads a MATLAB HxWx3 image')
        width, height = ds.shape[1], ds.shape[2]
        if y2 > height or x2 > width:
            raise ValueError(f'DND: box {[y1, x1, y2, x2]} lies outside the {height}x{width} image {path}')
        crop = ds[:, x1 - 1:x2, y1 - 1:y2]  # (3, w, h): MATLAB's column-major order seen from C
    return np.ascontiguousarray(np.transpose(crop, (2, 1, 0)).astype(np.float32))


def denoise_dnd(fn: nn.Module | Fn, dnd_root: PathLike, out_dir: PathLike, tile: int | None = None,
                overlap: int = 32, tta: bool = False, device: torch.device | str | None = None,
                bundle: bool = True, progress: bool = True) -> Path:
    """Denoise every box of the DND sRGB set with ``fn`` and write the submission files.

    ``fn``: a network (its last output is used) or a function (1, 3, h, w) -> (1, 3, h, w) in [0, 1].
    Writes ``out_dir/0001_01.mat`` .. and, with ``bundle``, ``out_dir/bundled/``; returns the folder to
    upload (``bundled``), or ``out_dir`` without bundling.
    """
    from scipy.io import savemat
    from tqdm import tqdm

    images = read_dnd_info(dnd_root)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = sum(len(img.boxes) for img in images)
    bar = tqdm(total=total, desc='DND', unit='box', disable=not progress)
    for img in images:
        for k, box in enumerate(img.boxes):
            noisy = read_noisy_box(img.path, box)
            x = torch.from_numpy(noisy.transpose(2, 0, 1).copy())[None]
            y = restore(fn, x, tile=tile, overlap=overlap, tta=tta, device=device).clamp(0, 1)
            crop = y[0].permute(1, 2, 0).cpu().numpy().astype(np.float32)
            savemat(str(out / img.box_name(k)), {CROP_KEY: crop})
            bar.update(1)
    bar.close()
    logger.info('DND: wrote %d denoised boxes of %d images to %s', total, len(images), out)
    if not bundle:
        return out
    return bundle_submissions_srgb(out, images)


def bundle_submissions_srgb(submission_folder: PathLike, images: list | None = None) -> Path:
    """Bundle the per-box files of ``submission_folder`` into ``submission_folder/bundled/`` (the upload form).

    ``images``: the DndImage records (their number and box count); default: all 50 of 20 boxes.
    """
    from scipy.io import loadmat, savemat

    folder = Path(submission_folder)
    bundled = folder / 'bundled'
    bundled.mkdir(parents=True, exist_ok=True)
    if images is None:
        images = [DndImage(i, folder / f'{i:04d}.mat', np.zeros((BOXES_PER_IMAGE, 4), np.int64))
                  for i in range(1, 51)]
    for img in images:
        cell = np.empty((len(img.boxes),), dtype=object)
        for k in range(len(img.boxes)):
            path = folder / img.box_name(k)
            if not path.is_file():
                raise FileNotFoundError(f'DND bundle: {path} is missing (denoise every box first)')
            data = loadmat(str(path))
            if CROP_KEY not in data:
                raise ValueError(f'DND bundle: {path} has no {CROP_KEY!r}')
            cell[k] = data[CROP_KEY].astype(np.float32)
        savemat(str(bundled / f'{img.index:04d}.mat'),
                {BUNDLE_KEY: cell, 'israw': False, 'eval_version': EVAL_VERSION})
    logger.info('DND: bundled %d images into %s', len(images), bundled)
    return bundled
