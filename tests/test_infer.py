import cv2
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
from tolerance import network_terms, rounding_gap
from tests.test_drcnet_arch import force_mixed_masks

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
    # half an 8-bit step of rounding; the other half covers the float32 gap between the command's channels-last
    # network and this one (rounding_gap(network_terms(net, 40 * 56)) = 6e-4) and the 8-bit values' own rounding
    assert np.abs(restored - expected).max() <= 1 / 255 + 1e-6


def test_single_file_tiles_tta_suffix_and_exit_zero(setup, tmp_path, capsys):
    net, weights, src = setup
    out = tmp_path / 'single'
    code = main(['-i', str(src / 'cat.png'), '-o', str(out), '--weights', str(weights), '--tile', '40',
                 '--tile-overlap', '8', '--tta', '--suffix', '_x8'])
    assert code == 0, capsys.readouterr().err
    x = torch.from_numpy(read_image(src / 'cat.png').transpose(2, 0, 1).copy())[None]
    expected = restore(net, x, tile=40, overlap=8, tta=True)[0].clamp(0, 1).permute(1, 2, 0).numpy()
    assert np.abs(read_image(out / 'cat_x8.png') - expected).max() <= 1 / 255 + 1e-6  # as above, with 8 + 4 terms


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
    counts = {task: sum(p.numel() for p in build(ARCH_REGISTRY, task_options(task), where='network_g').parameters()
                        if p.requires_grad) for task in TASKS}
    assert counts['paper'] == counts['derain'] == counts['denoise'] == sum(p.numel() for p in DRCNet().parameters())
    assert counts['deblur'] < counts['paper']  # levels 0 and 1 keep their spatial filters' parameters frozen
    opts = task_options('deblur', release_numerics=True)
    assert opts['sf_levels'] == [2, 3] and opts['sf_threshold'] == 0.8
    assert task_options('deblur')['sf_levels'] == [2, 3]  # a fresh copy each time


def test_release_yaml_hin_positions_map_to_sf_levels(setup, tmp_path, capsys):
    _, _, src = setup
    torch.manual_seed(1)
    release_net = DRCNet(wf=8, depth=2, sf_levels=[1])  # spatial filter at the deeper level only
    force_mixed_masks(release_net)
    bare = tmp_path / 'release_level1.pth'
    torch.save({'params': release_net.state_dict()}, bare)
    opt = tmp_path / 'release.yml'
    outputs = []
    # the release holds the filter's tensors on every level: both readings load strictly, and restore differently
    for left in (1, 0):
        opt.write_text(f'network_g:\n  type: DRCNet\n  wf: 8\n  depth: 2\n  hin_position_left: {left}\n'
                       '  hin_position_right: 1\n')
        out = tmp_path / f'o{left}'
        args = ['-i', str(src / 'cat.png'), '-o', str(out), '--weights', str(bare), '--opt', str(opt)]
        assert main(args) == 0, capsys.readouterr().err
        assert f"'sf_levels': {[1] if left else [0, 1]}" in capsys.readouterr().out
        outputs.append(read_image(out / 'cat.png'))
    expected = release_net.eval()(torch.from_numpy(read_image(src / 'cat.png').transpose(2, 0, 1).copy())[None])[-1]
    assert np.abs(outputs[0] - expected[0].detach().clamp(0, 1).permute(1, 2, 0).numpy()).max() <= 1 / 255
    assert np.abs(outputs[0] - outputs[1]).max() > 2 / 255


def test_outputs_never_clobber_inputs_or_each_other(setup, tmp_path, capsys):
    _, weights, src = setup
    write_image(src / 'cat.jpg', photo('chelsea', 40, 56))  # cat.png and cat.jpg would both become cat.png
    assert main(['-i', str(src), '-o', str(tmp_path / 'o'), '--weights', str(weights)]) == 2
    assert 'cat.png' in capsys.readouterr().err and not (tmp_path / 'o').exists()
    assert main(['-i', str(src), '-o', str(src), '--weights', str(weights), '--ext', 'same']) == 2
    assert 'overwritten' in capsys.readouterr().err


def _stored_forms(rgb: np.ndarray) -> dict:
    """Real files' pixels in several forms (channel order RGB), all from one photograph crop."""
    h, w, _ = rgb.shape
    grey = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    # a smooth ramp below 1/255 makes the 16-bit files hold values that 8 bits cannot
    fine = np.linspace(0, 1, h * w, dtype=np.float32).reshape(h, w) * (200 / 65535)
    alpha = np.round(np.linspace(0, 255, w, dtype=np.float32))[None, :].repeat(h, 0).astype(np.uint8)
    return {
        'grey': np.round(grey * 255).astype(np.uint8),
        'rgb16': np.round(np.clip(rgb + fine[:, :, None], 0, 1) * 65535).astype(np.uint16),
        'rgba': np.dstack([np.round(rgb * 255).astype(np.uint8), alpha]),
        'grey16': np.round(np.clip(grey + fine, 0, 1) * 65535).astype(np.uint16),
        'grey_alpha': np.dstack([np.round(grey * 255).astype(np.uint8), alpha]),
    }


