"""Training end to end on tiny networks and the sample photographs: one process and torchrun."""
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from drcnet.engine.checkpoint import load_file
from drcnet.archs.drcnet_arch import DRCNet
from drcnet.engine.context import RunContext, weights_digest
from drcnet.engine.schema import validate
from drcnet.models.image_restoration_model import TrainingDiverged
from drcnet.train import find_resume_state, main, train

ROOT = Path(__file__).resolve().parents[1]

SYNTHETIC_TRAIN = {'type': 'SyntheticDegradationDataset', 'source': 'samples',
                   'samples': ['astronaut', 'chelsea', 'coffee'], 'degradation': 'gaussian_noise', 'sigma': 25,
                   'gt_size': 32, 'batch_size_per_gpu': 2, 'num_worker_per_gpu': 0}
SYNTHETIC_VAL = {'type': 'SyntheticDegradationDataset', 'source': 'samples', 'samples': ['rocket'],
                 'degradation': 'gaussian_noise', 'sigma': 25, 'crop_size': 48}


def tiny_options(tmp_path, name='tiny', total_iter=4, **train_changes):
    opts = {
        'name': name,
        'manual_seed': 3,
        'device': 'cpu',
        'datasets': {'train': dict(SYNTHETIC_TRAIN), 'val': dict(SYNTHETIC_VAL)},
        'network_g': {'type': 'DRCNet', 'wf': 8, 'depth': 2},
        'path': {'experiments_root': str(tmp_path / 'experiments')},
        'train': {'total_iter': total_iter, 'optim_g': {'type': 'Adam', 'lr': 1e-3},
                  'scheduler': {'type': 'CosineAnnealingLR', 'T_max': total_iter, 'eta_min': 1e-5}},
        'val': {'val_freq': 1000, 'pbar': False},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2},
    }
    opts['train'].update(train_changes)
    return opts


def write_options(tmp_path, opts, name='opt.yml'):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(opts))
    return path


# Components that exist only for the tests below: a torchrun job imports them from this launcher script.
TEST_COMPONENTS = textwrap.dedent('''
    import os
    import random
    import sys

    import torch
    from torch import nn

    import drcnet  # noqa: F401
    from drcnet.registry import DATASET_REGISTRY, LOSS_REGISTRY
    from drcnet.train import main

    RANK = int(os.environ.get('RANK', '0'))


    @LOSS_REGISTRY.register()
    class NaNOnOneRankLoss(nn.Module):
        """L1 that turns NaN on rank ``nan_rank`` from its ``nan_from_call``-th call (1-based) on."""

        def __init__(self, nan_rank=1, nan_from_call=1):
            super().__init__()
            self.nan_rank, self.nan_from_call, self.calls = nan_rank, nan_from_call, 0

        def forward(self, pred, gt):
            self.calls += 1
            loss = (pred - gt).abs().mean()
            return loss * float('nan') if RANK == self.nan_rank and self.calls >= self.nan_from_call else loss


    @LOSS_REGISTRY.register()
    class RandomlyWeightedL1Loss(nn.Module):
        """L1 times a weight drawn from this rank's torch generator, as a stochastic loss would draw."""

        def forward(self, pred, gt):
            return (pred - gt).abs().mean() * (0.5 + torch.rand(()))


    @DATASET_REGISTRY.register()
    class DrawRecordingDataset(torch.utils.data.Dataset):
        """Tiny patches; every item appends (rank, index, a draw of python's random) to ``record``."""

        def __init__(self, record, size=16, phase='train'):
            self.record, self.size = record, size

        def __len__(self):
            return self.size

        def __getitem__(self, index):
            with open(self.record, 'a') as f:
                f.write(f'{RANK} {index} {random.random()!r}\\n')
            img = torch.full((3, 16, 16), index / self.size)
            return {'lq': img, 'gt': img, 'lq_path': str(index), 'gt_path': str(index)}


    if __name__ == '__main__':
        sys.exit(main())
''')


