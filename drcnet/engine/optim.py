"""The optimisers a run may name in ``train.optim_g``, and building one from those options."""
from __future__ import annotations

from typing import Iterable, Mapping

import torch

__all__ = ['OPTIMIZERS', 'build_optimizer']

OPTIMIZERS = ('Adam', 'AdamW', 'SGD', 'RMSprop')  # torch.optim classes by name


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: Mapping, where: str = 'train.optim_g'):
    """``torch.optim.<cfg['type']>(params, **rest of cfg)``; ``cfg`` is not changed."""
    kwargs = dict(cfg)
    name = kwargs.pop('type', None)
    if name not in OPTIMIZERS:
        raise ValueError(f'{where}.type: {name!r} is not one of {", ".join(OPTIMIZERS)}')
    return getattr(torch.optim, name)(params, **kwargs)
