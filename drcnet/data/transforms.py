"""Paired crops and augmentation (basicsr's), size checks that name the files, HWC array to CHW tensor."""
from __future__ import annotations

import numpy as np
import torch

from drcnet import _compat  # noqa: F401  (before basicsr)
from basicsr.data.transforms import augment, paired_random_crop

__all__ = ['augment_pair', 'centre_crop_box', 'check_pair_sizes', 'random_crop_pair', 'to_tensor']


def check_pair_sizes(lq: np.ndarray, gt: np.ndarray, lq_path: str, gt_path: str) -> None:
    """A ValueError naming both files and their sizes when ``lq`` and ``gt`` differ in size."""
    if lq.shape[:2] != gt.shape[:2]:
        raise ValueError(f'input and ground truth differ in size: {lq_path} is {lq.shape[1]}x{lq.shape[0]} '
                         f'(WxH), {gt_path} is {gt.shape[1]}x{gt.shape[0]} (WxH)')


def random_crop_pair(gt: np.ndarray, lq: np.ndarray, gt_size: int, gt_path: str = '') -> tuple:
    """The same random ``gt_size`` square from ``gt`` and ``lq`` (basicsr's paired crop), as fresh arrays."""
    h, w = gt.shape[:2]
    if h < gt_size or w < gt_size:
        raise ValueError(f'gt_size {gt_size} is larger than the image {gt_path} ({w}x{h}, WxH); '
                         f'lower gt_size or remove the image')
    gt, lq = paired_random_crop(gt, lq, gt_size, 1, gt_path)
    # copies: basicsr's augment flips in place, which must never reach a cached or larger source array
    return np.ascontiguousarray(gt).copy(), np.ascontiguousarray(lq).copy()


def augment_pair(gt: np.ndarray, lq: np.ndarray, use_hflip: bool, use_rot: bool) -> tuple:
    """One random flip/rotation (basicsr's augment: hflip, vflip, transpose) applied to both images."""
    if not (use_hflip or use_rot):
        return gt, lq
    gt, lq = augment([np.ascontiguousarray(gt), np.ascontiguousarray(lq)], use_hflip, use_rot)
    return gt, lq


def centre_crop_box(h: int, w: int, size: int | None) -> tuple:
    """(top, left, height, width) of the centred ``size`` square (the whole image when smaller or None)."""
    if size is None:
        return 0, 0, h, w
    ch, cw = min(size, h), min(size, w)
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 float array to a contiguous (3, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))
