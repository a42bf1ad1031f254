"""python test.py on small sets in the benchmarks' layouts: the table matches basicsr on the saved images."""
import json

import numpy as np
import pytest
import torch
import yaml
from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_ssim

from drcnet.archs.drcnet_arch import DRCNet
from drcnet.data.degradations import gaussian_noise, rain
from drcnet.data.image_io import read_image, write_image
from drcnet.data.samples import load_sample
from drcnet.engine.checkpoint import save_network
from drcnet.test import main

NET = {'type': 'DRCNet', 'wf': 8, 'depth': 2}


def make_set(folder, names, degrade, size=(40, 56), lq='input', gt='target'):
    rng = np.random.default_rng(0)
    for name in names:
        clean = load_sample(name)[:size[0], :size[1]]
        write_image(folder / gt / f'{name}.png', clean)
        write_image(folder / lq / f'{name}.png', degrade(clean, rng))


@pytest.fixture
def benchmark_tree(tmp_path):
    root = tmp_path / 'datasets'
    make_set(root / 'Rain13K' / 'test' / 'Rain100L', ['chelsea', 'coffee'], lambda x, r: rain(x, r, 'light'))
    make_set(root / 'SIDD' / 'val', ['astronaut', 'rocket', 'coffee'], lambda x, r: gaussian_noise(x, 25, r),
             gt='gt')
    make_set(root / 'GoPro' / 'test', ['motorcycle_left'], lambda x, r: gaussian_noise(x, 10, r))
    return root


def test_one_row_per_set_with_basicsr_numbers_on_the_saved_images(tmp_path, benchmark_tree):
    torch.manual_seed(0)
    weights = tmp_path / 'net.pth'
    save_network(DRCNet(wf=8, depth=2), weights, NET)
    sets = {
        'test_1': ('Rain100L', benchmark_tree / 'Rain13K/test/Rain100L/target', benchmark_tree / 'Rain13K/test/Rain100L/input', True),
        'test_2': ('SIDD_val', benchmark_tree / 'SIDD/val/gt', benchmark_tree / 'SIDD/val/input', False),
        'test_3': ('GoPro', benchmark_tree / 'GoPro/test/target', benchmark_tree / 'GoPro/test/input', False),
    }
    opts = {'name': 'eval', 'device': 'cpu', 'network_g': NET,
            'datasets': {k: {'name': n, 'type': 'PairedRestorationDataset', 'dataroot_gt': str(g),
                             'dataroot_lq': str(q), 'test_y_channel': y} for k, (n, g, q, y) in sets.items()},
            'path': {'pretrain_network_g': str(weights), 'results_root': str(tmp_path / 'results')},
            'val': {'save_img': True, 'pbar': False}}
    opt_path = tmp_path / 'test.yml'
    opt_path.write_text(yaml.safe_dump(opts))
    assert main(['-opt', str(opt_path)]) == 0

    out = tmp_path / 'results' / 'eval'
    report = json.loads((out / 'metrics.json').read_text())
    rows = {r['dataset']: r for r in report['rows']}
    assert list(rows) == ['Rain100L', 'SIDD_val', 'GoPro', 'average']
    for key, (name, gt_dir, _, y) in sets.items():
        psnrs, ssims = [], []
        for gt_path in sorted(gt_dir.iterdir()):
            restored = np.round(read_image(out / name / gt_path.name) * 255)[..., ::-1]
            gt = np.round(read_image(gt_path) * 255)[..., ::-1]
            psnrs.append(calculate_psnr(restored, gt, 0, test_y_channel=y))
            ssims.append(calculate_ssim(restored, gt, 0, test_y_channel=y))
        row = rows[name]
        assert row['protocol'] == ('Y' if y else 'RGB')
        assert row['images'] == len(psnrs)
        assert row['psnr'] == pytest.approx(np.mean(psnrs), abs=1e-6)
        assert row['ssim'] == pytest.approx(np.mean(ssims), abs=1e-6)
        assert row['seconds'] > 0
    assert rows['average']['psnr'] == pytest.approx(np.mean([rows[n]['psnr'] for n in ('Rain100L', 'SIDD_val', 'GoPro')]))
    assert (out / 'metrics.csv').read_text().startswith('dataset,protocol,images')
    assert '| Rain100L | Y |' in (out / 'metrics.md').read_text()


def test_missing_weights_file_is_named(tmp_path, benchmark_tree, capsys):
    opts = {'name': 'eval', 'device': 'cpu', 'network_g': NET,
            'datasets': {'test_1': {'type': 'PairedRestorationDataset',
                                    'dataroot_gt': str(benchmark_tree / 'GoPro/test/target'),
                                    'dataroot_lq': str(benchmark_tree / 'GoPro/test/input')}},
            'path': {'pretrain_network_g': str(tmp_path / 'nowhere.pth'), 'results_root': str(tmp_path / 'results')}}
    opt_path = tmp_path / 'test.yml'
    opt_path.write_text(yaml.safe_dump(opts))
    assert main(['-opt', str(opt_path)]) == 2
    assert 'nowhere.pth' in capsys.readouterr().err


def test_a_checkpoint_of_another_network_fails_strict_loading(tmp_path, benchmark_tree, capsys):
    weights = tmp_path / 'other.pth'
    save_network(DRCNet(wf=8, depth=3), weights, {'type': 'DRCNet', 'wf': 8, 'depth': 3})
    opts = {'name': 'eval', 'device': 'cpu', 'network_g': NET,
            'datasets': {'test_1': {'type': 'PairedRestorationDataset',
                                    'dataroot_gt': str(benchmark_tree / 'GoPro/test/target'),
                                    'dataroot_lq': str(benchmark_tree / 'GoPro/test/input')}},
            'path': {'pretrain_network_g': str(weights), 'results_root': str(tmp_path / 'results')}}
    opt_path = tmp_path / 'test.yml'
    opt_path.write_text(yaml.safe_dump(opts))
    assert main(['-opt', str(opt_path)]) == 2
    err = capsys.readouterr().err
    assert 'strict' in err and 'down_path_1.2' in err


def test_the_engine_imports_nothing_from_the_data_package():
    # data/ builds on engine/ (the loader picks pin_memory from engine.device), so engine/ importing data/
    # would make the two packages depend on each other
    import ast
    from pathlib import Path

    import drcnet.engine
    offenders = []
    for path in sorted(Path(drcnet.engine.__file__).parent.glob('*.py')):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ''] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f'{path.name}: {n}' for n in names if n == 'drcnet.data' or n.startswith('drcnet.data.')]
    assert offenders == []