@pytest.mark.parametrize('form', ['grey', 'rgb16', 'rgba', 'grey16', 'grey_alpha'])
def test_output_keeps_the_inputs_channels_depth_and_alpha(setup, tmp_path, capsys, form):
    from PIL import Image
    net, weights, _ = setup
    pixels = _stored_forms(photo('chelsea', 40, 56))[form]
    src = tmp_path / f'{form}.png'
    if form == 'grey_alpha':
        Image.fromarray(pixels, 'LA').save(src)  # OpenCV cannot write grey with alpha
    else:
        cv2.imwrite(str(src), pixels if pixels.ndim == 2 else pixels[:, :, [2, 1, 0, 3][:pixels.shape[2]]])
    dst = tmp_path / 'out' / f'{form}.png'
    assert main(['-i', str(src), '-o', str(dst), '--weights', str(weights), '--device', 'cpu']) == 0, \
        capsys.readouterr().err
    with Image.open(src) as a, Image.open(dst) as b:
        assert (b.mode, b.size) == (a.mode, a.size)
    out = cv2.imread(str(dst), cv2.IMREAD_UNCHANGED)
    has_alpha = form in ('rgba', 'grey_alpha')
    if form == 'grey_alpha':  # OpenCV reads grey with alpha as BGRA: check the channels are equal
        assert np.array_equal(out[:, :, 0], out[:, :, 1]) and np.array_equal(out[:, :, 0], out[:, :, 2])
        out = out[:, :, [0, 3]]
    elif out.ndim == 3:
        out = out[:, :, [2, 1, 0, 3][:out.shape[2]]]
    assert out.dtype == pixels.dtype and out.shape == pixels.shape
    if has_alpha:
        np.testing.assert_array_equal(out[:, :, -1], pixels[:, :, -1])
    colour = out[:, :, :-1] if has_alpha else out
    # the oracle: the RGB version of the input, restored at float precision
    peak = float(np.iinfo(pixels.dtype).max)
    given = (pixels[:, :, :-1] if has_alpha else pixels).astype(np.float32) / peak
    given = given[:, :, None] if given.ndim == 2 else given
    rgb_version = np.repeat(given, 3 // given.shape[2], axis=2)  # grey: three equal channels
    x = torch.from_numpy(np.ascontiguousarray(rgb_version.transpose(2, 0, 1)))[None]
    expected = restore(net, x)[0].clamp(0, 1).permute(1, 2, 0).numpy()
    if form.startswith('grey'):
        expected = expected.mean(axis=2, keepdims=form == 'grey_alpha')
    # half a step of the output's integer scale, plus the float32 gap between the command's channels-last
    # network (and grey's mean of 3) and this one
    gap = rounding_gap(network_terms(net, 40 * 56) + 3, torch.from_numpy(expected), torch.from_numpy(expected))
    assert np.abs(colour / peak - expected.reshape(colour.shape)).max() <= 0.5 / peak + gap
    if peak == 65535:
        assert (colour % 257 != 0).mean() > 0.9  # 16-bit values, not 8-bit ones scaled up


def test_bits_and_ext_override_the_inputs_form_and_say_what_is_dropped(setup, tmp_path, capsys):
    net, weights, _ = setup
    forms = _stored_forms(photo('chelsea', 40, 56))
    src16, src_rgba = tmp_path / 'deep.png', tmp_path / 'alpha.png'
    cv2.imwrite(str(src16), forms['rgb16'][:, :, ::-1])
    cv2.imwrite(str(src_rgba), forms['rgba'][:, :, [2, 1, 0, 3]])
    out = tmp_path / 'o'
    assert main(['-i', str(src16), '-o', str(out / 'deep8.png'), '--weights', str(weights), '--bits', '8']) == 0
    assert cv2.imread(str(out / 'deep8.png'), cv2.IMREAD_UNCHANGED).dtype == np.uint8
    capsys.readouterr()
    assert main(['-i', str(src_rgba), '-o', str(out / 'flat.jpg'), '--weights', str(weights)]) == 0
    assert 'has no alpha channel (JPEG has none); use --ext png' in capsys.readouterr().err
    assert cv2.imread(str(out / 'flat.jpg'), cv2.IMREAD_UNCHANGED).shape == (40, 56, 3)


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


@pytest.mark.parametrize('tiny', [{'type': 'DGUNet', 'n_feat': 8, 'scale_unetfeats': 4, 'scale_orsnetfeats': 4},
                                  {'type': 'DGUNetPlus', 'n_feat': 8, 'scale_unetfeats': 4}], ids=['DGUNet', 'DGUNetPlus'])
def test_a_dgunet_checkpoint_restores_an_odd_sized_image(tmp_path, capsys, tiny):
    torch.manual_seed(0)
    net = build(ARCH_REGISTRY, tiny, where='network_g').eval()
    weights = save_network(net, tmp_path / 'dgunet.pth', tiny)
    write_image(tmp_path / 'odd.png', photo('coffee', 37, 45))
    code = main(['-i', str(tmp_path / 'odd.png'), '-o', str(tmp_path / 'out'), '--weights', str(weights),
                 '--device', 'cpu'])
    assert code == 0, capsys.readouterr().err
    restored = read_image(tmp_path / 'out' / 'odd.png')
    assert restored.shape == (37, 45, 3)
    x = torch.from_numpy(read_image(tmp_path / 'odd.png').transpose(2, 0, 1).copy())[None]
    expected = restore(net, x)[0].clamp(0, 1).permute(1, 2, 0).numpy()
    # 8-bit rounding, plus float32 noise of the channels-last path drcnet-infer takes on the CPU
    assert np.abs(restored - expected).max() <= 1 / 255 + 1e-4
