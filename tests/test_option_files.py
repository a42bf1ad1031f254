"""Every options file the project ships validates against the code (keys, types, registered names)."""
from pathlib import Path

import pytest

from drcnet.engine.options import load_yaml
from drcnet.engine.schema import validate

OPTIONS = Path(__file__).resolve().parents[1] / 'options'
TRAIN_FILES = sorted(OPTIONS.glob('*.yml')) + sorted((OPTIONS / 'ablation').glob('*.yml'))
TEST_FILES = sorted((OPTIONS / 'test').glob('*.yml'))


@pytest.mark.parametrize('path', TRAIN_FILES, ids=lambda p: p.name)
def test_training_options_validate(path):
    opts = validate(load_yaml(path), is_train=True)
    assert opts['network_g']['type'] == 'DRCNet'


@pytest.mark.parametrize('path', TEST_FILES, ids=lambda p: p.name)
def test_evaluation_options_validate(path):
    opts = validate(load_yaml(path), is_train=False)
    assert opts['path']['pretrain_network_g'].startswith('experiments/pretrained_models/')


def test_every_task_ships_training_and_evaluation_options():
    names = {p.stem for p in TRAIN_FILES}
    assert {'derain', 'denoise', 'deblur', 'demo'} <= names
    assert {p.stem for p in TEST_FILES} == {'derain', 'denoise', 'deblur'}
    assert {p.stem for p in (OPTIONS / 'ablation').glob('*.yml')} == {'base', 'sf', 'ea', 'sf_identity', 'sf_ea', 'dfr'}


def test_paper_recipe_in_the_task_options():
    for task in ('derain', 'denoise', 'deblur'):
        opts = validate(load_yaml(OPTIONS / f'{task}.yml'))
        train = opts['train']
        assert train['optim_g']['lr'] == 2e-4 and train['optim_g']['betas'] == [0.9, 0.999]
        assert 'T_max' not in load_yaml(OPTIONS / f'{task}.yml')['train']['scheduler']  # total_iter governs
        assert train['scheduler'] == {'type': 'CosineAnnealingLR', 'T_max': 400000, 'eta_min': 1e-7}
        assert train['total_iter'] == 400000
        assert opts['datasets']['train']['gt_size'] == 256 and opts['datasets']['train']['batch_size_per_gpu'] == 4
        assert train['contrastive_opt']['alpha'] == 0.04
        assert train['contrastive_opt']['mixup'] == [1.0, 0.95, 0.90]
    assert validate(load_yaml(OPTIONS / 'derain.yml'))['datasets']['val']['test_y_channel'] is True


def test_deblur_evaluation_uses_realblur_protocol_on_the_realblur_sets_only():
    sets = validate(load_yaml(OPTIONS / 'test' / 'deblur.yml'), is_train=False)['datasets'].values()
    assert {s['name']: s['protocol'] for s in sets} == {'GoPro': 'standard', 'HIDE': 'standard',
                                                         'RealBlur_J': 'realblur', 'RealBlur_R': 'realblur'}


@pytest.mark.parametrize('path', TEST_FILES, ids=lambda p: p.name)
def test_release_numerics_are_one_uncommented_line_in_the_evaluation_options(path, tmp_path):
    from drcnet.inference.presets import RELEASE_NUMERICS

    text = path.read_text()
    assert text.count('  # numerics: release') == 1
    assert all(key not in validate(load_yaml(path), is_train=False)['network_g'] for key in RELEASE_NUMERICS)
    edited = tmp_path / path.name
    edited.write_text(text.replace('  # numerics: release', '  numerics: release'))
    net = validate(load_yaml(edited), is_train=False)['network_g']
    assert {key: net[key] for key in RELEASE_NUMERICS} == RELEASE_NUMERICS


PEER_TRAIN_FILES = sorted((OPTIONS / 'peers').glob('*.yml'))
PEER_TEST_FILES = sorted((OPTIONS / 'test' / 'peers').glob('*.yml'))
# PEERS.md 1.4 in iterations: (lr, weight decay, total_iter = epochs x iterations per epoch at batch 16,
# warm-up = 3 epochs, gt_size, edge loss)
DGUNET_RECIPES = {'deblur': (1e-4, 0, 3000 * 132, 3 * 132, 256, True),
                  'derain': (2e-4, 0, 250 * 857, 3 * 857, 256, True),
                  'denoise': (1e-4, 1e-8, 80 * 6000, 3 * 6000, 128, False)}


DGUNET_TRAIN_FILES = [p for p in PEER_TRAIN_FILES if p.stem.startswith('dgunet')]
DGUNET_TEST_FILES = [p for p in PEER_TEST_FILES if p.stem.startswith('dgunet')]


def test_the_peer_options_cover_each_released_configuration():
    names = {p.stem for p in PEER_TRAIN_FILES}
    assert {f'{net}_{task}' for net in ('dgunet', 'dgunet_plus') for task in DGUNET_RECIPES} <= names
    assert {p.stem for p in PEER_TEST_FILES} == names


