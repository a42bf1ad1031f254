"""Evaluate a restoration function on a dataset: basicsr's PSNR/SSIM on the 8-bit images.

RGB sets are scored on the three channels; Y sets on the 8-bit Y of MATLAB's ``rgb2ycbcr`` (the
deraining tables' protocol, see ``drcnet.metrics.y_channel``); sets with ``protocol: realblur`` after
RealBlur's alignment, inside the region it covers (``drcnet.metrics.realblur``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from drcnet.engine.image_files import write_image
from drcnet.engine.schema import PROTOCOLS
from drcnet.metrics import calculate_psnr, calculate_ssim
from drcnet.metrics.realblur import ecc_align, masked_psnr, masked_ssim
from drcnet.metrics.y_channel import matlab_y

METRIC_FUNCTIONS = {'calculate_psnr': calculate_psnr, 'calculate_ssim': calculate_ssim}
DEFAULT_METRICS = {'psnr': {'type': 'calculate_psnr', 'crop_border': 0},
                   'ssim': {'type': 'calculate_ssim', 'crop_border': 0}}
REALBLUR_LABEL = 'RealBlur-ECC'
REALBLUR_METRICS = {'calculate_psnr': masked_psnr, 'calculate_ssim': masked_ssim}


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounded as a saved image is."""
    arr = img.detach().float().clamp(0, 1).cpu().numpy().transpose(1, 2, 0)
    return (arr * 255.0).round().astype(np.uint8)


def score(restored: np.ndarray, gt: np.ndarray, metrics: dict, test_y_channel: bool,
          protocol: str = 'standard') -> dict:
    """Metric values of two RGB uint8 images; on the MATLAB 8-bit Y channel where ``test_y_channel``;
    after RealBlur's alignment, inside the covered region, with ``protocol='realblur'``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if protocol == 'realblur':
        al = ecc_align(restored, gt)
        return {name: REALBLUR_METRICS[cfg['type']](al.gt, al.restored, al.region) for name, cfg in metrics.items()}
    y_pair = None
    out = {}
    for name, cfg in metrics.items():
        fn = METRIC_FUNCTIONS[cfg['type']]
        a, b = restored, gt
        if cfg.get('test_y_channel', test_y_channel):
            if y_pair is None:
                y_pair = matlab_y(restored)[..., None], matlab_y(gt)[..., None]
            a, b = y_pair
        out[name] = float(fn(a, b, crop_border=cfg.get('crop_border', 0), input_order='HWC', test_y_channel=False))
    return out


def protocol_label(test_y_channel: bool, protocol: str = 'standard') -> str:
    """The table's protocol column: Y, RGB or RealBlur-ECC."""
    return REALBLUR_LABEL if protocol == 'realblur' else 'Y' if test_y_channel else 'RGB'


def evaluate(restore_fn: Callable[[torch.Tensor], torch.Tensor], loader, dataset_name: str,
             metrics: dict | None = None, test_y_channel: bool = False, save_dir: str | Path | None = None,
             suffix: str | None = None, pbar: bool = True, with_input: bool = False,
             protocol: str = 'standard') -> dict:
    """One table row for ``dataset_name``: mean metrics over its images, count, seconds."""
    metrics = metrics or DEFAULT_METRICS
    totals: dict = {}
    count, start = 0, time.perf_counter()
    bar = tqdm(total=len(loader), desc=f'eval {dataset_name}', unit='img', disable=not pbar, leave=False)
    for data in loader:
        restored = restore_fn(data['lq'])
        for i in range(restored.shape[0]):
            out_img = to_uint8(restored[i])
            values = {}
            if 'gt' in data:
                gt_img = to_uint8(data['gt'][i])
                values = score(out_img, gt_img, metrics, test_y_channel, protocol)
                if with_input:
                    values.update({f'input_{k}': v for k, v in
                                   score(to_uint8(data['lq'][i]), gt_img, metrics, test_y_channel, protocol).items()})
            for k, v in values.items():
                totals[k] = totals.get(k, 0.0) + v
            if save_dir is not None:
                stem = Path(str(data['lq_path'][i])).stem
                name = f'{stem}_{suffix}.png' if suffix else f'{stem}.png'
                write_image(Path(save_dir) / dataset_name / name, out_img.astype(np.float32) / 255.0)
            count += 1
        bar.update(1)
    bar.close()
    row = {'dataset': dataset_name, 'protocol': protocol_label(test_y_channel, protocol), 'images': count,
           'seconds': time.perf_counter() - start}
    row.update({k: v / max(count, 1) for k, v in totals.items()})
    return row
