"""The declared option keys, their types and defaults, and the alias table for the release's old keys.

`validate(opts)` returns a new, complete options dict (defaults filled) or raises `OptionError`
naming the key, with a "did you mean" where a declared key is close.
"""
from __future__ import annotations

import copy
import inspect
import logging
import re
from typing import Any, Callable

from drcnet.engine.optim import OPTIMIZERS
from drcnet.registry import (ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, check_kwargs, did_you_mean,
                             resolve)
from drcnet.inference.presets import RELEASE_NUMERICS

logger = logging.getLogger('basicsr')

NUMBER = (int, float)
NONE = type(None)


class OptionError(ValueError):
    """A user's options are wrong; the message names the key."""


# key -> (accepted types, default). A default of REQUIRED must be given by the user.
REQUIRED = object()

TOP = {
    'name': (str, REQUIRED),
    'model_type': (str, 'ImageRestorationModel'),
    'scale': (int, 1),
    'num_gpu': ((int, str), 'auto'),
    'manual_seed': ((int, NONE), 0),
    'device': (str, 'auto'),
    'datasets': (dict, REQUIRED),
    'network_g': (dict, REQUIRED),
    'path': (dict, {}),
    'train': ((dict, NONE), None),
    'val': ((dict, NONE), None),
    'logger': (dict, {}),
    'dist_params': (dict, {}),
}
PATH = {
    'pretrain_network_g': ((str, NONE), None),
    'strict_load_g': (bool, True),
    'param_key_g': (str, 'params'),
    'resume_state': ((str, NONE), None),
    'experiments_root': (str, 'experiments'),
    'results_root': (str, 'results'),
}
TRAIN = {
    'optim_g': (dict, {'type': 'Adam', 'lr': 2e-4, 'betas': [0.9, 0.999]}),
    'scheduler': ((dict, NONE), None),
    'total_iter': (int, REQUIRED),
    'warmup_iter': (int, -1),
    'pixel_opt': ((dict, NONE), {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}),
    'contrastive_opt': ((dict, NONE), None),
    'fft_opt': ((dict, NONE), None),  # a frequency loss (FFTLoss) on every output, beside pixel_opt
    'ema_decay': (NUMBER, 0.0),
    'use_grad_clip': (bool, False),
    'grad_clip_norm': (NUMBER, 0.01),
    'accum_iter': (int, 1),
    'progressive': ((dict, NONE), None),
    'mixed_precision': (str, 'none'),
    'channels_last': (bool, False),
}
VAL = {
    'val_freq': ((int, float), 5000),
    'save_img': (bool, False),
    'metrics': ((dict, NONE), None),
    'tile': ((int, NONE), None),
    'tile_overlap': (int, 32),
    'tta': (bool, False),
    'use_ema': (bool, True),
    'pbar': (bool, True),
    'suffix': ((str, NONE), None),
}
LOGGER = {
    'print_freq': (int, 100),
    'save_checkpoint_freq': ((int, float), 5000),
    'use_tb_logger': (bool, False),
}
DIST = {
    'backend': ((str, NONE), None),
    'port': ((int, NONE), None),
    'timeout_minutes': (int, 30),
}
PROGRESSIVE = {'iters': list, 'gt_size': list, 'batch_size': list}
LOADER_DEFAULTS = {
    'batch_size_per_gpu': 1, 'num_worker_per_gpu': 0, 'use_shuffle': True, 'dataset_enlarge_ratio': 1,
    'prefetch_mode': None, 'test_y_channel': False, 'protocol': 'standard',
}
# datasets.<set>.protocol: how the evaluator scores the set. 'standard': RGB, or the MATLAB 8-bit Y with
# test_y_channel; 'realblur': RealBlur's own protocol (ECC alignment to the ground truth, valid region only).
PROTOCOLS = ('standard', 'realblur')
METRIC_TYPES = ('calculate_psnr', 'calculate_ssim')
MIXED_PRECISION = ('none', 'bf16', 'fp16')
CONTRASTIVE_ENGINE_KEYS = ('skip_if_no_weights',)


