"""Opt-in CPU inference speed-ups, applied explicitly by the commands that want them.

``drcnet.archs`` never imports this package: the networks there are the research code, one autograd
implementation of each operation. ``drcnet-infer``, ``test.py`` and ``scripts/benchmark.py`` call
:func:`accelerate` on a built network and :func:`reuse_freed_cpu_memory` once per process when they
restore on the CPU; results are the same as without them (``tests/test_accel.py``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

import torch
from torch import nn

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


def reuse_freed_cpu_memory() -> bool:
    """Make glibc's malloc keep freed memory for the next tensors instead of returning it to the system.

    A CPU forward pass allocates and frees maps of several MB each; by default glibc hands such blocks
    back (munmap, heap trimming) and every pass faults fresh zeroed pages in again: a paper-network
    forward at 256 px took 600-720 ms with glibc's defaults, 510-530 ms with this setting
    (``scripts/benchmark.py``). The process keeps the memory of those blocks, as jemalloc or tcmalloc
    would. Called explicitly by the command-line entry points that restore images on the CPU
    (``drcnet-infer``, ``test.py``, the benchmark), never on import; a no-op off glibc, when
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


def accelerate(net: nn.Module, device: torch.device | str = 'cpu') -> nn.Module:
    """Prepare ``net`` for inference on ``device``, in place: evaluation mode and, on the CPU, channels-last
    weights (oneDNN convolves NHWC maps directly and reorders NCHW ones around every convolution).
    Returns ``net``."""
    net.eval()
    if torch.device(device).type == 'cpu':
        net.to(memory_format=torch.channels_last)
    return net
