"""drcnet.engine.preflight: a missing path named in options is one line naming key, path and its maker."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from drcnet.engine.options import load_yaml
from drcnet.engine.preflight import MissingPathError, check_paths
from drcnet.engine.schema import validate

ROOT = Path(__file__).resolve().parents[1]
RAIN = ('create it with scripts/data_preparation/rain13k.py; '
        'datasets/README.md, "Deraining: Rain13k and the five test sets"')


def paired(gt, lq, **extra):
    return {'type': 'PairedRestorationDataset', 'dataroot_gt': str(gt), 'dataroot_lq': str(lq), 'gt_size': 32,
            **extra}


def options(tmp_path, **changes):
    """Validated training options whose data folders and files exist under tmp_path; ``changes`` break one."""
    for sub in ('gt', 'lq', 'data.lmdb'):
        (tmp_path / sub).mkdir(exist_ok=True)
    for name in ('meta.txt', 'vgg.pth', 'net.pth', '4.state'):
        (tmp_path / name).write_bytes(b'x')
    raw = {'name': 'pre', 'network_g': {'type': 'DRCNet', 'wf': 8, 'depth': 2},
           'datasets': {'train': paired(tmp_path / 'gt', tmp_path / 'lq', meta_info_file=str(tmp_path / 'meta.txt')),
                        'val': {'type': 'SyntheticDegradationDataset', 'samples': ['chelsea']}},
           'path': {'pretrain_network_g': str(tmp_path / 'net.pth'), 'resume_state': str(tmp_path / '4.state')},
           'train': {'total_iter': 4,
                     'contrastive_opt': {'type': 'IntraCRLoss', 'vgg_weights': str(tmp_path / 'vgg.pth')}}}
    for key, value in changes.items():
        node = raw
        *parents, last = key.split('.')
        for part in parents:
            node = node[part]
        node[last] = value
    return validate(raw)


def test_paths_that_exist_pass(tmp_path):
    check_paths(options(tmp_path))
    check_paths(options(tmp_path, **{'datasets.train.dataroot_gt': str(tmp_path / 'data.lmdb')}))


@pytest.mark.parametrize('key, value, line', [
    ('datasets.train.dataroot_gt', 'datasets/Rain13k/train/target',
     f'datasets.train.dataroot_gt: folder does not exist: datasets/Rain13k/train/target ({RAIN})'),
    ('datasets.train.dataroot_lq', '/data/GoPro/test/input',
     'datasets.train.dataroot_lq: folder does not exist: /data/GoPro/test/input (create it with '
     'scripts/data_preparation/gopro.py; datasets/README.md, "Deblurring: GoPro")'),
    ('datasets.train.dataroot_lq', 'datasets/SIDD/train/input_crops.lmdb',
     'datasets.train.dataroot_lq: folder does not exist: datasets/SIDD/train/input_crops.lmdb (create it with '
     'scripts/create_lmdb.py; datasets/README.md, "lmdb")'),
    ('datasets.train.dataroot_gt', 'mine/clean',
     "datasets.train.dataroot_gt: folder does not exist: mine/clean (see datasets/README.md for each "
     "benchmark's preparation script)"),
    ('datasets.train.meta_info_file', 'datasets/SIDD/gt.lmdb/meta_info.txt',
     'datasets.train.meta_info_file: file does not exist: datasets/SIDD/gt.lmdb/meta_info.txt '
     '(scripts/create_lmdb.py writes meta_info.txt into each lmdb; datasets/README.md, "lmdb")'),
    ('path.pretrain_network_g', 'experiments/pretrained_models/DRCNet_derain.pth',
     'path.pretrain_network_g: file does not exist: experiments/pretrained_models/DRCNet_derain.pth (a checkpoint'),
    ('path.resume_state', 'experiments/pre/training_states/8.state',
     'path.resume_state: file does not exist: experiments/pre/training_states/8.state (a training state in '
     'experiments/<name>/training_states/; --auto_resume finds the newest itself)'),
    ('train.contrastive_opt.vgg_weights', 'weights/vgg19.pth',
     'train.contrastive_opt.vgg_weights: file does not exist: weights/vgg19.pth (torchvision\'s vgg19-dcbb9e9d.pth;'),
])
def test_each_missing_path_is_one_line_naming_key_path_and_its_maker(tmp_path, key, value, line):
    opts = options(tmp_path, **{key: value})
    with pytest.raises(MissingPathError) as err:
        check_paths(opts)
    assert str(err.value).startswith(line) and '\n' not in str(err.value)


def test_a_file_where_a_folder_is_expected_and_the_reverse_are_named(tmp_path):
    opts = options(tmp_path, **{'datasets.train.dataroot_lq': str(tmp_path / 'meta.txt'),
                                'path.pretrain_network_g': str(tmp_path / 'gt')})
    with pytest.raises(MissingPathError) as err:
        check_paths(opts)
    lines = str(err.value).splitlines()
    assert lines[0].startswith(f'datasets.train.dataroot_lq: is a file, not a folder: {tmp_path / "meta.txt"}')
    assert lines[1].startswith(f'path.pretrain_network_g: is a folder, not a file: {tmp_path / "gt"}')


def test_paths_read_only_when_used_are_not_required(tmp_path):
    opts = options(tmp_path, **{'train.contrastive_opt.skip_if_no_weights': True,
                                'train.contrastive_opt.vgg_weights': 'nowhere/vgg.pth'})
    check_paths(opts)  # the run trains without Intra-CR and says so
    check_paths(options(tmp_path, **{'train.contrastive_opt.vgg_weights': 'random'}))
    check_paths(options(tmp_path, **{'path.resume_state': 'nowhere.state'}), is_train=False)


def test_train_main_prints_one_line_per_missing_path_and_creates_nothing(tmp_path, capsys):
    from drcnet.train import main
    opts = load_yaml(ROOT / 'options' / 'derain.yml')
    root = tmp_path / 'datasets' / 'Rain13k'
    opts['datasets']['train'].update(dataroot_gt=str(root / 'train/target'), dataroot_lq=str(root / 'train/input'))
    opts['datasets']['val'].update(dataroot_gt=str(root / 'test/Rain100H/target'),
                                   dataroot_lq=str(root / 'test/Rain100H/input'))
    (root / 'test/Rain100H/input').mkdir(parents=True)  # only this one exists
    opts['path']['experiments_root'] = str(tmp_path / 'experiments')
    path = tmp_path / 'derain.yml'
    path.write_text(yaml.safe_dump(opts))
    assert main(['-opt', str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f'error: datasets.train.dataroot_gt: folder does not exist: {root / "train" / "target"} ({RAIN})',
                     f'datasets.train.dataroot_lq: folder does not exist: {root / "train" / "input"} ({RAIN})',
                     f'datasets.val.dataroot_gt: folder does not exist: {root / "test/Rain100H/target"} ({RAIN})']
    assert not (tmp_path / 'experiments').exists()


def test_test_main_checks_data_and_weights_before_writing_results(tmp_path, capsys, monkeypatch):
    from drcnet.test import main
    monkeypatch.chdir(tmp_path)  # the shipped file's relative paths point into an empty folder
    assert main(['-opt', str(ROOT / 'options' / 'test' / 'derain.yml')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: datasets.test_1.dataroot_gt: folder does not exist: datasets/Rain13k/test/Test100')
    assert len(err.splitlines()) == 11  # five test sets, two folders each, and the checkpoint
    assert 'path.pretrain_network_g: file does not exist: experiments/pretrained_models/DRCNet_derain.pth' in err
    assert os.listdir(tmp_path) == []


def test_the_shipped_command_without_data_ends_without_a_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / 'train.py'), '-opt', str(ROOT / 'options' / 'derain.yml')],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert 'Traceback' not in proc.stderr and proc.stdout == ''
    assert proc.stderr.splitlines() == [
        f'error: datasets.train.dataroot_gt: folder does not exist: datasets/Rain13k/train/target ({RAIN})',
        f'datasets.train.dataroot_lq: folder does not exist: datasets/Rain13k/train/input ({RAIN})',
        f'datasets.val.dataroot_gt: folder does not exist: datasets/Rain13k/test/Rain100H/target ({RAIN})',
        f'datasets.val.dataroot_lq: folder does not exist: datasets/Rain13k/test/Rain100H/input ({RAIN})']
    assert os.listdir(tmp_path) == []