def run_torchrun(tmp_path, opts, timeout=240):
    """Train ``opts`` with torchrun on 2 Gloo processes (test components available); (returncode, output)."""
    launcher = tmp_path / 'train_with_test_components.py'
    launcher.write_text(TEST_COMPONENTS)
    opt_path = write_options(tmp_path, opts, f'{opts["name"]}.yml')
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           str(launcher), '-opt', str(opt_path), '--launcher', 'pytorch']
    # a session of its own, so that a hung job's workers are killed with torchrun
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f'the 2-process job was still running after {timeout}s:\n{out[-3000:]}')
    return proc.returncode, out


def final_weights(tmp_path, name):
    return load_file(tmp_path / 'experiments' / name / 'models' / 'net_g_latest.pth')['params']


def test_train_writes_checkpoints_logs_and_validates(tmp_path):
    opts = tiny_options(tmp_path, ema_decay=0.9)
    assert main(['-opt', str(write_options(tmp_path, opts))]) == 0
    root = tmp_path / 'experiments' / 'tiny'
    assert sorted(p.name for p in (root / 'models').iterdir()) == ['net_g_2.pth', 'net_g_latest.pth']
    assert sorted(p.name for p in (root / 'training_states').iterdir()) == ['2.state', '4.state']
    ckpt = load_file(root / 'models' / 'net_g_latest.pth')
    assert set(ckpt) == {'params', 'params_ema', 'network_g'}
    assert ckpt['network_g'] == {'type': 'DRCNet', 'wf': 8, 'depth': 2}
    log = next(root.glob('train_tiny_*.log')).read_text()
    assert 'iter 4/4' in log and 'eta' in log and 'validation' in log
    assert not any(p.suffix == '.tmp' or p.name.startswith('.') for p in root.rglob('*'))


def test_stopped_and_resumed_run_ends_with_the_same_weights(tmp_path):
    ctx = RunContext(device=torch.device('cpu'))
    full = validate(tiny_options(tmp_path, name='full', total_iter=6))
    train(full, ctx)
    # same run, stopped after iteration 4 (the state saved at 4 stays), then resumed to 6
    part = validate(tiny_options(tmp_path, name='part', total_iter=6))
    part_short = validate(tiny_options(tmp_path, name='part', total_iter=6))
    part_short['train']['total_iter'] = 4
    train(part_short, ctx)
    train(part, ctx, auto_resume=True)
    a, b = final_weights(tmp_path, 'full'), final_weights(tmp_path, 'part')
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)


def test_auto_resume_skips_a_corrupt_state_with_a_warning(tmp_path, caplog):
    ctx = RunContext(device=torch.device('cpu'))
    opts = validate(tiny_options(tmp_path, name='corrupt', total_iter=4))
    train(opts, ctx)
    states = tmp_path / 'experiments' / 'corrupt' / 'training_states'
    good = states / '2.state'
    newest = states / '4.state'
    newest.write_bytes(newest.read_bytes()[:100])  # truncated, as after a crash mid-write
    with caplog.at_level(logging.WARNING, logger='basicsr'):
        found = find_resume_state(states)
    assert found is not None and found[0] == good and found[1]['iter'] == 2
    assert '4.state' in caplog.text


def test_nan_loss_stops_with_the_iteration_and_term_and_keeps_checkpoints(tmp_path):
    ctx = RunContext(device=torch.device('cpu'))
    opts = validate(tiny_options(tmp_path, name='nan', total_iter=3, optim_g={'type': 'Adam', 'lr': 1e30}))
    with pytest.raises(TrainingDiverged, match=r'iteration \d+: loss term l_pix'):
        train(opts, ctx)
    models = tmp_path / 'experiments' / 'nan' / 'models'
    assert not (models / 'net_g_latest.pth').exists()


