"""Losses; every ``*_loss.py`` module registers into LOSS_REGISTRY on import."""
from drcnet.registry import import_modules

import_modules(__name__, '_loss')
