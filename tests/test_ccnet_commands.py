"""A tiny CCNet through the three commands: train.py (L1 + FFT on every scale), test.py on a benchmark layout and
drcnet-infer on odd and small images, with our checkpoints and the authors' ``{'model': ...}`` files."""
import json

import numpy as np
import pytest
import torch
import yaml
from torch.nn import functional as F

from drcnet.archs.ccnet_arch import CCNet
from drcnet.data.degradations import gaussian_noise, rain
from drcnet.data.image_io import read_image, write_image
from drcnet.engine.checkpoint import load_file, save_network
from drcnet.engine.context import RunContext
from drcnet.engine.schema import OptionError, validate
from drcnet.infer import main as infer_main
from drcnet.inference.tiling import restore
from drcnet.losses.fft_loss import FFTLoss
from drcnet.test import main as evaluate_main
from drcnet.train import build_model, main as train_main
from tests.conftest import photo_tensor
from tests.test_evaluation import make_set
from tests.test_train import tiny_options, write_options

TINY = {'type': 'CCNet', 'base_channel': 4, 'num_res': 1}
FFT = {'type': 'FFTLoss', 'loss_weight': 0.1, 'reduction': 'mean'}


def ccnet_options(tmp_path, name, **train_changes):
    opts = tiny_options(tmp_path, name=name, total_iter=2, fft_opt=dict(FFT), use_grad_clip=True,
                        grad_clip_norm=0.01, warmup_iter=1, **train_changes)
    opts['network_g'] = dict(TINY)
    return opts


@pytest.mark.parametrize('precision', ['none', 'bf16'])
def test_train_py_trains_ccnet_with_l1_and_fft_on_every_scale(tmp_path, precision):
    opts = ccnet_options(tmp_path, f'ccnet_{precision}', mixed_precision=precision)
    assert train_main(['-opt', str(write_options(tmp_path, opts))]) == 0
    root = tmp_path / 'experiments' / opts['name']
    ckpt = load_file(root / 'models' / 'net_g_latest.pth')
    assert ckpt['network_g'] == TINY
    fresh = CCNet(base_channel=4, num_res=1).state_dict()
    assert ckpt['params'].keys() == fresh.keys()
    log = next(root.glob('train_*.log')).read_text()
    assert 'iter 2/2' in log and 'l_pix' in log and 'l_fft' in log and 'validation' in log


def test_each_output_gets_l1_and_fft_against_the_target_resized_as_the_authors_do(tmp_path):
    # their loss: targets from F.interpolate(gt, scale_factor 0.25 / 0.5, bilinear) and
    # sum over scales of L1 + 0.1 * L1(fft2 spectra)
    torch.manual_seed(0)
    model = build_model(validate(ccnet_options(tmp_path, 'loss')), RunContext(device=torch.device('cpu')))
    preds = [torch.rand(2, 3, 8, 12), torch.rand(2, 3, 16, 24), torch.rand(2, 3, 32, 48)]
    gt = torch.rand(2, 3, 32, 48)
    targets = [F.interpolate(gt, scale_factor=0.25, mode='bilinear', align_corners=False),
               F.interpolate(gt, scale_factor=0.5, mode='bilinear', align_corners=False), gt]
    fft = FFTLoss()
    expected = sum(F.l1_loss(p, t) + 0.1 * fft(p, t) for p, t in zip(preds, targets))
    terms = model._loss_terms(preds, gt, gt)
    assert set(terms) == {'l_pix', 'l_fft'}
    ours = terms['l_pix'] + terms['l_fft']
    # float32 means over <= 2 x 9216 terms: relative rounding below 2e4 * 2**-24 ~ 1.2e-3 in the worst case
    assert ours.item() == pytest.approx(expected.item(), rel=1.2e-3)


def test_an_unknown_fft_option_is_named(tmp_path):
    opts = ccnet_options(tmp_path, 'bad')
    opts['train']['fft_opt'] = {'type': 'FFTLoss', 'loss_wieght': 0.1}
    with pytest.raises(OptionError, match='train.fft_opt.loss_wieght'):
        validate(opts)