# ---------------------------------------------------------------------------------------------
# The release's old keys: each entry maps one old key to ours, with one warning.
# ---------------------------------------------------------------------------------------------
RELEASE_DATASET_TYPES = {'PairedImageDataset': 'PairedRestorationDataset',
                         'PairedImageDataset_SIDD': 'PairedRestorationDataset'}
RELEASE_SCHEDULERS = {'TrueCosineAnnealingLR': 'CosineAnnealingLR'}
RELEASE_VAL_DROPPED = {'max_minibatch': 'batching of tiles is automatic',
                       'rgb2bgr': 'images are always handled as RGB and scored as basicsr does',
                       'use_image': 'metrics are always computed on the saved 8-bit images'}
RELEASE_CONTRASTIVE_ALPHA = 0.05


def _warn_alias(old: str, new: str) -> None:
    logger.warning(f'option {old} is the release\'s key: read as {new}')


def translate_release_keys(opts: dict) -> dict:
    """Map the release's option keys onto ours (FRAMEWORK.md, "The release's own option files")."""
    opts = copy.deepcopy(opts)
    for name, ds in (opts.get('datasets') or {}).items():
        if not isinstance(ds, dict):
            continue
        where = f'datasets.{name}'
        if 'use_flip' in ds:
            _warn_alias(f'{where}.use_flip', f'{where}.use_hflip')
            ds['use_hflip'] = ds.pop('use_flip')
        if ds.get('type') in RELEASE_DATASET_TYPES:
            new = RELEASE_DATASET_TYPES[ds['type']]
            _warn_alias(f'{where}.type: {ds["type"]}', f'type: {new}')
            ds['type'] = new
    net = opts.get('network_g')
    if isinstance(net, dict) and ('hin_position_left' in net or 'hin_position_right' in net):
        depth = int(net.get('depth', 4))
        left = int(net.pop('hin_position_left', 0))
        right = int(net.pop('hin_position_right', depth - 1))
        net['sf_levels'] = list(range(left, min(right, depth - 1) + 1))
        _warn_alias('network_g.hin_position_left/right', f'network_g.sf_levels: {net["sf_levels"]}')
    train = opts.get('train')
    if isinstance(train, dict):
        sched = train.get('scheduler')
        if isinstance(sched, dict) and sched.get('type') in RELEASE_SCHEDULERS:
            new = RELEASE_SCHEDULERS[sched['type']]
            _warn_alias(f'train.scheduler.type: {sched["type"]}', f'type: {new}')
            sched['type'] = new
        pixel = train.get('pixel_opt')
        if isinstance(pixel, dict) and pixel.get('type') == 'IntraCRLoss':
            _warn_alias('train.pixel_opt.type: IntraCRLoss',
                        f'pixel_opt L1Loss plus contrastive_opt IntraCRLoss (alpha {RELEASE_CONTRASTIVE_ALPHA})')
            train['pixel_opt'] = {'type': 'L1Loss', 'loss_weight': pixel.get('loss_weight', 1.0),
                                  'reduction': pixel.get('reduction', 'mean')}
            given = train.get('contrastive_opt') or {}
            train['contrastive_opt'] = {'type': 'IntraCRLoss', 'alpha': RELEASE_CONTRASTIVE_ALPHA, **given}
    val = opts.get('val')
    if isinstance(val, dict):
        grids = val.pop('grids', None)
        crop = val.pop('crop_size', None)
        if grids is not None or crop is not None:
            _warn_alias('val.grids/crop_size', f'val.tile: {crop if grids else None}')
            if grids and crop:
                val['tile'] = int(crop)
        for key, why in RELEASE_VAL_DROPPED.items():
            if key in val:
                val.pop(key)
                logger.warning(f'option val.{key} is the release\'s key: ignored ({why})')
    log = opts.get('logger')
    if isinstance(log, dict) and 'wandb' in log:
        wandb = log.pop('wandb')
        if isinstance(wandb, dict) and any(v is not None for v in wandb.values()):
            raise OptionError('logger.wandb: Weights & Biases logging is not supported; '
                              'use logger.use_tb_logger: true')
        logger.warning('option logger.wandb is the release\'s key: ignored (empty)')
    return opts


