"""Checkpoint files: atomic writing, code-free reading, and strict network loading with a report.

Our network checkpoints hold ``{'params': state, 'params_ema': state (if EMA), 'network_g': options}``.
The release's hold ``{'params': state}`` or a bare state dict; MPRNet-family releases (DGUNet) hold
``{'epoch', 'state_dict', 'optimizer'}``, CCNet's authors' ``{'model': state}``; all of them load here.
A trusted file that holds other Python objects is rewritten as one that does not with
``python -m drcnet.convert_checkpoint IN.pth OUT.pth``.
"""
from __future__ import annotations

import argparse
import logging
import os
import pickle
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

logger = logging.getLogger('basicsr')

PARAM_KEYS = ('auto', 'params', 'params_ema', 'state_dict', 'model')  # 'model': CCNet's authors' files
BARE = '<state dict>'  # how a report names a checkpoint that is itself the state dict
_SHOW = 5  # how many offending keys an error lists


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable, or does not fit the network."""


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temp file beside ``path``, fsync, then rename over ``path``.

    A crash or kill at any moment leaves either the old file or the new one, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable where the OS allows it (not on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_file(path: str | os.PathLike) -> dict:
    """Read a checkpoint with ``weights_only=True`` onto the CPU; never runs code from the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint file not found: {path}')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # torch raises several types for truncated, corrupt or code-bearing files
        raise CheckpointError(_unreadable_reason(path, err)) from None
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f'checkpoint {path}: expected a dict, found {type(ckpt).__name__}')
    return ckpt


# What torch's weights-only unpickler says when it meets a Python object it will not build.
_REFUSED_GLOBAL = re.compile(r'GLOBAL (\S+)')
_REFUSED_OBJECT = re.compile(r'(?:but got|unrecognized function) (.+?)(?: which belongs to|$)', re.MULTILINE)


def _unreadable_reason(path: Path, err: Exception) -> str:
    """Why ``path`` did not load, in our words: torch's own message suggests ``weights_only=False``."""
    text = str(err)
    detail = text.split('WeightsUnpickler error:', 1)[1] if 'WeightsUnpickler error:' in text else text
    detail = detail.strip().splitlines()[0].strip() if detail.strip() else type(err).__name__
    if isinstance(err, pickle.UnpicklingError):
        found = _REFUSED_GLOBAL.search(detail) or _REFUSED_OBJECT.search(detail)
        if found:
            out = path.with_name(f'{path.stem}_weights{path.suffix or ".pth"}')
            return (f'checkpoint {path} holds Python objects other than tensors ({found.group(1).rstrip(".")}); '
                    f'reading them could run code, so it is refused. If you trust its source, convert it once to '
                    f'a tensors-only file: python -m drcnet.convert_checkpoint {path} {out}')
    return f'cannot read checkpoint {path}: it is truncated or corrupt ({type(err).__name__}: {detail})'


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _strip_module(state: Mapping[str, torch.Tensor]) -> dict:
    """Drop the ``module.`` prefix that DataParallel/DDP saves add."""
    if state and all(k.startswith('module.') for k in state):
        return {k[len('module.'):]: v for k, v in state.items()}
    return dict(state)


def select_state_dict(ckpt: Mapping, param_key: str = 'params', path: Any = None) -> tuple[str, dict]:
    """(the key used, the state dict) of a checkpoint; see :func:`extract_state_dict`."""
    where = f' of {path}' if path is not None else ''
    if param_key not in PARAM_KEYS:
        raise ValueError(f"param_key: {param_key!r} is not one of {', '.join(PARAM_KEYS)}")
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f'checkpoint{where}: expected a dict, found {type(ckpt).__name__}')
    candidates = ('params_ema', 'params', 'state_dict', 'model') if param_key == 'auto' else (param_key,)
    for key in candidates:
        if key in ckpt:
            state = ckpt[key]
            if not _is_state_dict(state):
                raise CheckpointError(f'checkpoint{where}: {key!r} is not a state dict of tensors')
            return key, _strip_module(state)
    if _is_state_dict(ckpt):  # the release's bare state dict: the key choice does not apply
        return BARE, _strip_module(ckpt)
    present = ', '.join(repr(k) for k in ckpt) or 'none'
    wanted = ' or '.join(repr(k) for k in candidates)
    raise CheckpointError(f'checkpoint{where} has no {wanted} entry (keys present: {present}); '
                          f'choose another param_key ({", ".join(PARAM_KEYS)})')