def test_test_py_scores_ccnet_on_a_benchmark_layout_from_the_authors_checkpoint_format(tmp_path):
    torch.manual_seed(0)
    net = CCNet(base_channel=4, num_res=1).eval()
    weights = tmp_path / 'model.pkl'
    torch.save({'model': net.state_dict()}, weights)
    root = tmp_path / 'datasets'
    make_set(root / 'Rain13K' / 'test' / 'Rain100L', ['chelsea'], lambda x, r: rain(x, r, 'light'), size=(37, 53))
    make_set(root / 'GoPro' / 'test', ['coffee'], lambda x, r: gaussian_noise(x, 10, r), size=(50, 70))
    sets = {'test_1': ('Rain100L', root / 'Rain13K/test/Rain100L', True),
            'test_2': ('GoPro', root / 'GoPro/test', False)}
    opts = {'name': 'ccnet_eval', 'device': 'cpu', 'network_g': TINY,
            'datasets': {k: {'name': n, 'type': 'PairedRestorationDataset', 'dataroot_gt': str(d / 'target'),
                             'dataroot_lq': str(d / 'input'), 'test_y_channel': y} for k, (n, d, y) in sets.items()},
            'path': {'pretrain_network_g': str(weights), 'param_key_g': 'auto',
                     'results_root': str(tmp_path / 'results')},
            'val': {'save_img': True, 'pbar': False}}
    opt_path = tmp_path / 'test.yml'
    opt_path.write_text(yaml.safe_dump(opts))
    assert evaluate_main(['-opt', str(opt_path)]) == 0
    out = tmp_path / 'results' / 'ccnet_eval'
    rows = {r['dataset']: r for r in json.loads((out / 'metrics.json').read_text())['rows']}
    assert list(rows) == ['Rain100L', 'GoPro', 'average'] and rows['Rain100L']['protocol'] == 'Y'
    for name, folder, _ in sets.values():
        for gt_path in sorted((folder / 'target').iterdir()):
            lq = torch.from_numpy(read_image(folder / 'input' / gt_path.name).transpose(2, 0, 1).copy())[None]
            expected = restore(net, lq)[0].clamp(0, 1).permute(1, 2, 0).numpy()
            saved = read_image(out / name / gt_path.name)
            assert saved.shape == read_image(gt_path).shape
            assert np.abs(saved - expected).max() <= 1 / 255 + 1e-6  # 8-bit rounding only


@pytest.fixture
def ccnet_weights(tmp_path):
    torch.manual_seed(0)
    net = CCNet(base_channel=4, num_res=1).eval()
    for name, p in net.named_parameters():
        if name.endswith('gamma'):  # the strip attention reaches the output
            p.data.normal_(0, 0.5)
    return net, save_network(net, tmp_path / 'w' / 'net_g.pth', TINY)


@pytest.mark.parametrize('size', [(37, 53), (50, 70)], ids=['odd', 'small'])
def test_infer_restores_odd_and_small_images_with_ccnet(ccnet_weights, tmp_path, size, capsys):
    net, weights = ccnet_weights
    h, w = size
    src = tmp_path / f'photo_{h}x{w}.png'
    write_image(src, photo_tensor('chelsea')[0, :, :h, :w].permute(1, 2, 0).numpy())
    out = tmp_path / 'out.png'
    assert infer_main(['-i', str(src), '-o', str(out), '--weights', str(weights), '--device', 'cpu']) == 0, \
        capsys.readouterr().err
    restored = read_image(out)
    assert restored.shape == (h, w, 3)
    x = torch.from_numpy(read_image(src).transpose(2, 0, 1).copy())[None]
    expected = restore(net, x)[0].clamp(0, 1).permute(1, 2, 0).numpy()
    assert np.abs(restored - expected).max() <= 1 / 255 + 1e-6  # 8-bit rounding only


def test_infer_loads_the_authors_checkpoint_with_the_network_from_an_options_file(ccnet_weights, tmp_path, capsys):
    net, _ = ccnet_weights
    weights = tmp_path / 'Best.pkl'
    torch.save({'model': net.state_dict()}, weights)
    opt = tmp_path / 'ccnet.yml'
    opt.write_text(yaml.safe_dump({'network_g': TINY}))
    src = tmp_path / 'cat.png'
    write_image(src, photo_tensor('chelsea')[0, :, :41, :29].permute(1, 2, 0).numpy())
    code = infer_main(['-i', str(src), '-o', str(tmp_path / 'out.png'), '--weights', str(weights), '--opt', str(opt),
                       '--device', 'cpu'])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "'model'" in printed.out and read_image(tmp_path / 'out.png').shape == (41, 29, 3)
