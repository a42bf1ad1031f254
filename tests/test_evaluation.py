"""python test.py on small sets in the benchmarks' layouts: the table matches basicsr on the saved images,
and the Y-channel numbers match MATLAB's deraining protocol (fixture numbers from GNU Octave)."""
import json
from pathlib import Path

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
from drcnet.engine.evaluator import evaluate, score
from drcnet.metrics.y_channel import matlab_y
from drcnet.test import main

FIXTURES = Path(__file__).parent / 'fixtures'

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
            restored = np.round(read_image(out / name / gt_path.name) * 255).astype(np.uint8)
            gt = np.round(read_image(gt_path) * 255).astype(np.uint8)
            if y:  # deraining: the 8-bit Y of MATLAB's rgb2ycbcr
                restored, gt = matlab_y(restored)[..., None], matlab_y(gt)[..., None]
            psnrs.append(calculate_psnr(restored, gt, 0))
            ssims.append(calculate_ssim(restored, gt, 0))
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


def _fixture_pairs(folder):
    """(name, restored uint8 RGB, clean uint8 RGB) of a fixture folder with restored/ and target/."""
    for path in sorted((folder / 'target').glob('*.png')):
        yield (path.stem, np.round(read_image(folder / 'restored' / path.name) * 255).astype(np.uint8),
               np.round(read_image(path) * 255).astype(np.uint8))


def test_y_channel_table_equals_the_matlab_protocol_computed_by_octave():
    # octave_numbers.json: MPRNet's evaluate_PSNR_SSIM.m protocol (uint8 rgb2ycbcr, PSNR, SSIM_index) run by
    # GNU Octave on the committed pairs; tests/fixtures/matlab_protocol/octave_numbers.m regenerates it.
    folder = FIXTURES / 'matlab_protocol'
    octave = json.loads((folder / 'octave_numbers.json').read_text())
    pairs = list(_fixture_pairs(folder))
    assert [name for name, _, _ in pairs] == sorted(octave['images']) and len(pairs) == 6
    # PSNR: both sides sum squared differences of 8-bit integers, exactly, in float64, so they agree to
    # rounding; 1e-4 dB is the table's promise. SSIM: float64 local moments of 8-bit values carry absolute
    # rounding errors below 121 taps * eps * 255^2 = 2e-9, which the constants C1 = 6.5 and C2 = 58.5 in
    # the map's denominators keep far below 1e-8 in every entry and hence in its mean.
    psnr_tol, ssim_tol = 1e-4, 1e-8
    metrics = {'psnr': {'type': 'calculate_psnr'}, 'ssim': {'type': 'calculate_ssim'}}
    float_y = []
    for name, restored, clean in pairs:
        ours = score(restored, clean, metrics, test_y_channel=True)
        assert ours['psnr'] == pytest.approx(octave['images'][name]['psnr'], abs=psnr_tol), name
        assert ours['ssim'] == pytest.approx(octave['images'][name]['ssim'], abs=ssim_tol), name
        float_y.append(calculate_psnr(restored[..., ::-1], clean[..., ::-1], 0, test_y_channel=True))

    loader = [{'lq': torch.from_numpy(r).permute(2, 0, 1)[None].float() / 255,
               'gt': torch.from_numpy(c).permute(2, 0, 1)[None].float() / 255, 'lq_path': [n]}
              for n, r, c in pairs]
    row = evaluate(lambda lq: lq, loader, 'octave_pairs', test_y_channel=True, pbar=False)
    assert row['protocol'] == 'Y' and row['images'] == len(pairs)
    assert row['psnr'] == pytest.approx(octave['mean']['psnr'], abs=psnr_tol)
    assert row['ssim'] == pytest.approx(octave['mean']['ssim'], abs=ssim_tol)
    # the fixture tells the protocols apart: basicsr's float Y is hundredths of a dB away on these pairs
    assert abs(np.mean(float_y) - octave['mean']['psnr']) > 100 * psnr_tol


def test_matlab_y_is_the_bt601_formula_rounded_to_8_bits():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.int64)
    twice_numerator = 2 * (65481 * rgb[..., 0] + 128553 * rgb[..., 1] + 24966 * rgb[..., 2])
    assert not np.any(twice_numerator % 510000 == 255000)  # no exact halves here (see matlab_y's docstring)
    rounded = 16 + (twice_numerator + 255000) // 510000  # floor(exact + 1/2), in integers
    y = matlab_y(rgb.astype(np.uint8))
    assert y.dtype == np.uint8 and np.array_equal(y, rounded)
    float_y = 16 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255
    assert np.abs(y - float_y).max() > 0.49  # what basicsr's float Y keeps
    with pytest.raises(ValueError, match='uint8'):
        matlab_y(rgb.astype(np.float32))


def test_a_dgunet_release_style_checkpoint_evaluates_with_x8_self_ensemble(tmp_path):
    from drcnet.archs.dgunet_arch import DGUNetPlus
    from drcnet.inference.tiling import restore

    torch.manual_seed(0)
    tiny = {'type': 'DGUNetPlus', 'n_feat': 8, 'scale_unetfeats': 4}
    net = DGUNetPlus(n_feat=8, scale_unetfeats=4).eval()
    weights = tmp_path / 'model_best.pth'  # the authors' format, saved from DataParallel
    torch.save({'epoch': 80, 'state_dict': {f'module.{k}': v for k, v in net.state_dict().items()},
                'optimizer': {'state': {}, 'param_groups': []}}, weights)
    sidd = tmp_path / 'datasets' / 'SIDD' / 'val'  # one small image in the SIDD validation layout
    make_set(sidd, ['chelsea'], lambda x, r: gaussian_noise(x, 25, r), size=(21, 30), gt='gt')
    gt_dir, lq_dir = sidd / 'gt', sidd / 'input'
    opts = {'name': 'dgunet_eval', 'device': 'cpu', 'network_g': tiny,
            'datasets': {'test_1': {'name': 'SIDD_val', 'type': 'PairedRestorationDataset',
                                    'dataroot_gt': str(gt_dir), 'dataroot_lq': str(lq_dir)}},
            'path': {'pretrain_network_g': str(weights), 'param_key_g': 'auto',
                     'results_root': str(tmp_path / 'results')},
            'val': {'save_img': True, 'pbar': False, 'tta': True}}
    opt_path = tmp_path / 'test.yml'
    opt_path.write_text(yaml.safe_dump(opts))
    assert main(['-opt', str(opt_path)]) == 0
    out = tmp_path / 'results' / 'dgunet_eval'
    report = json.loads((out / 'metrics.json').read_text())
    assert report['meta']['tta'] is True and report['meta']['param_key'] == 'state_dict'
    row = report['rows'][0]
    assert row['dataset'] == 'SIDD_val' and row['images'] == 1
    name = sorted(gt_dir.iterdir())[0].name
    lq = torch.from_numpy(read_image(lq_dir / name).transpose(2, 0, 1).copy())[None]
    expected = restore(net, lq, tta=True)[0].clamp(0, 1).permute(1, 2, 0).numpy()
    # the final (last) output with x8 self-ensemble; 8-bit rounding, plus float32 noise of the channels-last path
    assert np.abs(read_image(out / 'SIDD_val' / name) - expected).max() <= 1 / 255 + 1e-4
