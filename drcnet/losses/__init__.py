"""Losses; every ``*_loss.py`` module registers into LOSS_REGISTRY on import.

basicsr's own ``L1Loss``, ``MSELoss`` and ``CharbonnierLoss`` are registered too (``import drcnet``
imports basicsr) and serve as pixel losses; ``PSNRLoss`` is ours, and ``FFTLoss`` (CCNet's frequency loss).
"""
from drcnet.registry import import_modules

import_modules(__name__, '_loss')

from drcnet.losses.contrastive_loss import ExtraCRLoss, IntraCRLoss  # noqa: E402
from drcnet.losses.fft_loss import FFTLoss  # noqa: E402
from drcnet.losses.pixel_loss import PSNRLoss  # noqa: E402

__all__ = ['ExtraCRLoss', 'FFTLoss', 'IntraCRLoss', 'PSNRLoss']
