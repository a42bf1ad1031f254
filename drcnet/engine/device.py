"""The one place that chooses a device and guards CUDA-only calls."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

import torch

logger = logging.getLogger('basicsr')

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks up to 32 MiB (a 64-channel 256 x 256 map is 16 MiB) come from the heap, which is never
# shrunk when they are freed; larger ones are mapped and returned at once as by default, so that
# tiles of large images do not pin memory (a 4000 x 3000 image in 512 px tiles peaks ~2.1 GB
# either way, 2.6-2.9 GB when all blocks come from the heap).
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = (1 << 31) - 1
ALLOCATOR_ENV = 'DRCNET_CPU_ALLOCATOR'  # 'default' leaves the C allocator as it is
_allocator_state: dict = {}


def cuda_available() -> bool:
    return torch.cuda.is_available()


def reuse_freed_cpu_memory() -> bool:
    """Make glibc's malloc keep freed memory for the next tensors instead of returning it to the system.

    A CPU forward pass allocates and frees maps of several MB each; by default glibc hands such blocks
    back (munmap, heap trimming) and every pass faults fresh zeroed pages in again: a paper-network
    forward at 256 px took 600-720 ms with glibc's defaults, 510-530 ms with this setting
    (``scripts/benchmark.py``). The process keeps the memory of those blocks, as jemalloc or tcmalloc
    would. Called once per process by ``pick_device`` on the CPU; a no-op off glibc, when
    ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` or ``LD_PRELOAD`` choose otherwise, or with
    ``DRCNET_CPU_ALLOCATOR=default``. Returns whether the setting is in effect.
    """
    if 'applied' in _allocator_state:
        return _allocator_state['applied']
    applied, why = False, ''
    if os.environ.get(ALLOCATOR_ENV, '').lower() == 'default':
        why = f'{ALLOCATOR_ENV}=default'
    elif any(k in os.environ for k in ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_', 'LD_PRELOAD')):
        why = 'the environment sets the allocator'
    elif not sys.platform.startswith('linux'):
        why = f'not glibc ({sys.platform})'
    else:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
            gnu_libc_version = libc.gnu_get_libc_version  # AttributeError off glibc (musl)
            gnu_libc_version.restype = ctypes.c_char_p
            applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
                           and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
            why = f'glibc {gnu_libc_version().decode()}' + ('' if applied else ': mallopt refused')
        except (OSError, AttributeError) as err:
            why = f'no glibc malloc ({err})'
    _allocator_state.update(applied=applied, why=why)
    logger.debug('CPU allocator: %s (%s)', 'freed memory kept for reuse' if applied else 'unchanged', why)
    return applied


def pick_device(preference: str | None = 'auto', local_rank: int | None = None) -> torch.device:
    """``auto`` picks CUDA (the local rank's GPU under torchrun) when present, else the CPU."""
    preference = (preference or 'auto').lower()
    if preference not in ('auto', 'cpu', 'cuda'):
        raise ValueError(f"device: {preference!r} is not one of auto, cpu, cuda")
    if preference == 'cpu' or (preference == 'auto' and not cuda_available()):
        reuse_freed_cpu_memory()
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
