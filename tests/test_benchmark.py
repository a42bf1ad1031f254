"""scripts/benchmark.py's sections on tiny networks and sizes: they run and report sane numbers (no timings)."""
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from drcnet.accel import accelerate
from drcnet.archs.dfr_block import PROFILE_ATTENTION, PROFILE_SPATIAL_FILTER
from drcnet.archs.drcnet_arch import DRCNet

SCRIPT = Path(__file__).resolve().parents[1] / 'scripts' / 'benchmark.py'
TINY = {'type': 'DRCNet', 'wf': 4, 'depth': 2}


@pytest.fixture(scope='module')
def bench():
    spec = importlib.util.spec_from_file_location('drcnet_benchmark', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_net(**kwargs):
    torch.manual_seed(0)
    return DRCNet(**{'wf': 4, 'depth': 3, **kwargs}).eval()


def positive(value):
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_interleaved_timing_alternates_the_functions(bench):
    calls = []
    runs = bench.time_interleaved({'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')}, repeats=3)
    assert calls == ['a', 'b'] * 4  # one warm-up round, then three timed ones
    assert [len(r) for r in runs.values()] == [3, 3] and all(positive(ms) for r in runs.values() for ms in r)


def test_flops_of_single_convolutions_match_a_hand_count(bench):
    # 8 output maps of 10 x 12 pixels, each pixel a 3 x 3 x 3 dot product: 27 multiply-adds, 2 FLOPs each
    conv, x = nn.Conv2d(3, 8, 3, padding=1), torch.rand(1, 3, 10, 12)
    assert bench.count_flops(conv, x) == 51840
    assert bench.conv_flops_by_level(conv, x, wf=8) == {(8, 10, 12): 51840}
    # stride 2: 6 maps of 4 x 4 pixels, each a 4 x 4 x 4 dot product (64 multiply-adds)
    strided = nn.Conv2d(4, 6, 4, stride=2, padding=1, bias=False)
    assert bench.count_flops(strided, torch.rand(1, 4, 8, 8)) == 12288


def test_flops_by_level_cover_the_network_convolutions(bench):
    net, x = tiny_net(), torch.rand(1, 3, 32, 24)
    levels = bench.conv_flops_by_level(net, x, wf=4)
    assert sorted(levels) == [(4, 32, 24), (8, 16, 12), (16, 8, 6)]
    # the counter also sees the region norm's sums (a visible share only in networks this narrow)
    assert sum(levels.values()) < bench.count_flops(net, x) < 1.1 * sum(levels.values())
    no_norm = tiny_net(block='ea')
    assert sum(bench.conv_flops_by_level(no_norm, x, wf=4).values()) == bench.count_flops(no_norm, x)


def test_forward_reports_rates_and_a_ceiling_between_its_levels(bench):
    result = bench.measure_forward(accelerate(tiny_net()), 32, repeats=2, wf=4)
    for key in ('ms', 'gflop', 'gflops', 'ceiling_gflops', 'ceiling_ratio'):
        assert positive(result[key]), key
    levels = result['ceiling_levels']
    assert [lvl['width'] for lvl in levels] == [4, 8, 16]
    assert all(lvl['layout'] in ('nchw', 'channels_last') and positive(lvl['gflops']) for lvl in levels)
    rates = [lvl['gflops'] for lvl in levels]
    assert min(rates) * 0.999 <= result['ceiling_gflops'] <= max(rates) * 1.001
    json.dumps(result)


def test_profile_finds_both_dfr_operations(bench):
    prof = bench.dfr_profile(accelerate(tiny_net()), 32, repeats=1)
    assert 0 < prof['share'] < 1
    assert positive(prof['spatial_filter_ms']) and positive(prof['attention_ms'])
    assert prof['spatial_filter_ms'] + prof['attention_ms'] < prof['forward_ms']


@pytest.mark.parametrize('block, missing', [('sf', [PROFILE_ATTENTION]),
                                            ('base', [PROFILE_SPATIAL_FILTER, PROFILE_ATTENTION])])
def test_profile_of_a_network_without_the_operations_raises(bench, block, missing):
    with pytest.raises(RuntimeError) as err:
        bench.dfr_profile(tiny_net(block=block), 16, repeats=1)
    for name in missing:
        assert repr(name) in str(err.value)


