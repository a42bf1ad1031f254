"""The Y channel of 8-bit RGB as MATLAB's ``rgb2ycbcr`` returns it: uint8, so rounded to 8 bits.

Deraining tables (MPRNet's ``evaluate_PSNR_SSIM.m``, which the field's numbers come from) score the
Y channel of that conversion. basicsr's ``test_y_channel`` keeps Y as a float instead, which moves
PSNR by about 0.01 dB at 30-40 dB; ``matlab_y`` gives the 8-bit Y the tables were computed on.

Exactly representable halves occur for 194 of the 16.7 million 8-bit colours; there the result depends on
the order of the floating-point operations. We follow MATLAB's (below), which lands a hair under the half
for most of them; GNU Octave's image package orders them differently and rounds most of them up. Either
way one Y level on such pixels moves a table by less than 1e-5 dB.
"""
from __future__ import annotations

import numpy as np

__all__ = ['matlab_y']

# ITU-R BT.601 for 8-bit video range: Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255. MATLAB scales
# the coefficients by 1/255 and sums R, G, B and the offset in that order, in double precision.
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) * (1.0 / 255.0)


def matlab_y(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 Y, rounded half away from zero as MATLAB stores uint8."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'matlab_y: expected an (H, W, 3) uint8 RGB image, got {rgb.dtype} {rgb.shape}')
    x = rgb.astype(np.float64)
    y = _Y_WEIGHTS[0] * x[..., 0] + _Y_WEIGHTS[1] * x[..., 1] + _Y_WEIGHTS[2] * x[..., 2] + 16.0
    # y - floor(y) is exact, so a computed half rounds up as MATLAB's uint8 does (np.round would round to even)
    whole = np.floor(y)
    return np.clip(whole + (y - whole >= 0.5), 0, 255).astype(np.uint8)
