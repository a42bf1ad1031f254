"""drcnet: DRCNet (ECCV 2022) image restoration on top of basicsr."""
from drcnet import _compat  # noqa: F401  (first: lets basicsr import on current torchvision)

__version__ = '0.1.0'

from drcnet import archs, data, losses, models  # noqa: E402,F401  (registers every component)
from drcnet.archs.drcnet_arch import DRCNet  # noqa: E402
from drcnet.losses import ExtraCRLoss, IntraCRLoss  # noqa: E402

__all__ = ['DRCNet', 'ExtraCRLoss', 'IntraCRLoss', '__version__']
