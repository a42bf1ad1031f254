"""Command-line flags (BasicSR's), safe YAML loading, --force_yml overrides, then validation."""
from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any, Sequence

import yaml

from drcnet.engine.schema import OptionError, validate


def build_parser(description: str, is_train: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('-opt', '--opt', required=True, help='path to the options YAML file')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none',
                        help="'pytorch' under torchrun (reads RANK, WORLD_SIZE, LOCAL_RANK from the environment)")
    # torchrun passes LOCAL_RANK in the environment; older launchers pass one of these flags.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=None, help=argparse.SUPPRESS)
    if is_train:
        parser.add_argument('--auto_resume', action='store_true', help='resume from the newest good training state')
    parser.add_argument('--debug', action='store_true', help='tiny run: print and validate often')
    parser.add_argument('--force_yml', nargs='+', default=None, metavar='KEY:SUB=VALUE',
                        help='override options, e.g. train:total_iter=100 name=test')
    return parser


def load_yaml(path: str | Path) -> dict:
    """Read an options file with yaml.safe_load; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise OptionError(f'options file not found: {path}')
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8'))
    except yaml.YAMLError as err:
        raise OptionError(f'{path}: not valid YAML: {err}') from None
    if not isinstance(data, dict):
        raise OptionError(f'{path}: expected a mapping of options at the top level')
    return data


def apply_overrides(opts: dict, overrides: Sequence[str] | None) -> dict:
    """Apply BasicSR-style ``a:b:c=value`` overrides; values are parsed as YAML scalars."""
    opts = copy.deepcopy(opts)
    for item in overrides or ():
        if '=' not in item:
            raise OptionError(f'--force_yml {item!r}: expected KEY=VALUE (nested keys joined by ":")')
        keys, raw = item.split('=', 1)
        value: Any = yaml.safe_load(raw) if raw.strip() else None
        node = opts
        parts = keys.split(':')
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise OptionError(f'--force_yml {item!r}: {part} is not a mapping')
            node = node[part]
        node[parts[-1]] = value
    return opts


def parse_options(args: argparse.Namespace, is_train: bool = True) -> dict:
    """Load, override, translate and validate; returns the complete options dict."""
    raw = apply_overrides(load_yaml(args.opt), args.force_yml)
    if getattr(args, 'debug', False) and is_train:
        raw = apply_overrides(raw, ['logger:print_freq=1', 'val:val_freq=8', 'logger:save_checkpoint_freq=8'])
    opts = validate(raw, is_train=is_train)
    if getattr(args, 'debug', False) and not opts['name'].startswith('debug'):
        opts['name'] = 'debug_' + opts['name']
    return opts


def dump_options(opts: dict) -> str:
    return yaml.safe_dump(opts, sort_keys=False, default_flow_style=None)
