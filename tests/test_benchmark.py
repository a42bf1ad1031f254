"""Smoke tests of scripts/benchmark.py's measuring helpers on tiny networks (no timing assertions)."""
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from drcnet.archs.drcnet_arch import DRCNet

SCRIPT = Path(__file__).resolve().parents[1] / 'scripts' / 'benchmark.py'


@pytest.fixture(scope='module')
def bench():
    spec = importlib.util.spec_from_file_location('drcnet_benchmark', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_net():
    torch.manual_seed(0)
    return DRCNet(wf=4, depth=3).eval()


def positive(value):
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_time_call_reports_every_run(bench):
    calls = []
    timing = bench.time_call(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5
    assert len(timing['runs_ms']) == 3 and timing['min_ms'] <= timing['median_ms']


def test_flops_by_level_add_up_to_the_flop_counter(bench):
    net = tiny_net()
    x = torch.rand(1, 3, 32, 24)
    levels = bench.conv_flops_by_level(net, x)
    # three resolutions, widths 4, 8, 16
    assert sorted(levels) == [(4, 32, 24), (8, 16, 12), (16, 8, 6)]
    # the flop counter also counts the region norm's matrix-vector sums (large only in tiny nets)
    assert sum(levels.values()) < bench.count_flops(net, x) < 1.1 * sum(levels.values())
    no_norm = DRCNet(wf=4, depth=3, block='ea').eval()
    assert sum(bench.conv_flops_by_level(no_norm, x).values()) == bench.count_flops(no_norm, x)


def test_ceiling_and_forward_give_sane_positive_numbers(bench):
    net = tiny_net()
    x = torch.rand(1, 3, 32, 32)
    # the forward's ceiling, timed between its runs, at the network's own levels
    result = bench.measure_forward(net, 32, repeats=2, levels=bench.conv_flops_by_level(net, x))
    for key in ('ms', 'gflop', 'gflops', 'ceiling_gflops', 'ceiling_ratio'):
        assert positive(result[key]), key
    assert len(result['runs_ms']) == 2
    assert result['gflop'] == pytest.approx(bench.count_flops(net, x) / 1e9)
    assert result['gflops'] == pytest.approx(result['gflop'] / (result['ms'] / 1e3))
    assert result['ceiling_ratio'] == pytest.approx(result['gflops'] / result['ceiling_gflops'])
    levels = result['ceiling_levels']
    assert [lvl['width'] for lvl in levels] == [4, 8, 16]
    assert all(lvl['layout'] in ('nchw', 'channels_last') and positive(lvl['gflops']) for lvl in levels)
    # the weighted ceiling lies between the slowest and the fastest level
    rates = [lvl['gflops'] for lvl in levels]
    assert min(rates) * 0.999 <= result['ceiling_gflops'] <= max(rates) * 1.001
    assert 'ceiling_ratio' not in bench.measure_forward(net, 32, repeats=1)
    json.dumps(result)


def test_dfr_profile_splits_the_block_time(bench):
    net = tiny_net()
    prof = bench.profile_dfr_extras(net, 32, repeats=1)
    assert 0 < prof['extras_share'] < 1
    assert prof['region_norm_ms'] > 0 and prof['attention_ms'] > 0
    assert prof['dfr_dense_convs_ms'] + prof['extras_ms'] == pytest.approx(prof['dfr_blocks_ms'])
    assert prof['dfr_blocks_ms'] <= prof['forward_ms']
    # the labels are removed afterwards: the module's functions are the originals again
    from drcnet.archs import dfr_block
    assert dfr_block.AdaptiveFeatureNorm.forward.__qualname__ == 'AdaptiveFeatureNorm.forward'
    assert dfr_block._energy_attention_.__name__ == '_energy_attention_'


def test_train_step_runs_and_lowers_the_loss(bench):
    torch.manual_seed(0)
    net = DRCNet(wf=4, depth=2).train()
    lq, gt = bench._photo_batch(2, 24)
    step = bench.make_train_step(net, lq, gt)
    first = step()
    for _ in range(5):
        last = step()
    assert math.isfinite(first) and last < first


def test_table_prints_every_section(bench, capsys):
    results = {
        'meta': {'device': 'cpu', 'threads': 2, 'dtype': 'float32', 'torch': 'x', 'quick': True,
                 'load_before': [0.1, 0.1, 0.1], 'load_after': [0.2, 0.1, 0.1]},
        'forward': {'demo': {'256': {'ms': 10.0, 'gflop': 1.0, 'gflops': 100.0, 'ceiling_gflops': 120.0,
                                     'ceiling_ratio': 0.83}}},
        'dfr_profile': {'demo': {'256': {'extras_share': 0.2, 'forward_ms': 10.0, 'region_norm_ms': 1.0,
                                         'attention_ms': 0.5, 'joins_ms': 0.5, 'dfr_dense_convs_ms': 4.0}}},
        'train_step': {'unavailable': 'no loss module'},
        'data': {'gt_size': 256, 'consumed_samples_per_s': 1.0,
                 'folder': {'workers_0_samples_per_s': 5.0, 'workers_0_ratio': 5.0,
                            'workers_2_samples_per_s': 9.0, 'workers_2_ratio': 9.0},
                 'lmdb': {'unavailable': 'scripts/create_lmdb.py missing'}},
        'tiled': {'image': [1200, 1600], 'tile': 512, 'peak_rss_mb': 900.0, 'seconds': 3.0, 'quick': True},
    }
    bench.print_table(results)
    out = capsys.readouterr().out
    for text in ('0.83', '20.0 %', 'unavailable: no loss module', 'lmdb: unavailable', 'QUICK', '900 MB'):
        assert text in out, text


def test_cpu_layout_variants_restore_the_network(bench):
    net = tiny_net()
    variants = bench.cpu_layout_variants(net, 32, repeats=1)
    assert positive(variants['nchw_maps_ms']) and positive(variants['reference_path_ms'])
    assert net.cpu_channels_last is True
    assert not any(getattr(m, 'use_reference', False) for m in net.modules())


def test_targets_are_checked_against_their_bounds(bench):
    results = {'forward': {'paper': {'256': {'ceiling_ratio': 0.9}}},
               'dfr_profile': {'demo': {'256': {'extras_share': 0.3}}},
               'data': {'folder': {'workers_2_ratio': 9.0}, 'lmdb': {'workers_2_ratio': 3.0}},
               'tiled_peak_rss_mb': 2000.0, 'tiled': {'quick': True}}
    targets = bench.check_targets(results)
    assert targets['forward.paper.256.ceiling_ratio']['met'] is True
    assert targets['dfr_profile.demo.256.extras_share']['met'] is False
    assert targets['train_step.intra_cr_overhead']['met'] is None  # not measured
    assert targets['data.workers_2_ratio (min of folder, lmdb)']['value'] == 3.0
    assert targets['tiled_peak_rss_mb']['met'] is True and 'quick' in targets['tiled_peak_rss_mb']['note']
