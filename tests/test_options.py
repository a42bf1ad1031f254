import logging
from pathlib import Path

import pytest
import yaml

from drcnet.engine.options import apply_overrides, build_parser, load_yaml, parse_options
from drcnet.engine.schema import OptionError, translate_release_keys, validate
from drcnet.engine.schedules import build_scheduler


def minimal(**changes):
    opts = {
        'name': 'unit',
        'datasets': {'train': {'type': 'SyntheticDegradationDataset', 'source': 'samples', 'gt_size': 32,
                               'batch_size_per_gpu': 2}},
        'network_g': {'type': 'DRCNet', 'wf': 8, 'depth': 2},
        'train': {'total_iter': 4},
    }
    for key, value in changes.items():
        node = opts
        parts = key.split('.')
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return opts


def test_defaults_are_filled_and_input_untouched():
    raw = minimal()
    opts = validate(raw)
    assert opts['train']['optim_g']['type'] == 'Adam'
    assert opts['logger']['print_freq'] == 100
    assert opts['datasets']['train']['phase'] == 'train'
    assert 'phase' not in raw['datasets']['train']


@pytest.mark.parametrize('key, value, match', [
    ('train.totl_iter', 5, r"train\.totl_iter: unknown option \(did you mean 'total_iter'\?\)"),
    ('network_g.wff', 8, r"network_g\.wff: unknown option .*did you mean 'wf'"),
    ('network_g.type', 'DRCNett', r"network_g\.type: 'DRCNett' .*did you mean 'DRCNet'"),
    ('train.total_iter', 'many', r"train\.total_iter: expected integer, got 'many'"),
    ('train.use_grad_clip', 'yes', r'train\.use_grad_clip: expected true/false'),
    ('logger.print_frq', 5, r"logger\.print_frq: unknown option \(did you mean 'print_freq'\?\)"),
    ('datasets.train.gt_sise', 32, r"datasets\.train\.gt_sise: unknown option.*did you mean 'gt_size'"),
    ('train.optim_g', {'type': 'Adamm', 'lr': 1e-3}, r"train\.optim_g\.type: 'Adamm' is not one of"),
    ('train.optim_g', {'type': 'Adam', 'lrr': 1e-3}, r"train\.optim_g\.lrr: unknown option.*did you mean 'lr'"),
    ('train.scheduler', {'type': 'Cosine', 'T_max': 4}, r"train\.scheduler\.type: 'Cosine' is not one of"),
    ('train.pixel_opt', {'type': 'L1Los'}, r"train\.pixel_opt\.type: 'L1Los'.*did you mean 'L1Loss'"),
    ('train.mixed_precision', 'fp8', r"train\.mixed_precision: 'fp8' is not one of none, bf16, fp16"),
    ('val.metrics', {'psnr': {'type': 'calculate_psnrr'}}, r"val\.metrics\.psnr\.type: 'calculate_psnrr'"),
])
def test_mistakes_fail_fast_naming_the_key(key, value, match):
    with pytest.raises(OptionError, match=match):
        validate(minimal(**{key: value}))


def test_release_style_keys_are_translated_with_one_warning_each(caplog):
    raw = minimal()
    raw['datasets']['train'] = {'name': 'rain', 'type': 'PairedImageDataset', 'dataroot_gt': 'a', 'dataroot_lq': 'b',
                                'io_backend': {'type': 'disk'}, 'use_flip': True, 'use_rot': True, 'gt_size': 32,
                                'use_shuffle': True, 'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2,
                                'dataset_enlarge_ratio': 1, 'prefetch_mode': None}
    raw['network_g'] = {'type': 'DRCNet', 'wf': 8, 'hin_position_left': 1, 'hin_position_right': 3}
    raw['train'] = {'total_iter': 4, 'warmup_iter': -1, 'use_grad_clip': True,
                    'scheduler': {'type': 'TrueCosineAnnealingLR', 'T_max': 4, 'eta_min': 1e-7},
                    'pixel_opt': {'type': 'IntraCRLoss', 'loss_weight': 1, 'reduction': 'mean'}}
    raw['val'] = {'val_freq': 2, 'grids': True, 'crop_size': 64, 'max_minibatch': 8, 'rgb2bgr': True,
                  'use_image': True}
    raw['logger'] = {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False,
                     'wandb': {'project': None, 'resume_id': None}}
    with caplog.at_level(logging.WARNING, logger='basicsr'):
        opts = translate_release_keys(raw)
    warned = caplog.text
    for old in ('use_flip', 'PairedImageDataset', 'hin_position_left', 'TrueCosineAnnealingLR', 'IntraCRLoss',
                'val.grids', 'max_minibatch', 'rgb2bgr', 'use_image', 'wandb'):
        assert old in warned, old
    assert opts['datasets']['train']['use_hflip'] is True and 'use_flip' not in opts['datasets']['train']
    assert opts['datasets']['train']['type'] == 'PairedRestorationDataset'
    assert opts['network_g']['sf_levels'] == [1, 2, 3]
    assert opts['train']['scheduler']['type'] == 'CosineAnnealingLR'
    assert opts['train']['pixel_opt']['type'] == 'L1Loss'
    assert opts['train']['contrastive_opt'] == {'type': 'IntraCRLoss', 'alpha': 0.05}
    assert opts['val']['tile'] == 64
    assert raw['datasets']['train']['use_flip'] is True  # the caller's dict is not modified