def test_release_style_options_train_with_warnings(tmp_path, caplog):
    from drcnet.data.image_io import write_image
    from drcnet.data.samples import load_sample
    for sub in ('target', 'input'):
        (tmp_path / 'rain' / sub).mkdir(parents=True)
    for name in ('chelsea', 'coffee'):
        img = load_sample(name)[:64, :64]
        write_image(tmp_path / 'rain' / 'target' / f'{name}.png', img)
        write_image(tmp_path / 'rain' / 'input' / f'{name}.png', (img * 0.8 + 0.1))
    release = {
        'name': 'release_style', 'model_type': 'ImageRestorationModel', 'scale': 1, 'num_gpu': 1,
        'manual_seed': 10, 'device': 'cpu',
        'datasets': {'train': {'name': 'rain', 'type': 'PairedImageDataset',
                               'dataroot_gt': str(tmp_path / 'rain' / 'target'),
                               'dataroot_lq': str(tmp_path / 'rain' / 'input'), 'filename_tmpl': '{}',
                               'io_backend': {'type': 'disk'}, 'gt_size': 32, 'use_flip': True, 'use_rot': True,
                               'use_shuffle': True, 'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2,
                               'dataset_enlarge_ratio': 2, 'prefetch_mode': None}},
        'network_g': {'type': 'DRCNet', 'wf': 8, 'depth': 2, 'hin_position_left': 0, 'hin_position_right': 1},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None,
                 'experiments_root': str(tmp_path / 'experiments')},
        'train': {'optim_g': {'type': 'Adam', 'lr': 2e-4, 'weight_decay': 0, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'TrueCosineAnnealingLR', 'T_max': 2, 'eta_min': 1e-7},
                  'total_iter': 2, 'warmup_iter': -1, 'use_grad_clip': True,
                  'pixel_opt': {'type': 'IntraCRLoss', 'loss_weight': 1, 'reduction': 'mean'}},
        'val': {'val_freq': 1000, 'save_img': False, 'grids': True, 'crop_size': 64, 'max_minibatch': 8,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 1000, 'use_tb_logger': False,
                   'wandb': {'project': None, 'resume_id': None}},
        'dist_params': {'backend': 'gloo', 'port': 29500},
    }
    # the release's loss needs VGG19 weights; tests use random features
    release_path = write_options(tmp_path, release, 'release.yml')
    with caplog.at_level(logging.WARNING, logger='basicsr'):
        code = main(['-opt', str(release_path), '--force_yml', 'train:contrastive_opt:vgg_weights=random'])
    assert code == 0
    for old in ('use_flip', 'PairedImageDataset', 'hin_position', 'TrueCosineAnnealingLR', 'IntraCRLoss',
                'grids', 'max_minibatch', 'wandb'):
        assert old in caplog.text, old
    assert (tmp_path / 'experiments' / 'release_style' / 'models' / 'net_g_latest.pth').is_file()


def test_unknown_keys_fail_before_any_work(tmp_path, capsys):
    opts = tiny_options(tmp_path)
    opts['train']['ema_decy'] = 0.9
    assert main(['-opt', str(write_options(tmp_path, opts))]) == 2
    err = capsys.readouterr().err
    assert "train.ema_decy" in err and "did you mean 'ema_decay'" in err
    assert not (tmp_path / 'experiments').exists()


def test_torchrun_two_processes_on_gloo_end_with_identical_weights(tmp_path):
    opts = tiny_options(tmp_path, name='ddp', total_iter=3)
    opts['datasets'].pop('val')
    opt_path = write_options(tmp_path, opts)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           str(ROOT / 'train.py'), '-opt', str(opt_path), '--launcher', 'pytorch']
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    root = tmp_path / 'experiments' / 'ddp'
    log = next(root.glob('train_ddp_*.log')).read_text()
    assert 'world size 2' in log
    digests = dict(re.findall(r'rank (\d) ([0-9a-f]{64})', log))
    assert set(digests) == {'0', '1'} and digests['0'] == digests['1']
    # the digest rank 0 reported is the one of the weights it saved
    net = DRCNet(wf=8, depth=2)
    net.load_state_dict(load_file(root / 'models' / 'net_g_latest.pth')['params'])
    assert weights_digest(net) == digests['0']


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    ctx = RunContext(device=torch.device('cpu'))
    results = {}
    for name, batch, accum in (('big', 4, 1), ('accum', 2, 2)):
        # SGD: Adam divides by the gradient's magnitude, which would magnify rounding differences
        opts = tiny_options(tmp_path, name=name, total_iter=2, accum_iter=accum,
                            optim_g={'type': 'SGD', 'lr': 0.05})
        opts['datasets']['train'].update(batch_size_per_gpu=batch, images_per_epoch=8)
        opts['datasets'].pop('val')
        results[name] = train(validate(opts), ctx)['model'].net_g.state_dict()
    for k, v in results['big'].items():
        torch.testing.assert_close(results['accum'][k], v, atol=1e-6, rtol=1e-5)