def test_train_step_with_and_without_intra_cr(bench):
    result = bench.measure_train_step(TINY, batch=2, size=24, repeats=1)
    assert positive(result['ms_l1']) and positive(result['ms_l1_intra_cr'])
    assert math.isfinite(result['intra_cr_overhead'])
    torch.manual_seed(0)
    net = DRCNet(wf=4, depth=2).train()
    step = bench.make_train_step(net, *bench.photo_batch(2, 24))
    first = step()
    for _ in range(5):
        last = step()
    assert math.isfinite(first) and last < first


def test_data_section_reads_the_folder_and_its_lmdb(bench, tmp_path):
    step = {'batch': 4, 'size': 32, 'ms_l1': 100.0}
    result = bench.measure_data(64, batches=2, train_step=step, workdir=tmp_path)
    for name in ('folder', 'lmdb'):
        for workers in (0, 2):
            assert positive(result[name][f'workers_{workers}_samples_per_s'])
            assert positive(result[name][f'workers_{workers}_ratio'])


def test_tiled_restore_runs_in_a_child_process(bench):
    result = bench.run_child('tiled', 1, height=72, width=80, tile=48, accel=True)
    assert positive(result['peak_rss_mb']) and positive(result['seconds'])


def test_forward_variants_eager_compiled_and_accelerated(bench):
    # inductor's first compile takes minutes here; dynamo's eager backend exercises the same code path
    result = bench.child_variants(['eager', 'compile', 'accel'], size=16, repeats=1, allocator=False, backend='eager',
                                  net_cfg=TINY)
    for variant in ('eager', 'compile', 'accel'):
        assert positive(result[variant]['ms']), variant
    assert positive(result['compile']['compile_s']) and result['allocator'] is False


@pytest.fixture
def no_cuda_calls(monkeypatch):
    """Make every CUDA-only call fail, to show that a CPU run never reaches one."""
    def fail(*args, **kwargs):
        raise AssertionError('a CUDA-only call in a CPU run')
    for name in ('synchronize', 'max_memory_allocated', 'reset_peak_memory_stats', 'empty_cache'):
        monkeypatch.setattr(torch.cuda, name, fail)


def test_device_section_runs_its_logic_on_the_cpu(bench, no_cuda_calls):
    result = bench.measure_device(torch.device('cpu'), TINY, batch=2, train_size=16, forward_sizes=(16, 24),
                                  steps=1, compiled=(False,))
    assert set(result['numerics']) == {'paper', 'release'}
    assert result['numerics']['release']['options'] == {'sf_threshold': 0.8, 'ea_lambda': 1e-4, 'region_stats': 'batch'}
    for block in result['numerics'].values():
        assert sorted(block['variants']) == sorted(f'{p}/{layout}/eager' for p in ('fp32', 'bf16', 'fp16')
                                                   for layout in ('nchw', 'channels_last'))
        for name, row in block['variants'].items():
            train = row['train']
            assert positive(train['it_per_s']) and positive(train['images_per_s']), name
            assert train['finite_loss'] is True and train['peak_memory_mb'] is None, name
            for size in (16, 24):
                assert positive(row[f'forward_{size}']['ms']), name
    assert result['cpu_vs_device']['max_abs_diff'] == 0.0  # the same device on both sides
    json.dumps(result)


def test_device_section_compiles_on_the_cpu(bench, no_cuda_calls):
    result = bench.measure_device(torch.device('cpu'), TINY, batch=2, train_size=16, forward_sizes=(16,), steps=1,
                                  precisions=('bf16',), layouts=(True,), compiled=(True,), backend='eager')
    row = result['numerics']['paper']['variants']['bf16/channels_last/compile']
    assert positive(row['train']['it_per_s']) and positive(row['train']['first_step_s'])
    assert positive(row['forward_16']['ms'])


def test_cuda_without_a_gpu_is_refused_with_one_clear_line(bench):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run([sys.executable, str(SCRIPT), '--device', 'cuda'], capture_output=True, text=True, env=env)
    assert proc.returncode != 0 and proc.stdout == ''
    assert proc.stderr.strip().splitlines()[-1] == bench.NO_CUDA


