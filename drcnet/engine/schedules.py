"""Learning-rate schedules in closed form (a function of the iteration), with optional linear warm-up.

Closed forms make a resumed run follow exactly the curve of an uninterrupted one.
"""
from __future__ import annotations

import logging
import math
from typing import Callable

import torch

from drcnet.registry import check_kwargs, did_you_mean

logger = logging.getLogger('basicsr')


def cosine(T_max: int, eta_min: float = 0.0) -> Callable[[float, int], float]:
    """Cosine annealing from the base lr to ``eta_min`` over ``T_max`` iterations, then flat."""
    def lr_at(base: float, it: int) -> float:
        t = min(it, T_max)
        return eta_min + (base - eta_min) * (1 + math.cos(math.pi * t / T_max)) / 2
    return lr_at


def multistep(milestones: list, gamma: float = 0.5) -> Callable[[float, int], float]:
    """Multiply the lr by ``gamma`` at each milestone iteration."""
    def lr_at(base: float, it: int) -> float:
        return base * gamma ** sum(it >= m for m in milestones)
    return lr_at


def constant() -> Callable[[float, int], float]:
    return lambda base, it: base


SCHEDULES = {'CosineAnnealingLR': cosine, 'MultiStepLR': multistep, 'ConstantLR': constant}


def check_scheduler_options(cfg: dict, where: str = 'train.scheduler') -> None:
    name = cfg.get('type')
    if name not in SCHEDULES:
        raise ValueError(f'{where}.type: {name!r} is not one of {", ".join(SCHEDULES)}{did_you_mean(name, SCHEDULES)}')
    check_kwargs(SCHEDULES[name], {k: v for k, v in cfg.items() if k != 'type'}, where)


def follow_total_iter(cfg: dict | None, total_iter: int, where: str = 'train.scheduler') -> dict | None:
    """A copy of ``cfg`` whose cosine period is ``total_iter`` unless ``T_max`` is given; warns when they differ.

    The period follows the run's length so that ``--force_yml train:total_iter=N`` anneals within N iterations.
    """
    if cfg is None or cfg.get('type') != 'CosineAnnealingLR':
        return cfg
    cfg = dict(cfg)
    if cfg.get('T_max') is None:
        cfg['T_max'] = total_iter
    elif isinstance(cfg['T_max'], bool) or not isinstance(cfg['T_max'], int) or cfg['T_max'] < 1:
        raise ValueError(f'{where}.T_max: expected a positive integer, got {cfg["T_max"]!r}; '
                         f'leave it out to anneal over train.total_iter')
    elif cfg['T_max'] != total_iter:
        gap = abs(total_iter - cfg['T_max'])
        when = (f'and stays there for the last {gap} iterations' if cfg['T_max'] < total_iter
                else f'{gap} iterations after this run ends')
        logger.warning(f'{where}.T_max ({cfg["T_max"]}) differs from train.total_iter ({total_iter}): the learning '
                       f'rate reaches eta_min at iteration {cfg["T_max"]}, {when}; remove {where}.T_max to anneal '
                       f'over train.total_iter')
    return cfg


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: dict | None,
                    warmup_iter: int = -1) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepping once per iteration: the schedule of ``cfg`` times a linear warm-up."""
    cfg = dict(cfg or {'type': 'ConstantLR'})
    check_scheduler_options(cfg)
    lr_at = SCHEDULES[cfg.pop('type')](**cfg)

    def factor_for(base: float) -> Callable[[int], float]:
        def factor(it: int) -> float:
            warm = min(1.0, (it + 1) / warmup_iter) if warmup_iter > 0 else 1.0
            return warm * lr_at(base, it) / base
        return factor

    bases = [group.get('initial_lr', group['lr']) for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor_for(b) for b in bases])
