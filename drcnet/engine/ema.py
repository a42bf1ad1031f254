"""Exponential moving average of a network's weights."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``decay * ema + (1 - decay) * weights`` after every update; buffers are copied."""

    def __init__(self, net: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f'train.ema_decay: {decay} must be in (0, 1)')
        self.decay = decay
        self.module = copy.deepcopy(net).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        ema_params = dict(self.module.named_parameters())
        for name, p in net.named_parameters():
            ema_params[name].lerp_(p.detach(), 1.0 - self.decay)
        ema_buffers = dict(self.module.named_buffers())
        for name, b in net.named_buffers():
            ema_buffers[name].copy_(b)