# ---------------------------------------------------------------------------------------------
# network_g.numerics: one key for the three numerics the release's checkpoints were trained with
# ---------------------------------------------------------------------------------------------
NUMERICS = ('paper', 'release')


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(b, float) and not isinstance(a, bool):
        try:  # YAML 1.1 reads 1e-4 (no dot) as a string
            return float(a) == b
        except (TypeError, ValueError):
            return False
    return a == b


def expand_numerics(net: dict, where: str = 'network_g') -> dict:
    """``numerics: release`` -> sf_threshold 0.8, ea_lambda 1e-4, region_stats batch (``paper``: the class
    defaults); a copy of ``net``. An explicit value of one of those keys that differs is an OptionError."""
    if not isinstance(net, dict) or 'numerics' not in net:
        return net
    net = dict(net)
    choice = net.pop('numerics')
    if choice not in NUMERICS:
        raise OptionError(f'{where}.numerics: {choice!r} is not one of {", ".join(NUMERICS)}'
                          f'{did_you_mean(str(choice), NUMERICS)}')
    try:
        params = inspect.signature(resolve(ARCH_REGISTRY, net.get('type'), where=f'{where}.type')).parameters
    except ValueError as err:
        raise OptionError(str(err)) from None
    missing = [k for k in RELEASE_NUMERICS if k not in params]
    if missing:
        raise OptionError(f'{where}.numerics: {net.get("type")} has no {", ".join(missing)}; '
                          f'numerics applies to DRCNet')
    values = RELEASE_NUMERICS if choice == 'release' else {k: params[k].default for k in RELEASE_NUMERICS}
    for key, value in values.items():
        if key in net and not _same_value(net[key], value):
            raise OptionError(f'{where}.{key}: {net[key]!r} conflicts with {where}.numerics: {choice}, which sets '
                              f'{key}: {value!r}; remove one of the two')
        net[key] = value
    return net


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
def _type_name(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    names = {int: 'integer', float: 'number', str: 'string', bool: 'true/false', dict: 'mapping',
             list: 'list', NONE: 'null (~)'}
    return ' or '.join(names.get(t, t.__name__) for t in types)


def _check_type(value: Any, types, where: str) -> None:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        raise OptionError(f'{where}: expected {_type_name(types)}, got {value!r}')
    if not isinstance(value, types):
        raise OptionError(f'{where}: expected {_type_name(types)}, got {value!r} ({type(value).__name__})')


def _check_section(section: Any, declared: dict, where: str) -> dict:
    if section is None:
        section = {}
    _check_type(section, dict, where)
    out = {}
    for key, value in section.items():
        if key not in declared:
            raise OptionError(f'{where}.{key}: unknown option{did_you_mean(key, declared)}; '
                              f'valid keys: {", ".join(declared)}')
        types, _ = declared[key]
        _check_type(value, types, f'{where}.{key}')
        out[key] = value
    for key, (_, default) in declared.items():
        if key not in out:
            if default is REQUIRED:
                raise OptionError(f'{where}.{key}: required option is missing')
            out[key] = copy.deepcopy(default)
    return out


def _check_component(cfg: dict, registry, where: str, engine_keys=()) -> None:
    _check_type(cfg, dict, where)
    if 'type' not in cfg:
        raise OptionError(f'{where}.type: required option is missing; choices: {", ".join(sorted(registry.keys()))}')
    try:
        cls = resolve(registry, cfg['type'], where=f'{where}.type')
        check_kwargs(cls, {k: v for k, v in cfg.items() if k != 'type' and k not in engine_keys}, where)
    except ValueError as err:
        raise OptionError(str(err)) from None


def _check_callable_kwargs(target: Callable, cfg: dict, where: str, skip=('type',)) -> None:
    try:
        check_kwargs(target, {k: v for k, v in cfg.items() if k not in skip}, where)
    except ValueError as err:
        raise OptionError(str(err)) from None


def _check_dataset(cfg: Any, where: str, phase: str) -> dict:
    _check_type(cfg, dict, where)
    cfg = dict(cfg)
    for key, default in LOADER_DEFAULTS.items():
        cfg.setdefault(key, default)
    cfg.setdefault('name', where.split('.')[-1])
    dataset_keys = {k: v for k, v in cfg.items() if k not in LOADER_DEFAULTS and k not in ('name', 'phase')}
    _check_component(dataset_keys, DATASET_REGISTRY, where)
    cfg['phase'] = phase
    if cfg['protocol'] not in PROTOCOLS:
        raise OptionError(f'{where}.protocol: {cfg["protocol"]!r} is not one of {", ".join(PROTOCOLS)}'
                          f'{did_you_mean(cfg["protocol"], PROTOCOLS)}')
    if cfg['protocol'] == 'realblur' and cfg['test_y_channel']:
        raise OptionError(f'{where}.test_y_channel: RealBlur\'s protocol scores RGB; '
                          f'set test_y_channel: false or drop protocol: realblur')
    for key in ('batch_size_per_gpu', 'num_worker_per_gpu', 'dataset_enlarge_ratio'):
        _check_type(cfg[key], int, f'{where}.{key}')
        if cfg[key] < (1 if key != 'num_worker_per_gpu' else 0):
            raise OptionError(f'{where}.{key}: must be positive, got {cfg[key]}')
    return cfg


def dataset_phase(name: str) -> str:
    """'train' for datasets.train, 'val' for every other entry (val, val_1, test_1, ...)."""
    return 'train' if name == 'train' else 'val'


def _check_optimizer(cfg: dict, where: str) -> None:
    import torch
    _check_type(cfg, dict, where)
    name = cfg.get('type')
    choices = OPTIMIZERS
    if name not in choices:
        raise OptionError(f'{where}.type: {name!r} is not one of {", ".join(choices)}{did_you_mean(name, choices)}')
    _check_callable_kwargs(getattr(torch.optim, name), cfg, where, skip=('type', 'params'))


def validate(opts: dict, is_train: bool = True) -> dict:
    """Check every key and type; return a new dict with defaults filled in."""
    if not isinstance(opts, dict):
        raise OptionError(f'options: expected a mapping at the top level, got {type(opts).__name__}')
    opts = translate_release_keys(opts)
    top = dict(TOP)
    if not is_train:
        top['datasets'] = (dict, REQUIRED)
    out = _check_section(opts, top, 'options')
    out['path'] = _check_section(out['path'], PATH, 'path')
    out['logger'] = _check_section(out['logger'], LOGGER, 'logger')
    out['dist_params'] = _check_section(out['dist_params'], DIST, 'dist_params')
    out['val'] = _check_section(out['val'], VAL, 'val')
    if not re.fullmatch(r'[A-Za-z0-9_.\-]+', out['name']):
        raise OptionError(f'name: {out["name"]!r} must be a plain folder name (letters, digits, _ . -)')
    if out['device'] not in ('auto', 'cpu', 'cuda'):
        raise OptionError(f'device: {out["device"]!r} is not one of auto, cpu, cuda')

    out['network_g'] = expand_numerics(out['network_g'])
    _check_component(out['network_g'], ARCH_REGISTRY, 'network_g')

    datasets = {}
    for name, cfg in out['datasets'].items():
        datasets[name] = _check_dataset(cfg, f'datasets.{name}', dataset_phase(name))
    out['datasets'] = datasets
    if is_train and 'train' not in datasets:
        raise OptionError(f'datasets.train: required for training; found {", ".join(datasets) or "none"}')

    metrics = out['val']['metrics']
    if metrics is None:
        metrics = {'psnr': {'type': 'calculate_psnr', 'crop_border': 0},
                   'ssim': {'type': 'calculate_ssim', 'crop_border': 0}}
    for mname, mcfg in metrics.items():
        _check_type(mcfg, dict, f'val.metrics.{mname}')
        mtype = mcfg.get('type')
        if mtype not in METRIC_TYPES:
            raise OptionError(f'val.metrics.{mname}.type: {mtype!r} is not one of {", ".join(METRIC_TYPES)}'
                              f'{did_you_mean(mtype, METRIC_TYPES)}')
        for key in mcfg:
            if key not in ('type', 'crop_border', 'test_y_channel'):
                raise OptionError(f'val.metrics.{mname}.{key}: unknown option; valid keys: type, crop_border, '
                                  'test_y_channel')
    out['val']['metrics'] = metrics
    for name, cfg in datasets.items():
        if cfg['protocol'] != 'realblur':
            continue
        for mname, mcfg in metrics.items():
            for key, plain in (('crop_border', 0), ('test_y_channel', False)):
                if mcfg.get(key, plain) != plain:
                    raise OptionError(f'val.metrics.{mname}.{key}: {mcfg[key]!r} does not apply to datasets.{name} '
                                      f'(protocol: realblur scores RGB inside the aligned region); use {plain}')

    if is_train:
        train = _check_section(out['train'], TRAIN, 'train')
        _check_optimizer(train['optim_g'], 'train.optim_g')
        if train['scheduler'] is not None:
            from drcnet.engine.schedules import check_scheduler_options, follow_total_iter
            try:
                check_scheduler_options(train['scheduler'])
                train['scheduler'] = follow_total_iter(train['scheduler'], train['total_iter'])
            except ValueError as err:
                raise OptionError(str(err)) from None
        if train['pixel_opt'] is not None:
            _check_component(train['pixel_opt'], LOSS_REGISTRY, 'train.pixel_opt')
        if train['contrastive_opt'] is not None:
            _check_component(train['contrastive_opt'], LOSS_REGISTRY, 'train.contrastive_opt',
                             engine_keys=CONTRASTIVE_ENGINE_KEYS)
        if train['fft_opt'] is not None:
            _check_component(train['fft_opt'], LOSS_REGISTRY, 'train.fft_opt')
        if train['pixel_opt'] is None and train['contrastive_opt'] is None:
            raise OptionError('train.pixel_opt: at least one of pixel_opt and contrastive_opt is needed')
        if train['mixed_precision'] not in MIXED_PRECISION:
            raise OptionError(f'train.mixed_precision: {train["mixed_precision"]!r} is not one of '
                              f'{", ".join(MIXED_PRECISION)}')
        if train['total_iter'] < 1 or train['accum_iter'] < 1:
            raise OptionError('train.total_iter and train.accum_iter must be positive')
        if train['progressive'] is not None:
            prog = train['progressive']
            for key in prog:
                if key not in PROGRESSIVE:
                    raise OptionError(f'train.progressive.{key}: unknown option{did_you_mean(key, PROGRESSIVE)}; '
                                      f'valid keys: {", ".join(PROGRESSIVE)}')
            lengths = {key: len(prog.get(key) or []) for key in PROGRESSIVE}
            if len(set(lengths.values())) != 1 or not lengths['iters']:
                raise OptionError(f'train.progressive: iters, gt_size and batch_size must be lists of one '
                                  f'length, got {lengths}')
            if list(prog['iters']) != sorted(prog['iters']):
                raise OptionError(f'train.progressive.iters: must increase, got {prog["iters"]}')
        out['train'] = train
    return out
