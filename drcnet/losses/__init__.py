"""Losses; every ``*_loss.py`` module registers into LOSS_REGISTRY on import.

basicsr's own ``L1Loss`` and ``MSELoss`` are registered too (``import drcnet`` imports basicsr) and serve as
pixel losses; ``CharbonnierLoss`` (replacing basicsr's, see ``pixel_loss``), ``EdgeLoss``, ``PSNRLoss`` and ``FFTLoss``
(CCNet's frequency loss) are ours.
"""
from drcnet.registry import import_modules

import_modules(__name__, '_loss')

from drcnet.losses.contrastive_loss import ExtraCRLoss, IntraCRLoss  # noqa: E402
from drcnet.losses.fft_loss import FFTLoss  # noqa: E402
from drcnet.losses.pixel_loss import CharbonnierLoss, EdgeLoss, PSNRLoss  # noqa: E402

__all__ = ['CharbonnierLoss', 'EdgeLoss', 'ExtraCRLoss', 'FFTLoss', 'IntraCRLoss', 'PSNRLoss']