def test_progressive_training_changes_patch_and_batch_size(tmp_path, monkeypatch):
    from drcnet.models.image_restoration_model import ImageRestorationModel
    seen = []
    original = ImageRestorationModel.train_step

    def recording(self, batches, current_iter):
        seen.append((current_iter, tuple(batches[0]['gt'].shape)))
        return original(self, batches, current_iter)

    monkeypatch.setattr(ImageRestorationModel, 'train_step', recording)
    opts = tiny_options(tmp_path, name='prog', total_iter=4,
                        progressive={'iters': [2, 4], 'gt_size': [32, 48], 'batch_size': [2, 1]})
    opts['datasets'].pop('val')
    train(validate(opts), RunContext(device=torch.device('cpu')))
    assert seen == [(0, (2, 3, 32, 32)), (1, (2, 3, 32, 32)), (2, (1, 3, 48, 48)), (3, (1, 3, 48, 48))]


def test_bf16_autocast_on_cpu_trains(tmp_path):
    opts = tiny_options(tmp_path, name='bf16', total_iter=2, mixed_precision='bf16')
    opts['datasets'].pop('val')
    out = train(validate(opts), RunContext(device=torch.device('cpu')))
    assert out['iter'] == 2
    assert all(torch.isfinite(p).all() for p in out['model'].net_g.parameters())


def test_fp16_is_refused_on_the_cpu(tmp_path):
    opts = tiny_options(tmp_path, name='fp16', total_iter=1, mixed_precision='fp16')
    with pytest.raises(ValueError, match='fp16'):
        train(validate(opts), RunContext(device=torch.device('cpu')))


def test_two_hundred_iterations_on_the_demo_data_beat_the_noisy_input(tmp_path):
    demo = yaml.safe_load((ROOT / 'options' / 'demo.yml').read_text())
    opts = tiny_options(tmp_path, name='demo_short', total_iter=200)
    opts['datasets'] = {'train': dict(demo['datasets']['train'], gt_size=48, batch_size_per_gpu=4,
                                      num_worker_per_gpu=0),
                        'val': dict(demo['datasets']['val'], crop_size=96)}
    opts['network_g'] = {'type': 'DRCNet', 'wf': 8, 'depth': 3}
    opts['train'].update(optim_g={'type': 'Adam', 'lr': 2e-3},
                         scheduler={'type': 'CosineAnnealingLR', 'T_max': 200, 'eta_min': 1e-5})
    opts['logger'] = {'print_freq': 100, 'save_checkpoint_freq': 1000}
    opts['val']['val_freq'] = 200
    rows = train(validate(opts), RunContext(device=torch.device('cpu')))['rows']
    assert rows and rows[0]['psnr'] > rows[0]['input_psnr'] + 1.0, rows


def test_validation_during_bf16_training_scores_what_test_py_scores(tmp_path):
    from drcnet.test import run_tests
    opts = tiny_options(tmp_path, name='bf16_val', total_iter=2, mixed_precision='bf16')
    rows = train(validate(opts), RunContext(device=torch.device('cpu')))['rows']
    weights = tmp_path / 'experiments' / 'bf16_val' / 'models' / 'net_g_latest.pth'
    test_opts = validate({'name': 'bf16_val_test', 'device': 'cpu', 'network_g': opts['network_g'],
                          'datasets': {'test_1': dict(SYNTHETIC_VAL, name='val')},
                          'path': {'pretrain_network_g': str(weights), 'results_root': str(tmp_path / 'results')},
                          'val': {'pbar': False}}, is_train=False)
    tested = run_tests(test_opts, torch.device('cpu'))['rows'][0]
    # the same float32 computation on the same weights and image: equal, not merely close
    assert rows[0]['psnr'] == tested['psnr'] and rows[0]['ssim'] == tested['ssim'], (rows[0], tested)


