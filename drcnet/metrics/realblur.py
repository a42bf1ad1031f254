"""RealBlur's evaluation protocol: align the restored image to its ground truth, then score the covered region.

RealBlur's pairs (Rim et al., ECCV 2020) keep a small geometric misalignment, so its evaluation code
registers each restored image to the ground truth before scoring, and published RealBlur-J/R numbers
are comparable only under that protocol. Per image pair, 8-bit RGB read as float in [0, 1]:

1. intensity matching: the restored image times sum(gt * restored) / sum(restored^2);
2. ECC (``cv2.findTransformECC``) from the grey ground truth (template) to the grey matched image:
   a homography, 100 iterations with no early stop, Gaussian prefilter of size 5;
3. the matched image warped onto the ground truth (bicubic, reflected border); the valid region is
   the warp of an image of ones (nearest, zero outside), and both images are multiplied by it;
4. PSNR over the region: squared error summed over the region / its number of values (peak 1);
5. SSIM: the Gaussian-window SSIM map of scikit-image (sigma 1.5, population covariances) per
   channel, multiplied by the region, a 5-pixel border cut, averaged over the region, then over channels.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ['MOTIONS', 'Alignment', 'ecc_align', 'masked_psnr', 'masked_ssim', 'realblur_scores']

MOTIONS = {'homography': cv2.MOTION_HOMOGRAPHY, 'translation': cv2.MOTION_TRANSLATION}
ECC_ITERATIONS = 100
ECC_PREFILTER = 5
SSIM_SIGMA = 1.5
# the half-width of skimage's Gaussian SSIM window: its filter is truncated at 3.5 sigma
SSIM_BORDER = int(3.5 * SSIM_SIGMA + 0.5)


@dataclass
class Alignment:
    """The restored image warped onto the ground truth, both masked by the valid region (H, W, 3 float32)."""
    restored: np.ndarray
    gt: np.ndarray
    region: np.ndarray
    warp: np.ndarray  # 3x3: a ground-truth pixel (x, y, 1) maps to warp @ (x, y, 1) in the restored image


def _as_float(img: np.ndarray, name: str) -> np.ndarray:
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'{name}: expected an (H, W, 3) RGB image, got shape {img.shape}')
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    return img.astype(np.float32)


def ecc_align(restored: np.ndarray, gt: np.ndarray, motion: str = 'homography') -> Alignment:
    """Align ``restored`` to ``gt`` (RGB, uint8 or float in [0, 1], one size) as RealBlur's evaluation does."""
    if motion not in MOTIONS:
        raise ValueError(f"motion: {motion!r} is not one of {', '.join(MOTIONS)}")
    z, x = _as_float(restored, 'restored'), _as_float(gt, 'gt')
    if z.shape != x.shape:
        raise ValueError(f'restored and gt differ in size: {z.shape} vs {x.shape}')
    energy = float(np.sum(z.astype(np.float64) ** 2))
    scale = float(np.sum(x.astype(np.float64) * z)) / energy if energy > 0 else 1.0
    matched = (z * scale).astype(np.float32)
    warp = np.eye(3, dtype=np.float32) if motion == 'homography' else np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ECC_ITERATIONS, 0)
    try:
        _, warp = cv2.findTransformECC(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.cvtColor(matched, cv2.COLOR_RGB2GRAY),
                                       warp, MOTIONS[motion], criteria, None, ECC_PREFILTER)
    except cv2.error as err:
        raise ValueError(f'RealBlur alignment failed (ECC found no {motion} between the images): '
                         f'{str(err).strip().splitlines()[-1]}') from None
    if warp.shape == (2, 3):
        warp = np.vstack([warp, np.array([[0, 0, 1]], dtype=np.float32)])
    size = (x.shape[1], x.shape[0])
    aligned = cv2.warpPerspective(matched, warp, size, flags=cv2.INTER_CUBIC + cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REFLECT)
    region = cv2.warpPerspective(np.ones_like(matched), warp, size, flags=cv2.INTER_NEAREST + cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return Alignment(restored=aligned * region, gt=x * region, region=region, warp=warp)


def masked_psnr(gt: np.ndarray, test: np.ndarray, region: np.ndarray) -> float:
    """PSNR (peak 1) of images already multiplied by ``region``, over the region's values only."""
    err = np.sum((gt.astype(np.float64) - test.astype(np.float64)) ** 2) / np.sum(region, dtype=np.float64)
    return float(10.0 * np.log10(1.0 / err))


def masked_ssim(gt: np.ndarray, test: np.ndarray, region: np.ndarray) -> float:
    """Mean SSIM over ``region`` of images already multiplied by it (H, W, 3 in [0, 1])."""
    from skimage.metrics import structural_similarity

    _, ssim_map = structural_similarity(gt.astype(np.float64), test.astype(np.float64), channel_axis=2,
                                        gaussian_weights=True, sigma=SSIM_SIGMA, use_sample_covariance=False,
                                        data_range=1.0, full=True)
    b = SSIM_BORDER
    inner = region[b:-b, b:-b].astype(np.float64)
    per_channel = (ssim_map[b:-b, b:-b] * inner).sum(axis=(0, 1)) / inner.sum(axis=(0, 1))
    return float(np.mean(per_channel))


def realblur_scores(restored: np.ndarray, gt: np.ndarray) -> dict:
    """{'psnr', 'ssim'} of an 8-bit RGB pair under RealBlur's protocol (module docstring)."""
    al = ecc_align(restored, gt)
    return {'psnr': masked_psnr(al.gt, al.restored, al.region), 'ssim': masked_ssim(al.gt, al.restored, al.region)}
