import numpy as np
import pytest
import torch
import yaml

from drcnet.archs.drcnet_arch import DRCNet
from drcnet.data.image_io import read_image, write_image
from drcnet.engine.checkpoint import save_network
from drcnet.infer import main
from drcnet.inference.presets import TASKS, task_options
from drcnet.inference.tiling import restore
from drcnet.registry import ARCH_REGISTRY, build
from tests.conftest import photo_tensor

TINY = {'type': 'DRCNet', 'wf': 8, 'depth': 2}


def photo(name, h, w):
    return photo_tensor(name)[0, :, :h, :w].permute(1, 2, 0).numpy()


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    net = DRCNet(wf=8, depth=2).eval()
    weights = save_network(net, tmp_path / 'w' / 'net_g.pth', TINY)
    src = tmp_path / 'in'
    write_image(src / 'cat.png', photo('chelsea', 40, 56))
    write_image(src / 'sub' / 'cup.jpg', photo('coffee', 36, 44))
    (src / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\x00' * 40)
    return net, weights, src


def test_folder_with_a_corrupt_file(setup, tmp_path, capsys):
    net, weights, src = setup
    out = tmp_path / 'out'
    code = main(['-i', str(src), '-o', str(out), '--weights', str(weights), '--compare', '--device', 'cpu'])
    captured = capsys.readouterr()
    assert code == 1
    assert 'broken.png' in captured.err and 'restored 2 of 3' in captured.out
    restored = read_image(out / 'cat.png')
    assert restored.shape == (40, 56, 3) and read_image(out / 'sub' / 'cup.png').shape == (36, 44, 3)
    assert not (out / 'broken.png').exists()
    assert read_image(out / 'cat_compare.png').shape == (40, 2 * 56 + 8, 3)
    x = torch.from_numpy(read_image(src / 'cat.png').transpose(2, 0, 1).copy())[None]
    expected = restore(net, x)[0].clamp(0, 1).permute(1, 2, 0).numpy()
    assert np.abs(restored - expected).max() <= 1 / 255 + 1e-6  # 8-bit rounding only


def test_single_file_tiles_tta_suffix_and_exit_zero(setup, tmp_path, capsys):
    net, weights, src = setup
    out = tmp_path / 'single'
    code = main(['-i', str(src / 'cat.png'), '-o', str(out), '--weights', str(weights), '--tile', '40',
                 '--tile-overlap', '8', '--tta', '--suffix', '_x8'])
    assert code == 0, capsys.readouterr().err
    x = torch.from_numpy(read_image(src / 'cat.png').transpose(2, 0, 1).copy())[None]
    expected = restore(net, x, tile=40, overlap=8, tta=True)[0].clamp(0, 1).permute(1, 2, 0).numpy()
    assert np.abs(read_image(out / 'cat_x8.png') - expected).max() <= 1 / 255 + 1e-6


def test_release_checkpoint_needs_options_and_gets_them_from_opt(setup, tmp_path, capsys):
    net, _, src = setup
    bare = tmp_path / 'release.pth'
    torch.save(net.state_dict(), bare)  # the release's format: no network_g
    out = tmp_path / 'o'
    code = main(['-i', str(src / 'cat.png'), '-o', str(out), '--weights', str(bare)])
    err = capsys.readouterr().err
    assert code == 2 and 'release.pth' in err and 'missing' in err and '--opt or --task' in err
    opt = tmp_path / 'net.yml'
    opt.write_text(yaml.safe_dump({'name': 'x', 'network_g': TINY}))
    code = main(['-i', str(src / 'cat.png'), '-o', str(out), '--weights', str(bare), '--opt', str(opt)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert 'net.yml' in captured.out and (out / 'cat.png').is_file()


@pytest.mark.parametrize('extra,message', [
    (['--weights', 'nowhere.pth'], 'nowhere.pth'),
    (['--tile', '16', '--tile-overlap', '16'], '--tile (16) must be larger than --tile-overlap (16)'),
    (['--param-key', 'params_ema'], "'params_ema'"),
    (['--opt', 'missing.yml'], 'missing.yml'),
    (['--ext', 'gif'], "'gif'"),
])
def test_usage_errors_exit_2_naming_the_problem(setup, tmp_path, capsys, extra, message):
    _, weights, src = setup
    args = ['-i', str(src), '-o', str(tmp_path / 'o'), '--weights', str(weights)] + extra
    if extra[0] == '--opt':  # only consulted for checkpoints without network_g
        bare = tmp_path / 'bare.pth'
        torch.save(torch.load(weights, weights_only=True)['params'], bare)
        args[args.index(str(weights))] = str(bare)
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_missing_input_and_bad_flag(tmp_path, capsys):
    assert main(['-i', str(tmp_path / 'none'), '-o', str(tmp_path), '--weights', 'w.pth']) == 2
    assert 'none' in capsys.readouterr().err
    assert main(['-i', 'a', '-o', 'b', '--weights', 'w', '--task', 'dehaze']) == 2


def test_presets_build_and_deblur_uses_two_levels():
    assert set(TASKS) == {'paper', 'derain', 'denoise', 'deblur'}
    counts = {task: sum(p.numel() for p in build(ARCH_REGISTRY, task_options(task), where='network_g').parameters())
              for task in TASKS}
    assert counts['paper'] == counts['derain'] == counts['denoise'] == sum(p.numel() for p in DRCNet().parameters())
    assert counts['deblur'] < counts['paper']  # levels 0 and 1 lose their spatial-filter parameters
    opts = task_options('deblur', release_numerics=True)
    assert opts['sf_levels'] == [2, 3] and opts['sf_threshold'] == 0.8
    assert task_options('deblur')['sf_levels'] == [2, 3]  # a fresh copy each time


def test_release_yaml_hin_positions_map_to_sf_levels(setup, tmp_path, capsys):
    _, _, src = setup
    torch.manual_seed(1)
    release_net = DRCNet(wf=8, depth=2, sf_levels=[1])  # spatial filter at the deeper level only
    bare = tmp_path / 'release_level1.pth'
    torch.save({'params': release_net.state_dict()}, bare)
    opt = tmp_path / 'release.yml'
    opt.write_text('network_g:\n  type: DRCNet\n  wf: 8\n  depth: 2\n  hin_position_left: 1\n  hin_position_right: 1\n')
    args = ['-i', str(src / 'cat.png'), '-o', str(tmp_path / 'o'), '--weights', str(bare), '--opt', str(opt)]
    assert main(args) == 0, capsys.readouterr().err
    opt.write_text('network_g:\n  type: DRCNet\n  wf: 8\n  depth: 2\n  hin_position_left: 0\n  hin_position_right: 1\n')
    assert main(args) == 2  # a network with the filter at both levels does not fit, and says so
    assert 'missing from the file: down_path_1.0.norm' in capsys.readouterr().err


def test_outputs_never_clobber_inputs_or_each_other(setup, tmp_path, capsys):
    _, weights, src = setup
    write_image(src / 'cat.jpg', photo('chelsea', 40, 56))  # cat.png and cat.jpg would both become cat.png
    assert main(['-i', str(src), '-o', str(tmp_path / 'o'), '--weights', str(weights)]) == 2
    assert 'cat.png' in capsys.readouterr().err and not (tmp_path / 'o').exists()
    assert main(['-i', str(src), '-o', str(src), '--weights', str(weights), '--ext', 'same']) == 2
    assert 'overwritten' in capsys.readouterr().err


def test_opt_file_numerics_release_reaches_the_network(tmp_path):
    from drcnet.infer import UsageError, network_options
    from drcnet.inference.presets import RELEASE_NUMERICS

    opt = tmp_path / 'test.yml'
    opt.write_text('network_g:\n  type: DRCNet\n  wf: 8\n  depth: 2\n  numerics: release\n')
    opts, _ = network_options({}, str(opt), None)
    assert opts == {**TINY, **RELEASE_NUMERICS}
    opt.write_text('network_g:\n  type: DRCNet\n  numerics: release\n  sf_threshold: 0.7\n')
    with pytest.raises(UsageError, match='test.yml: network_g.sf_threshold: 0.7 conflicts'):
        network_options({}, str(opt), None)