def extract_state_dict(ckpt: Mapping, param_key: str = 'params', path: Any = None) -> dict:
    """The network state dict of a checkpoint.

    ``param_key``: 'params', 'params_ema', 'state_dict' (MPRNet-family files), 'model' (CCNet's authors'
    files), or 'auto' (the first of params_ema, params, state_dict and model present). A bare state
    dict (the release's other format) is returned as is. A ``module.`` prefix is removed.
    """
    return select_state_dict(ckpt, param_key, path)[1]


def network_options_from(ckpt: Mapping) -> dict | None:
    """The network options (``network_g``) a checkpoint records, or None (e.g. the release's files)."""
    opts = ckpt.get('network_g') if isinstance(ckpt, Mapping) else None
    return dict(opts) if isinstance(opts, Mapping) else None


def _unwrap(net: nn.Module) -> nn.Module:
    wrappers = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    return net.module if isinstance(net, wrappers) else net


def _listing(items: list, total: int) -> str:
    more = f' (+{total - len(items)} more)' if total > len(items) else ''
    return ', '.join(str(i) for i in items) + more


def state_dict_fit(own: Mapping[str, torch.Tensor], state: Mapping, prefix: str = '') -> dict:
    """How ``state`` fits a module whose state dict is ``own`` (``state``'s names are ``prefix`` + own's).

    Returns ``usable`` (own's names to the tensors that fit), ``missing`` and ``unexpected`` key lists and
    ``mismatched`` (key, shape in ``state``, shape in ``own``); keys of ``state`` outside ``prefix`` are ignored.
    """
    usable, missing, mismatched = {}, [], []
    for key, ref in own.items():
        value = state.get(prefix + key)
        if value is None:
            missing.append(prefix + key)
        elif not torch.is_tensor(value) or value.shape != ref.shape:
            found = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
            mismatched.append((prefix + key, found, tuple(ref.shape)))
        else:
            usable[key] = value
    unexpected = [k for k in state if str(k).startswith(prefix) and str(k)[len(prefix):] not in own]
    return {'usable': usable, 'missing': missing, 'unexpected': unexpected, 'mismatched': mismatched}


def fit_problems(fit: Mapping, unexpected: bool = True) -> list[str]:
    """One phrase per kind of problem in a :func:`state_dict_fit` result, naming the first few keys."""
    problems = []
    if fit['missing']:
        problems.append(f"{len(fit['missing'])} missing from the file: "
                        f"{_listing(fit['missing'][:_SHOW], len(fit['missing']))}")
    if unexpected and fit['unexpected']:
        problems.append(f"{len(fit['unexpected'])} unexpected in the file: "
                        f"{_listing(fit['unexpected'][:_SHOW], len(fit['unexpected']))}")
    if fit['mismatched']:
        shown = [f'{k} file {a} vs network {b}' for k, a, b in fit['mismatched'][:_SHOW]]
        problems.append(f"{len(fit['mismatched'])} with another shape: {_listing(shown, len(fit['mismatched']))}")
    return problems


def load_network(net: nn.Module, path: str | os.PathLike, param_key: str = 'params', strict: bool = True,
                 ckpt: Mapping | None = None) -> dict:
    """Load the weights of ``path`` into ``net`` and return a report.

    ``strict``: any missing, unexpected or mis-shaped tensor raises a CheckpointError naming the first
    few. Non-strict loads the tensors whose name and shape match and logs the rest. ``ckpt`` reuses
    an already read file. Report keys: path, param_key, loaded, missing, unexpected, mismatched.
    """
    net = _unwrap(net)
    if ckpt is None:
        ckpt = load_file(path)
    key, state = select_state_dict(ckpt, param_key, path)
    fit = state_dict_fit(net.state_dict(), state)
    report = {'path': str(path), 'param_key': key, 'missing': fit['missing'], 'unexpected': fit['unexpected'],
              'mismatched': fit['mismatched'], 'network_g': network_options_from(ckpt)}
    problems = fit_problems(fit)
    if problems and strict:
        hint = ''
        if report['network_g'] is None:
            hint = ' The file records no network options: give the matching ones (--opt or --task).'
        raise CheckpointError(f"checkpoint {path} ({key!r}) does not fit {type(net).__name__} "
                              f"(strict loading): {'; '.join(problems)}.{hint}")
    net.load_state_dict(fit['usable'], strict=strict)
    report['loaded'] = len(fit['usable'])
    logger.info("loaded %d tensors from %r of %s", len(fit['usable']), key, path)
    if problems:
        logger.warning('non-strict loading of %s: %s', path, '; '.join(problems))
    return report


