"""basicsr's metric functions (the numbers the field reports) and the table writer."""
from drcnet import _compat  # noqa: F401
from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_ssim  # noqa: E402

__all__ = ['calculate_psnr', 'calculate_ssim']