def test_nan_on_one_rank_stops_both_processes_together_and_keeps_the_good_checkpoint(tmp_path):
    # DRCNet has two stage outputs, so the pixel loss is called twice per iteration: call 7 is in iteration 3
    opts = tiny_options(tmp_path, name='nan_rank1', total_iter=6,
                        pixel_opt={'type': 'NaNOnOneRankLoss', 'nan_rank': 1, 'nan_from_call': 7})
    opts['datasets'].pop('val')
    # a hang would last until the process group's timeout, far beyond this test's subprocess timeout
    code, out = run_torchrun(tmp_path, opts, timeout=180)
    assert code != 0, out[-3000:]
    # both ranks stop at the same step with the same message (not crashed in an all-reduce, which gives -6);
    # the first to exit makes torchrun stop the other, which may still be closing down (SIGTERM, -15)
    message = 'iteration 3: loss term l_pix is not finite on rank 1; stopped without saving'
    assert out.count(message) == 2, out[-3000:]
    codes = [int(c) for c in re.findall(r'exitcode\s*: (-?\d+)', out)]
    assert 1 in codes and set(codes) <= {1, -15}, out[-3000:]
    root = tmp_path / 'experiments' / 'nan_rank1'
    assert sorted(p.name for p in (root / 'models').iterdir()) == ['net_g_2.pth']
    assert sorted(p.name for p in (root / 'training_states').iterdir()) == ['2.state']
    net = DRCNet(wf=8, depth=2)
    net.load_state_dict(load_file(root / 'models' / 'net_g_2.pth')['params'])
    assert load_file(root / 'training_states' / '2.state')['iter'] == 2


def test_an_unset_seed_is_drawn_once_so_the_shards_are_disjoint_and_each_rank_draws_its_own(tmp_path):
    record = tmp_path / 'draws.txt'
    opts = tiny_options(tmp_path, name='seedless', total_iter=4)
    opts['manual_seed'] = None
    # 16 items, batch 2 on each of 2 ranks: 4 iterations are one epoch
    opts['datasets'] = {'train': {'type': 'DrawRecordingDataset', 'record': str(record), 'size': 16,
                                  'batch_size_per_gpu': 2, 'num_worker_per_gpu': 0}}
    code, out = run_torchrun(tmp_path, opts)
    assert code == 0, out[-3000:]
    lines = [line.split() for line in record.read_text().splitlines()]
    shards = {r: sorted(int(i) for rank, i, _ in lines if rank == r) for r in ('0', '1')}
    assert len(shards['0']) == len(shards['1']) == 8
    assert sorted(shards['0'] + shards['1']) == list(range(16))  # disjoint, and together the whole set
    draws = {r: [float(d) for rank, _, d in lines if rank == r] for r in ('0', '1')}
    assert len(set(draws['0'] + draws['1'])) == 16  # every sample, on either rank, got its own random draws
    assert len(re.findall(r'manual_seed not set: this run uses seed \d+', out)) == 1  # rank 0 logs it


@pytest.mark.parametrize('workers', [0, 1])
def test_stopped_and_resumed_run_ends_with_the_same_weights_with_loader_workers(tmp_path, workers):
    ctx = RunContext(device=torch.device('cpu'))
    weights = {}
    for name, stops in (('full', False), ('part', True)):
        opts = tiny_options(tmp_path, name=name, total_iter=6)
        opts['datasets']['train'].update(num_worker_per_gpu=workers, images_per_epoch=6)  # 3 iterations per epoch
        opts['datasets'].pop('val')
        if stops:
            short = validate(opts)
            short['train']['total_iter'] = 4  # stops in the middle of the second epoch
            train(short, ctx)
        train(validate(opts), ctx, auto_resume=stops)
        weights[name] = final_weights(tmp_path, name)
    for k, v in weights['full'].items():
        assert torch.equal(weights['part'][k], v), k


