"""Compiled CPU kernels of the DFR block (``csrc/dfr_cpu.cpp``), built on first use.

The first CPU inference compiles the file with ``torch.utils.cpp_extension`` (about 10 s, once per
machine type and version of the file; cached in ``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``) and registers, as ``torch.ops.drcnet``:

- ``channel_stats(x)``: the channel mean and maximum the spatial response starts from;
- ``spatial_response(stats, w_response, w_affine, b_affine)``: the response map M_sr and the gamma and
  beta maps, its 7x7 convolutions on one and two channels;
- ``region_norm_(x, mask, gamma, beta, weight, bias)``: the region norm with per-image statistics and its
  modulation, in three passes over x;
- ``energy_attention_(x, delta, slope)`` and ``energy_attention_mul_(product, x, delta, slope)``: the energy
  attention and its leaky ReLU, written over x or multiplied into the spatial branch.

Where they cannot be built (no C++ compiler) or with ``DRCNET_CPU_KERNELS=0``, :func:`kernels` returns None
and the DFR block computes the same results with PyTorch operations, a few times slower on the CPU.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
from pathlib import Path

import torch

logger = logging.getLogger('basicsr')

SOURCE = Path(__file__).parent / 'csrc' / 'dfr_cpu.cpp'
ENV = 'DRCNET_CPU_KERNELS'
# compiler flags per CPU capability PyTorch detected; the capability is part of the build's name, so a
# cache shared by different machines (a cluster's home directory) never runs code built for another
_ARCH_FLAGS = {
    'AVX512': ['-mavx512f', '-mavx512dq', '-mavx512bw', '-mavx512vl', '-mavx2', '-mfma'],
    'AVX2': ['-mavx2', '-mfma'],
}


def _capability() -> str:
    try:
        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return 'DEFAULT'


def _ninja_on_path() -> None:
    """cpp_extension runs ``ninja`` from PATH: add the pip package's copy when the system has none."""
    if shutil.which('ninja') is None:
        try:
            import ninja
        except ImportError:
            return
        os.environ['PATH'] = ninja.BIN_DIR + os.pathsep + os.environ.get('PATH', '')


def _build(source: Path) -> None:
    capability = _capability()
    digest = hashlib.sha1(source.read_bytes()).hexdigest()[:10]
    _ninja_on_path()
    # importing cpp_extension on a machine without CUDA logs a warning about CUDA_HOME that concerns
    # CUDA extensions only
    cpp_logger = logging.getLogger('torch.utils.cpp_extension')
    level = cpp_logger.level
    cpp_logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        cpp_logger.setLevel(level)
    cpp_extension.load(
        name=f'drcnet_dfr_cpu_{capability.lower()}_{digest}', sources=[str(source)],
        # OpenMP: at::parallel_for is inlined into the kernels and needs it to run on several threads
        extra_cflags=['-O3', '-fopenmp'] + _ARCH_FLAGS.get(capability, []), extra_ldflags=['-fopenmp'],
        is_python_module=False, verbose=False)
    logger.info('DFR CPU kernels ready: %s, compiled for %s', source.name, capability)


@functools.lru_cache(maxsize=None)
def kernels():
    """``torch.ops.drcnet`` with the compiled kernels, or None (turned off, or they could not be built)."""
    setting = os.environ.get(ENV, '1').strip().lower()
    if setting in ('0', 'false', 'no', 'off'):
        logger.info('DFR CPU kernels: off (%s=%s); the DFR blocks run as PyTorch operations', ENV, setting)
        return None
    if setting not in ('1', 'true', 'yes', 'on', ''):
        raise ValueError(f'{ENV}={setting!r}: expected 1 (build and use the CPU kernels) or 0 (PyTorch operations)')
    try:
        _build(SOURCE)
    except Exception as err:  # noqa: BLE001  (no compiler, no ninja, a failed build: fall back, say why)
        lines = str(err).strip().splitlines() or ['']
        # the compiler's first error, else the first line that mentions one, else the last line
        reason = next((line for line in lines if 'error:' in line),
                      next((line for line in lines if 'error' in line.lower()), lines[-1])).strip()
        logger.warning('DFR CPU kernels unavailable (%s: %s); the DFR blocks run as PyTorch operations '
                       '(same results, slower). Set %s=0 to skip the build.', type(err).__name__, reason, ENV)
        return None
    return torch.ops.drcnet