def _cpu_state(net: nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in _unwrap(net).state_dict().items()}


def _plain(value: Any) -> Any:
    """Options as plain dict/list/scalars, the only kinds a weights_only load accepts."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f'network options: value {value!r} of type {type(value).__name__} cannot be stored '
                     f'in a checkpoint (use numbers, strings, lists or mappings)')


def save_network(net: nn.Module, path: str | os.PathLike, network_opts: Mapping, ema_net: nn.Module | None = None,
                 extra: Mapping | None = None) -> Path:
    """Atomically write ``{'params', 'params_ema' (with ema_net), 'network_g'}`` plus ``extra`` entries."""
    if not isinstance(network_opts, Mapping) or 'type' not in network_opts:
        raise ValueError(f'network_opts: expected a mapping with a "type" key, got {network_opts!r}')
    ckpt = {'params': _cpu_state(net), 'network_g': _plain(network_opts)}
    if ema_net is not None:
        ckpt['params_ema'] = _cpu_state(ema_net)
    for key, value in (extra or {}).items():
        if key in ckpt:
            raise ValueError(f'extra: key {key!r} is reserved for the network checkpoint')
        ckpt[key] = value
    return atomic_save(ckpt, path)


# --- converting a trusted pickled checkpoint ----------------------------------------------------
_PLAIN_TYPES = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size)
_DROP = object()


def _tensors_only(obj: Any, where: str, dropped: list) -> Any:
    """``obj`` as what a weights-only load rebuilds: modules and optimisers become their state dicts,
    ``argparse.Namespace`` a dict, numpy arrays tensors; anything else is recorded in ``dropped``."""
    import numpy as np

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, _PLAIN_TYPES):
        return obj
    if isinstance(obj, np.ndarray) and obj.dtype.kind in 'biufc':
        return torch.from_numpy(np.array(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, argparse.Namespace):
        obj = vars(obj)
    elif callable(getattr(obj, 'state_dict', None)):  # nn.Module, optimiser, scheduler, grad scaler
        obj = obj.state_dict()
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            key = key if isinstance(key, (str, int, float, bool)) else str(key)
            value = _tensors_only(value, f'{where}.{key}' if where else str(key), dropped)
            if value is not _DROP:
                out[key] = value
        return out
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [_tensors_only(v, f'{where}[{i}]', dropped) for i, v in enumerate(obj)]
        items = [v for v in items if v is not _DROP]
        return tuple(items) if isinstance(obj, tuple) else items
    dropped.append(f'{where or "<top>"} ({type(obj).__module__}.{type(obj).__qualname__})')
    return _DROP


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> dict:
    """Rewrite a trusted checkpoint ``src`` as ``dst``, which ``load_file`` reads (tensors and plain values).

    Unpickling ``src`` runs whatever code it holds: use this only on files from a trusted source. ``src``
    is left as it is and ``dst`` must not exist. Returns {'tensors': count, 'dropped': [entry (type), ...]}.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise CheckpointError(f'checkpoint file not found: {src}')
    if dst.exists():
        raise CheckpointError(f'{dst} exists; choose a new output name (the input is never overwritten)')
    try:
        obj = torch.load(src, map_location='cpu', weights_only=False)
    except Exception as err:
        raise CheckpointError(f'cannot read checkpoint {src} even as a trusted file '
                              f'({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ""})'
                              ) from None
    dropped: list = []
    plain = _tensors_only(obj, '', dropped)
    if not isinstance(plain, Mapping):
        raise CheckpointError(f'checkpoint {src} holds a {type(obj).__name__}, not a model, state dict or dict of them')
    atomic_save(plain, dst)
    try:
        load_file(dst)
    except CheckpointError:
        dst.unlink()
        raise
    tensors = sum(1 for _ in _iter_tensors(plain))
    return {'tensors': tensors, 'dropped': dropped}


def _iter_tensors(obj: Any):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from _iter_tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _iter_tensors(value)
