"""Pre-flight check: every file and folder the options name exists, before any work starts.

A missing path is reported as one line naming the option key, the path and what creates it (the
preparation script and its section of ``datasets/README.md``), instead of a traceback from deep inside
a data set or loss once the run has begun.
"""
from __future__ import annotations

from pathlib import Path, PurePath
from typing import Iterator

from drcnet.engine.schema import OptionError

DATA_README = 'datasets/README.md'

# Folder name of each benchmark in our layout -> (its preparation script, its section of datasets/README.md).
PREPARATION = {
    'rain13k': ('scripts/data_preparation/rain13k.py', 'Deraining: Rain13k and the five test sets'),
    'sidd': ('scripts/data_preparation/sidd.py', 'Denoising: SIDD'),
    'dnd': ('scripts/data_preparation/dnd.py', 'Denoising: DND'),
    'gopro': ('scripts/data_preparation/gopro.py', 'Deblurring: GoPro'),
    'hide': ('scripts/data_preparation/hide.py', 'Deblurring: HIDE'),
    'realblur': ('scripts/data_preparation/realblur.py', 'Deblurring: RealBlur-J and RealBlur-R'),
}
LMDB = ('scripts/create_lmdb.py', 'lmdb')
DATASET_FOLDER_KEYS = ('dataroot_gt', 'dataroot_lq')


class MissingPathError(OptionError):
    """Paths named in the options that do not exist; one line per path."""


def _data_hint(path: str) -> str:
    """What creates a data path: the preparation script of the benchmark it names, else the README."""
    parts = [part.lower() for part in PurePath(path).parts]
    if any(part.endswith('.lmdb') for part in parts):
        script, section = LMDB
        return f'create it with {script}; {DATA_README}, "{section}"'
    for part in parts:
        if part in PREPARATION:
            script, section = PREPARATION[part]
            return f'create it with {script}; {DATA_README}, "{section}"'
    return f'see {DATA_README} for each benchmark\'s preparation script'


def _expected(opts: dict, is_train: bool) -> Iterator[tuple[str, str, str, str]]:
    """(option key, path, 'folder' or 'file', what creates it) for every path the options name."""
    for name, cfg in (opts.get('datasets') or {}).items():
        for key in DATASET_FOLDER_KEYS:
            if cfg.get(key) is not None and cfg.get('source') != 'samples':
                yield f'datasets.{name}.{key}', str(cfg[key]), 'folder', _data_hint(str(cfg[key]))
        if cfg.get('meta_info_file') is not None:
            path = str(cfg['meta_info_file'])
            hint = (f'{LMDB[0]} writes meta_info.txt into each lmdb; {DATA_README}, "lmdb"'
                    if path.endswith('meta_info.txt') else
                    f'a list of ground-truth file names; {DATA_README}, "PairedRestorationDataset options"')
            yield f'datasets.{name}.meta_info_file', path, 'file', hint
    paths = opts.get('path') or {}
    if paths.get('pretrain_network_g'):
        yield ('path.pretrain_network_g', str(paths['pretrain_network_g']), 'file',
               'a checkpoint you trained, e.g. experiments/<name>/models/net_g_latest.pth, or the release\'s; '
               'README.md, "Evaluation"')
    if is_train and paths.get('resume_state'):
        yield ('path.resume_state', str(paths['resume_state']), 'file',
               'a training state in experiments/<name>/training_states/; --auto_resume finds the newest itself')
    train = (opts.get('train') or {}) if is_train else {}
    for key in ('pixel_opt', 'contrastive_opt'):
        loss = train.get(key) or {}
        weights = loss.get('vgg_weights')
        # 'random' is for tests; with skip_if_no_weights a missing file turns Intra-CR off with a warning
        if weights is not None and weights != 'random' and not loss.get('skip_if_no_weights', False):
            yield (f'train.{key}.vgg_weights', str(weights), 'file',
                   'torchvision\'s vgg19-dcbb9e9d.pth; README.md, "VGG19 weights", or leave the key out to look '
                   'in torchvision\'s cache and experiments/pretrained_models/')


def check_paths(opts: dict, is_train: bool = True) -> None:
    """Raise MissingPathError, one line per missing path, when a file or folder the options name is absent."""
    problems = []
    for key, path, kind, hint in _expected(opts, is_train):
        found = Path(path).expanduser()
        if kind == 'folder' and not found.is_dir():
            what = 'is a file, not a folder' if found.is_file() else 'folder does not exist'
        elif kind == 'file' and not found.is_file():
            what = 'is a folder, not a file' if found.is_dir() else 'file does not exist'
        else:
            continue
        problems.append(f'{key}: {what}: {path} ({hint})')
    if problems:
        raise MissingPathError('\n'.join(problems))