def test_force_yml_overrides_nested_keys(tmp_path):
    path = tmp_path / 'opt.yml'
    path.write_text(yaml.safe_dump(minimal()))
    args = build_parser('x').parse_args(['-opt', str(path), '--force_yml', 'train:total_iter=7', 'name=other',
                                         'val:tile=~'])
    opts = parse_options(args)
    assert opts['train']['total_iter'] == 7 and opts['name'] == 'other' and opts['val']['tile'] is None
    with pytest.raises(OptionError, match='KEY=VALUE'):
        apply_overrides({}, ['train:total_iter'])


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / 'bad.yml'
    bad.write_text('name: [unclosed\n')
    with pytest.raises(OptionError, match='bad.yml'):
        load_yaml(bad)
    with pytest.raises(OptionError, match='not found'):
        load_yaml(tmp_path / 'missing.yml')


def test_launcher_flags_accept_both_local_rank_spellings():
    parser = build_parser('x')
    assert parser.parse_args(['-opt', 'a', '--local-rank', '1']).local_rank == 1
    assert parser.parse_args(['-opt', 'a', '--local_rank=0', '--launcher', 'pytorch']).launcher == 'pytorch'


def test_cosine_schedule_with_warmup_follows_its_closed_form():
    import torch
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=2e-4)
    sched = build_scheduler(opt, {'type': 'CosineAnnealingLR', 'T_max': 10, 'eta_min': 1e-7}, warmup_iter=2)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]['lr'])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-4)  # half-way through the warm-up
    assert lrs[5] == pytest.approx(1e-7 + (2e-4 - 1e-7) * 0.5)
    assert lrs[11] == pytest.approx(1e-7)


def _lrs(scheduler_cfg: dict, warmup_iter: int, steps: int) -> list:
    import torch
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2e-4)
    sched = build_scheduler(opt, scheduler_cfg, warmup_iter=warmup_iter)
    lrs = []
    for _ in range(steps + 1):
        lrs.append(opt.param_groups[0]['lr'])
        opt.step()
        sched.step()
    return lrs


def test_force_yml_total_iter_sets_the_cosine_period_of_a_shipped_file(caplog):
    path = Path(__file__).resolve().parents[1] / 'options' / 'derain.yml'
    args = build_parser('x').parse_args(['-opt', str(path), '--force_yml', 'train:total_iter=1000'])
    with caplog.at_level(logging.WARNING, logger='basicsr'):
        train = parse_options(args)['train']
    assert 'T_max' not in caplog.text  # nothing disagrees: the period follows total_iter
    lrs = _lrs(train['scheduler'], train['warmup_iter'], 1000)
    assert lrs[500] == pytest.approx(1e-7 + (2e-4 - 1e-7) / 2)
    assert lrs[1000] == pytest.approx(1e-7) and lrs[999] > lrs[1000]


def test_release_cosine_without_t_max_follows_total_iter():
    raw = minimal(**{'train.total_iter': 8, 'train.scheduler': {'type': 'TrueCosineAnnealingLR', 'eta_min': 1e-7}})
    sched = validate(raw)['train']['scheduler']
    assert sched == {'type': 'CosineAnnealingLR', 'eta_min': 1e-7, 'T_max': 8}
    assert _lrs(sched, -1, 8)[8] == pytest.approx(1e-7)


@pytest.mark.parametrize('t_max, words', [(300, 'stays there for the last 700 iterations'),
                                           (4000, '3000 iterations after this run ends')])