def test_sections_follow_the_device_and_the_flags(bench):
    assert 'variants' in bench.pick_sections('cpu', None, quick=False, variants=None)
    assert 'variants' not in bench.pick_sections('cpu', None, quick=True, variants=None)
    assert 'variants' not in bench.pick_sections('cpu', None, quick=False, variants=False)
    assert 'variants' in bench.pick_sections('cpu', None, quick=True, variants=True)
    assert bench.pick_sections('cuda', None, quick=False, variants=None) == ('train_step', 'data', 'device')
    assert bench.pick_sections('cpu', 'data, device', quick=True, variants=None) == ('data', 'device')
    with pytest.raises(SystemExit, match='tiles'):
        bench.pick_sections('cpu', 'forward,tiles', quick=False, variants=None)


def results_at(ratio, overhead, lmdb_ratio, rss):
    return {'forward': {'paper': {'256': {'ceiling_ratio': ratio}}}, 'train_step': {'intra_cr_overhead': overhead},
            'data': {'folder': {'workers_2_ratio': 20.0}, 'lmdb': {'workers_2_ratio': lmdb_ratio}},
            'tiled': {'peak_rss_mb': rss, 'quick': False}}


def test_targets_are_checked_against_their_bounds(bench):
    met = bench.check_targets(results_at(0.86, 0.34, 4.1, 2999.0))
    assert [t['met'] for t in met.values()] == [True] * 4
    missed = bench.check_targets(results_at(0.84, 0.36, 3.9, 3000.0))  # the memory bound is strict
    assert [t['met'] for t in missed.values()] == [False] * 4
    assert missed['data.workers_2_ratio (min of folder, lmdb)']['value'] == 3.9
    assert all(t['met'] is None for t in bench.check_targets({}).values())
    quick = bench.check_targets({'tiled': {'peak_rss_mb': 900.0, 'quick': True}})
    assert 'quick' in quick['tiled_peak_rss_mb']['note']


def test_table_prints_every_section(bench, capsys):
    train = {'it_per_s': 2.0, 'images_per_s': 8.0, 'peak_memory_mb': 5000.0}
    results = {
        'meta': {'device': 'cpu', 'threads': 2, 'torch': 'x', 'quick': True, 'accel': True,
                 'load_before': [0.1, 0.1, 0.1], 'load_after': [0.2, 0.1, 0.1]},
        'forward': {'paper': {'256': {'ms': 10.0, 'gflop': 1.0, 'gflops': 100.0, 'ceiling_gflops': 120.0,
                                     'ceiling_ratio': 0.83}}},
        'profile': {'demo': {'share': 0.2, 'forward_ms': 10.0, 'spatial_filter_ms': 1.5, 'attention_ms': 0.5}},
        'train_step': {'batch': 4, 'size': 128, 'ms_l1': 100.0, 'ms_l1_intra_cr': 120.0, 'intra_cr_overhead': 0.2},
        'data': {'gt_size': 256, 'consumed_samples_per_s': 1.0,
                 'folder': {'workers_0_samples_per_s': 5.0, 'workers_0_ratio': 5.0,
                            'workers_2_samples_per_s': 9.0, 'workers_2_ratio': 9.0},
                 'lmdb': {'workers_0_samples_per_s': 6.0, 'workers_0_ratio': 6.0,
                          'workers_2_samples_per_s': 11.0, 'workers_2_ratio': 11.0}},
        'tiled': {'image': [768, 1024], 'tile': 512, 'peak_rss_mb': 900.0, 'seconds': 3.0, 'quick': True},
        'variants': {'size': 256, 'a_eager': {'ms': 600.0}, 'b_compile': {'ms': 500.0, 'compile_s': 50.0},
                     'c_accel': {'ms': 520.0}},
        'device': {'device': 'cuda:0', 'batch': 4, 'train_size': 256, 'cpu_vs_device': {'max_abs_diff': 1e-5},
                   'numerics': {n: {'variants': {'fp16/channels_last/compile': {
                       'train': train, 'forward_256': {'ms': 7.5}, 'forward_1024': {'ms': 99.0}},
                       'fp32/nchw/compile': {'error': 'OutOfMemoryError: CUDA out of memory'}}}
                       for n in ('paper', 'release')}},
    }
    results['targets'] = bench.check_targets(results)
    bench.print_table(results)
    out = capsys.readouterr().out
    for text in ('0.83', '20.0 %', 'overhead 0.200', 'x11.0', 'QUICK', '900 MB', 'compile 50 s',
                 'fp16/channels_last/compile', '5000', '99.0', '1.00e-05', 'NOT met',
                 'OutOfMemoryError'):
        assert text in out, text