@pytest.mark.parametrize('path', DGUNET_TRAIN_FILES, ids=lambda p: p.name)
def test_peer_training_options_validate_and_follow_the_authors_recipe(path):
    opts = validate(load_yaml(path), is_train=True)
    net, task = path.stem.rsplit('_', 1)
    assert opts['network_g'] == {'type': {'dgunet': 'DGUNet', 'dgunet_plus': 'DGUNetPlus'}[net], 'task': task}
    lr, wd, total, warm, patch, edge = DGUNET_RECIPES[task]
    train = opts['train']
    assert train['optim_g'] == {'type': 'Adam', 'lr': lr, 'weight_decay': wd, 'betas': [0.9, 0.999], 'eps': 1e-8}
    assert (train['total_iter'], train['warmup_iter']) == (total, warm)
    assert train['scheduler']['eta_min'] == 1e-6
    assert train['scheduler']['T_max'] == (117 * 6000 if task == 'denoise' else total)
    assert train['pixel_opt'] == {'type': 'CharbonnierLoss', 'loss_weight': 1.0, 'eps': 1e-3}
    assert train['edge_opt'] == ({'type': 'EdgeLoss', 'loss_weight': 0.05, 'eps': 1e-3} if edge else None)
    assert not train['use_grad_clip'] and train['contrastive_opt'] is None
    ds = opts['datasets']['train']
    assert ds['gt_size'] == patch and ds['batch_size_per_gpu'] * 4 == 16  # 4 processes, as the comment says
    assert '4 processes x batch 4' in path.read_text() and 'torchrun --nproc_per_node=4' in path.read_text()


@pytest.mark.parametrize('path', DGUNET_TEST_FILES, ids=lambda p: p.name)
def test_peer_evaluation_uses_drcnets_benchmark_tables_and_the_authors_tta(path):
    opts = validate(load_yaml(path), is_train=False)
    task = path.stem.rsplit('_', 1)[1]
    drcnet = validate(load_yaml(OPTIONS / 'test' / f'{task}.yml'), is_train=False)
    assert opts['datasets'] == drcnet['datasets'] and opts['val']['metrics'] == drcnet['val']['metrics']
    assert opts['val']['tta'] is (task == 'denoise')  # DGUNet's denoising tables include x8 self-ensemble
    assert opts['path']['param_key_g'] == 'auto' and opts['network_g']['task'] == task


@pytest.mark.parametrize('path', PEER_TRAIN_FILES, ids=lambda p: p.name)
def test_peer_training_options_validate(path):
    validate(load_yaml(path), is_train=True)


def _benchmark_table(opts):
    return [(s['name'], s['dataroot_gt'], s['dataroot_lq'], s['test_y_channel'], s['protocol'])
            for s in opts['datasets'].values()]


@pytest.mark.parametrize('path', PEER_TEST_FILES, ids=lambda p: p.name)
def test_peer_evaluation_options_validate_and_score_drcnets_tables(path):
    opts = validate(load_yaml(path), is_train=False)
    assert opts['path']['pretrain_network_g'].startswith('experiments/pretrained_models/')
    drcnet = validate(load_yaml(OPTIONS / 'test' / f'{path.stem.split("_")[-1]}.yml'), is_train=False)
    assert _benchmark_table(opts) == _benchmark_table(drcnet)
    assert opts['val']['metrics'] == drcnet['val']['metrics']


def test_ccnet_ships_a_recipe_and_an_evaluation_per_task():
    assert {p.stem for p in PEER_TRAIN_FILES} >= {'ccnet_derain', 'ccnet_denoise', 'ccnet_deblur'}
    assert {p.stem for p in PEER_TEST_FILES} >= {'ccnet_derain', 'ccnet_denoise', 'ccnet_deblur'}


def test_ccnet_deblurring_recipe_is_the_authors():
    # PEERS.md 2.4: Adam 1e-4 -> 1e-6 cosine, 3 warm-up epochs, batch 4 on one GPU, 256 crops with horizontal
    # flips, 3000 epochs of GoPro's 2,103 pairs (526 batches each), gradient norm 0.01, L1 + 0.1 FFT per scale
    opts = validate(load_yaml(OPTIONS / 'peers' / 'ccnet_deblur.yml'))
    train, data = opts['train'], opts['datasets']['train']
    assert opts['network_g'] == {'type': 'CCNet', 'base_channel': 36, 'num_res': 16}
    assert train['optim_g'] == {'type': 'Adam', 'lr': 1e-4, 'weight_decay': 0, 'betas': [0.9, 0.999], 'eps': 1e-8}
    assert train['scheduler'] == {'type': 'CosineAnnealingLR', 'T_max': 3000 * 526, 'eta_min': 1e-6}
    assert train['total_iter'] == 3000 * 526 and train['warmup_iter'] == 3 * 526
    assert (data['gt_size'], data['batch_size_per_gpu'], data['use_hflip'], data['use_rot']) == (256, 4, True, False)
    assert train['use_grad_clip'] and train['grad_clip_norm'] == 0.01
    assert train['pixel_opt']['type'] == 'L1Loss' and train['pixel_opt']['loss_weight'] == 1.0
    assert train['fft_opt'] == {'type': 'FFTLoss', 'loss_weight': 0.1, 'reduction': 'mean'}


@pytest.mark.parametrize('task', ['derain', 'denoise'])
def test_ccnet_recipes_of_our_own_say_so(task):
    text = (OPTIONS / 'peers' / f'ccnet_{task}.yml').read_text()
    assert 'OUR recipe' in text.splitlines()[0]