def test_explicit_t_max_is_kept_and_a_disagreement_warns(caplog, t_max, words):
    raw = minimal(**{'train.total_iter': 1000,
                     'train.scheduler': {'type': 'CosineAnnealingLR', 'T_max': t_max, 'eta_min': 1e-7}})
    with caplog.at_level(logging.WARNING, logger='basicsr'):
        sched = validate(raw)['train']['scheduler']
    assert sched['T_max'] == t_max
    assert f'train.scheduler.T_max ({t_max}) differs from train.total_iter (1000)' in caplog.text
    assert words in caplog.text
    lrs = _lrs(sched, -1, 1000)
    if t_max < 1000:
        assert lrs[t_max] == pytest.approx(1e-7) and lrs[1000] == pytest.approx(1e-7)
    else:
        assert lrs[1000] > 2e-4 / 2  # the run ends before half of the period
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger='basicsr'):
        validate(minimal(**{'train.total_iter': 1000, 'train.scheduler': {'type': 'CosineAnnealingLR', 'T_max': 1000}}))
    assert 'T_max' not in caplog.text


def test_non_positive_t_max_names_the_key():
    with pytest.raises(OptionError, match=r'train\.scheduler\.T_max: expected a positive integer, got 0'):
        validate(minimal(**{'train.scheduler': {'type': 'CosineAnnealingLR', 'T_max': 0}}))


def test_numerics_release_is_one_key_that_builds_the_release_numerics():
    import torch

    from drcnet.archs.drcnet_arch import DRCNet
    from drcnet.registry import ARCH_REGISTRY, build
    from tests.conftest import photo_tensor

    raw = minimal(**{'network_g.numerics': 'release'})
    net_opts = validate(raw)['network_g']
    assert net_opts == {'type': 'DRCNet', 'wf': 8, 'depth': 2, 'sf_threshold': 0.8, 'ea_lambda': 1e-4,
                        'region_stats': 'batch'}
    assert raw['network_g'] == {'type': 'DRCNet', 'wf': 8, 'depth': 2, 'numerics': 'release'}  # not mutated
    assert validate(minimal(**{'network_g.numerics': 'paper'}))['network_g'] == {
        'type': 'DRCNet', 'wf': 8, 'depth': 2, 'sf_threshold': 0.75, 'ea_lambda': 1e-6, 'region_stats': 'sample'}

    # the built network computes what DRCNet with the three values computes (batch statistics need two images)
    x = torch.cat([photo_tensor('chelsea')[..., :48, :40], photo_tensor('coffee')[..., :48, :40]])
    outputs = {}
    for key, make in (('option', lambda: build(ARCH_REGISTRY, net_opts, where='network_g')),
                      ('explicit', lambda: DRCNet(wf=8, depth=2, sf_threshold=0.8, ea_lambda=1e-4, region_stats='batch')),
                      ('paper', lambda: DRCNet(wf=8, depth=2))):
        torch.manual_seed(0)
        with torch.no_grad():
            outputs[key] = make().eval()(x)[-1]
    assert torch.equal(outputs['option'], outputs['explicit'])
    assert (outputs['option'] - outputs['paper']).abs().max() > 1e-3


@pytest.mark.parametrize('extra, match', [
    ({'sf_threshold': 0.75}, r'network_g.sf_threshold: 0.75 conflicts with network_g.numerics: release, which sets '
                             r'sf_threshold: 0.8'),
    ({'region_stats': 'sample'}, r"network_g.region_stats: 'sample' conflicts with network_g.numerics: release"),
    ({'ea_lambda': 1e-6}, r'network_g.ea_lambda: 1e-06 conflicts'),
    ({'numerics': 'relase'}, r"network_g.numerics: 'relase' is not one of paper, release.*did you mean 'release'"),
])
def test_numerics_conflicts_and_misspellings_name_the_keys(extra, match):
    net = {'type': 'DRCNet', 'wf': 8, 'depth': 2, 'numerics': 'release', **extra}
    with pytest.raises(OptionError, match=match):
        validate(minimal(network_g=net))


def test_numerics_agrees_with_the_same_values_given_explicitly():
    # YAML 1.1 reads 1e-4 without a dot as a string: still the same value
    net = yaml.safe_load('{type: DRCNet, wf: 8, depth: 2, numerics: release, ea_lambda: 1e-4, sf_threshold: 0.8}')
    assert validate(minimal(network_g=net))['network_g']['ea_lambda'] == 1e-4
