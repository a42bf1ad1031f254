"""basicsr's registries, and one checked way to build a registered component from options."""
from __future__ import annotations

import difflib
import importlib
import inspect
from pathlib import Path
from typing import Any, Mapping

from drcnet import _compat  # noqa: F401  (must precede every basicsr import)
from basicsr.utils.registry import (ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY,
                                    MODEL_REGISTRY, Registry)

__all__ = ['ARCH_REGISTRY', 'DATASET_REGISTRY', 'LOSS_REGISTRY', 'METRIC_REGISTRY', 'MODEL_REGISTRY',
           'build', 'check_kwargs', 'did_you_mean', 'import_modules', 'register_replacing', 'resolve']


def did_you_mean(word: str, choices) -> str:
    """A ' (did you mean X?)' suffix for an unknown name, or ''."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f' (did you mean {close[0]!r}?)' if close else ''


def import_modules(package: str, suffix: str) -> list:
    """Import every module of ``package`` whose file name ends with ``suffix`` (registration)."""
    folder = Path(importlib.import_module(package).__file__).parent
    names = sorted(p.stem for p in folder.glob(f'*{suffix}.py'))
    return [importlib.import_module(f'{package}.{name}') for name in names]


def register_replacing(registry: Registry):
    """Like ``registry.register()``, for a class that replaces basicsr's component of the same name."""
    def deco(cls):
        registry._obj_map.pop(cls.__name__, None)  # basicsr's Registry refuses a second entry of a name
        return registry.register()(cls)
    return deco


def resolve(registry: Registry, name: str, where: str = 'type'):
    """The object registered as ``name``; an unknown name is an error listing the choices."""
    if name not in registry:
        choices = sorted(registry.keys())
        raise ValueError(f'{where}: {name!r} is not a registered {registry._name}{did_you_mean(name, choices)}; '
                         f'choices: {", ".join(choices)}')
    return registry.get(name)


def check_kwargs(target, kwargs: Mapping[str, Any], where: str, also: tuple = ()) -> None:
    """Raise a ValueError naming any keyword that ``target`` (a class or function) does not accept.

    ``also``: further accepted keys (read by the engine, not passed to ``target``), offered in the suggestions.
    """
    params = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if n != 'self' and p.kind is not inspect.Parameter.VAR_POSITIONAL]
    accepted += [k for k in also if k not in accepted]
    for key in kwargs:
        if key not in accepted:
            raise ValueError(f'{where}.{key}: unknown option for {getattr(target, "__name__", target)}'
                             f'{did_you_mean(key, accepted)}; valid keys: {", ".join(accepted)}')


def build(registry: Registry, cfg: Mapping[str, Any], where: str = '', **extra):
    """Build ``cfg['type']`` from ``registry`` with the other keys as keyword arguments.

    ``cfg`` is not modified. ``where`` names the option block in error messages (e.g. 'network_g').
    """
    if not isinstance(cfg, Mapping):
        raise ValueError(f'{where or "options"}: expected a mapping with a "type" key, got {cfg!r}')
    kwargs = dict(cfg)
    if 'type' not in kwargs:
        raise ValueError(f'{where or "options"}: missing "type"; choices: {", ".join(sorted(registry.keys()))}')
    name = kwargs.pop('type')
    cls = resolve(registry, name, where=f'{where}.type' if where else 'type')
    kwargs.update(extra)
    check_kwargs(cls, kwargs, where or name)
    return cls(**kwargs)