def test_two_process_run_resumed_mid_epoch_ends_with_the_same_weights(tmp_path):
    # a loss that draws from each rank's own generator: a resume giving every rank rank 0's states differs
    opts = tiny_options(tmp_path, name='full', total_iter=6, pixel_opt={'type': 'RandomlyWeightedL1Loss'})
    opts['datasets']['train'].update(images_per_epoch=12)  # 3 iterations per epoch on each rank
    opts['datasets'].pop('val')
    code, out = run_torchrun(tmp_path, opts)
    assert code == 0, out[-3000:]
    # the state the uninterrupted run wrote at iteration 4 (mid-epoch), resumed by a second job
    state_path = tmp_path / 'experiments' / 'full' / 'training_states' / '4.state'
    resumed = dict(opts, name='resumed', path=dict(opts['path'], resume_state=str(state_path)))
    code, out = run_torchrun(tmp_path, resumed)
    assert code == 0, out[-3000:]
    full, part = final_weights(tmp_path, 'full'), final_weights(tmp_path, 'resumed')
    for k, v in full.items():
        assert torch.equal(part[k], v), k
    state = load_file(state_path)
    assert sorted(state['rng']) == [0, 1]  # each rank's random states, gathered by rank 0
    assert not torch.equal(state['rng'][0]['torch'], state['rng'][1]['torch'])


def test_validation_during_training_scores_each_set_with_its_own_protocol(tmp_path):
    ctx = RunContext(device=torch.device('cpu'))
    opts = tiny_options(tmp_path, name='protocols', total_iter=2)
    opts['datasets'] = {'train': dict(SYNTHETIC_TRAIN),
                        'val_rgb': dict(SYNTHETIC_VAL, name='rgb'),
                        'val_y': dict(SYNTHETIC_VAL, name='luma', test_y_channel=True),
                        'val_realblur': dict(SYNTHETIC_VAL, name='aligned', protocol='realblur')}
    opts['val']['val_freq'] = 2
    train(validate(opts), ctx)
    log = ''.join(p.read_text() for p in (tmp_path / 'experiments' / 'protocols').glob('*.log'))
    found = dict(re.findall(r'validation (\w+) @ iter 2 \(([\w-]+)\)', log))
    assert found == {'rgb': 'RGB', 'luma': 'Y', 'aligned': 'RealBlur-ECC'}


TINY_DGUNET = {'type': 'DGUNet', 'n_feat': 8, 'scale_unetfeats': 4, 'scale_orsnetfeats': 4}


TINY_DGUNET_PLUS = {'type': 'DGUNetPlus', 'n_feat': 8, 'scale_unetfeats': 4}


@pytest.mark.parametrize('network', [TINY_DGUNET, TINY_DGUNET_PLUS], ids=['DGUNet', 'DGUNetPlus'])
def test_a_tiny_dgunet_trains_on_the_demo_data_with_charbonnier_and_edge_loss_on_all_outputs(tmp_path, network):
    demo = yaml.safe_load((ROOT / 'options' / 'demo.yml').read_text())
    opts = tiny_options(tmp_path, name='dgunet', total_iter=2, mixed_precision='bf16',
                        pixel_opt={'type': 'CharbonnierLoss', 'output_weights': [1, 1, 1, 1, 1, 1, 2]},
                        edge_opt={'type': 'EdgeLoss', 'loss_weight': 0.05})
    opts['datasets'] = {'train': dict(demo['datasets']['train'], gt_size=24, batch_size_per_gpu=2,
                                      num_worker_per_gpu=0),
                        'val': dict(demo['datasets']['val'], crop_size=37)}  # odd: padded to 40 inside
    opts['network_g'] = dict(network)
    assert main(['-opt', str(write_options(tmp_path, opts))]) == 0
    root = tmp_path / 'experiments' / 'dgunet'
    log = next(root.glob('train_dgunet_*.log')).read_text()
    assert 'l_pix' in log and 'l_edge' in log and 'validation' in log
    ckpt = load_file(root / 'models' / 'net_g_latest.pth')
    assert ckpt['network_g'] == network
    if network['type'] == 'DGUNet':
        assert 'basic.concat12.weight' in ckpt['params']


def test_output_weights_of_the_wrong_length_stop_with_the_key(tmp_path):
    opts = tiny_options(tmp_path, name='dgunet_bad', total_iter=1,
                        edge_opt={'type': 'EdgeLoss', 'output_weights': [1, 1]})
    opts['network_g'] = dict(TINY_DGUNET)
    opts['datasets'].pop('val')
    with pytest.raises(ValueError, match='train.edge_opt.output_weights: 2 weights given, but the network returns 7'):
        train(validate(opts), RunContext(device=torch.device('cpu')))
    assert not (tmp_path / 'experiments' / 'dgunet_bad' / 'models' / 'net_g_latest.pth').exists()
