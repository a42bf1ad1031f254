"""The one place that chooses a device and guards CUDA-only calls."""
from __future__ import annotations

import os

import torch


def cuda_available() -> bool:
    return torch.cuda.is_available()


def pick_device(preference: str | None = 'auto', local_rank: int | None = None) -> torch.device:
    """``auto`` picks CUDA (the local rank's GPU under torchrun) when present, else the CPU."""
    preference = (preference or 'auto').lower()
    if preference not in ('auto', 'cpu', 'cuda'):
        raise ValueError(f"device: {preference!r} is not one of auto, cpu, cuda")
    if preference == 'cpu' or (preference == 'auto' and not cuda_available()):
        return torch.device('cpu')
    if not cuda_available():
        raise ValueError("device: 'cuda' was asked for but torch.cuda.is_available() is False")
    if local_rank is None:
        local_rank = int(os.environ.get('LOCAL_RANK', 0))
    torch.cuda.set_device(local_rank)
    return torch.device('cuda', local_rank)


def default_backend(device: torch.device) -> str:
    """NCCL for CUDA processes, Gloo otherwise."""
    return 'nccl' if device.type == 'cuda' else 'gloo'


def pin_memory_for(device: torch.device) -> bool:
    return device.type == 'cuda'
