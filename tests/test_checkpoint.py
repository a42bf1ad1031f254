import logging
import os
from pathlib import Path

import pytest
import torch

from drcnet.archs.drcnet_arch import DRCNet
from drcnet.engine.checkpoint import (CheckpointError, atomic_save, extract_state_dict, load_file, load_network,
                                      network_options_from, save_network)

TINY = {'type': 'DRCNet', 'wf': 8, 'depth': 2}
KEYS_FILE = Path(__file__).parent / 'release_state_dict_keys.txt'


def tiny(seed: int = 0) -> DRCNet:
    torch.manual_seed(seed)
    return DRCNet(wf=8, depth=2)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class Exploding:
    """Pickles to a call that would create a file: a weights_only load must refuse it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, 'w'))


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError('cannot pickle this')


def test_atomic_save_roundtrip_creates_parents_and_leaves_no_temp(tmp_path):
    path = tmp_path / 'a' / 'b' / 'net.pth'
    atomic_save({'x': torch.arange(5)}, path)
    atomic_save({'x': torch.arange(3)}, path)  # overwrite
    assert torch.equal(load_file(path)['x'], torch.arange(3))
    assert sorted(os.listdir(path.parent)) == ['net.pth']


def test_atomic_save_failure_keeps_the_old_file(tmp_path):
    path = tmp_path / 'net.pth'
    atomic_save({'x': torch.ones(4)}, path)
    with pytest.raises(RuntimeError, match='cannot pickle'):
        atomic_save({'x': torch.zeros(4), 'bad': Unpicklable()}, path)
    assert torch.equal(load_file(path)['x'], torch.ones(4))
    assert os.listdir(tmp_path) == ['net.pth']


def test_load_file_errors_name_the_file(tmp_path):
    missing = tmp_path / 'nope.pth'
    with pytest.raises(CheckpointError, match='nope.pth'):
        load_file(missing)
    good = tmp_path / 'good.pth'
    save_network(tiny(), good, TINY)
    data = good.read_bytes()
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='truncated.pth'):
        load_file(truncated)
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint at all')
    with pytest.raises(CheckpointError, match='garbage.pth'):
        load_file(garbage)


def test_load_file_never_runs_code(tmp_path):
    marker = tmp_path / 'code_ran'
    path = tmp_path / 'evil.pth'
    torch.save({'params': {'w': torch.ones(1)}, 'payload': Exploding(marker)}, path)
    with pytest.raises(CheckpointError, match='evil.pth'):
        load_file(path)
    assert not marker.exists()


def test_save_network_roundtrip_with_ema_and_options(tmp_path, caplog):
    net, ema = tiny(0), tiny(1)
    path = save_network(net, tmp_path / 'net_g.pth', TINY, ema_net=ema, extra={'iter': 7})
    ckpt = load_file(path)
    assert set(ckpt) == {'params', 'params_ema', 'network_g', 'iter'}
    assert network_options_from(ckpt) == TINY
    fresh = tiny(2)
    with caplog.at_level(logging.INFO, logger='basicsr'):
        report = load_network(fresh, path, param_key='params')
    assert same_weights(fresh, net) and report['param_key'] == 'params'
    n = len(net.state_dict())
    assert report['loaded'] == n
    assert f"loaded {n} tensors from 'params' of {path}" in caplog.text
    report = load_network(fresh, path, param_key='auto')  # prefers the EMA weights
    assert same_weights(fresh, ema) and report['param_key'] == 'params_ema'


def test_release_formats_and_ddp_prefix(tmp_path):
    net = tiny(0)
    state = net.state_dict()
    wrapped = {'params': {f'module.{k}': v for k, v in state.items()}}
    for name, ckpt in [('dict.pth', {'params': state}), ('bare.pth', state), ('ddp.pth', wrapped)]:
        torch.save(ckpt, tmp_path / name)
        for key in ('auto', 'params'):
            fresh = tiny(3)
            load_network(fresh, tmp_path / name, param_key=key)
            assert same_weights(fresh, net), (name, key)
    assert network_options_from(load_file(tmp_path / 'bare.pth')) is None


def test_missing_key_error_names_key_file_and_keys_present(tmp_path):
    path = tmp_path / 'only_params.pth'
    save_network(tiny(), path, TINY)
    with pytest.raises(CheckpointError) as err:
        extract_state_dict(load_file(path), 'params_ema', path=path)
    message = str(err.value)
    assert "'params_ema'" in message and 'only_params.pth' in message and "'params'" in message
    assert "'network_g'" in message
    with pytest.raises(ValueError, match='param_key'):
        extract_state_dict(load_file(path), 'weights')


def test_strict_mismatch_names_keys_and_non_strict_loads_what_fits(tmp_path, caplog):
    path = tmp_path / 'wf8.pth'
    source = tiny(0)
    save_network(source, path, TINY)
    wider = DRCNet(wf=16, depth=2)
    with pytest.raises(CheckpointError) as err:
        load_network(wider, path)
    assert 'wf8.pth' in str(err.value) and 'conv_01.weight file (8, 3, 3, 3) vs network (16, 3, 3, 3)' in str(err.value)
    deeper = DRCNet(wf=8, depth=3)
    with pytest.raises(CheckpointError, match=r'52 missing from the file: down_path_1\.1\.downsample\.weight'):
        load_network(deeper, path)
    extra = dict(source.state_dict(), **{'stray.weight': torch.ones(2)})
    torch.save({'params': extra}, tmp_path / 'extra.pth')
    with pytest.raises(CheckpointError, match=r'1 unexpected in the file: stray\.weight'):
        load_network(tiny(1), tmp_path / 'extra.pth')
    before = deeper.state_dict()['down_path_1.2.conv_1.weight'].clone()
    with caplog.at_level(logging.INFO, logger='basicsr'):
        report = load_network(deeper, path, strict=False)
    assert report['missing'] and report['loaded'] > 0
    assert torch.equal(deeper.conv_01.weight, source.conv_01.weight)
    assert torch.equal(deeper.state_dict()['down_path_1.2.conv_1.weight'], before)
    assert 'non-strict loading' in caplog.text


def test_release_state_dict_loads_strict_into_the_paper_network(tmp_path):
    shapes = {}
    for line in KEYS_FILE.read_text().splitlines():
        name, shape = line.split(' ', 1)
        shapes[name] = tuple(int(v) for v in shape.strip('()').split(',') if v.strip())
    release = {name: torch.full(shape, 0.5) for name, shape in shapes.items()}
    path = tmp_path / 'release.pth'
    torch.save({'params': release}, path)
    net = DRCNet()
    report = load_network(net, path, param_key='auto')
    assert report['loaded'] == len(shapes) and report['param_key'] == 'params'
    assert all(torch.all(v == 0.5) for v in net.state_dict().values())


class TrainerSettings:
    """A class of the code that saved a checkpoint: drcnet cannot rebuild it without running that code."""

    def __init__(self):
        self.lr = 1e-3


def _pickled_checkpoint(path, net):
    """A checkpoint as many training scripts save one: weights beside whole Python objects."""
    import argparse

    import numpy as np
    torch.save({'params': net.state_dict(), 'args': argparse.Namespace(lr=2e-4, name='run1'), 'net': net,
                'mean': np.array([0.5, 0.25]), 'settings': TrainerSettings()}, path)
    return path


def test_a_pickled_checkpoint_is_refused_naming_the_object_and_the_conversion(tmp_path):
    path = _pickled_checkpoint(tmp_path / 'pickled.pth', tiny())
    with pytest.raises(CheckpointError) as err:
        load_file(path)
    message = str(err.value)
    assert f'checkpoint {path} holds Python objects other than tensors (argparse.Namespace)' in message
    assert f'python -m drcnet.convert_checkpoint {path} {tmp_path / "pickled_weights.pth"}' in message
    assert 'weights_only' not in message and '\n' not in message
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint at all')
    with pytest.raises(CheckpointError, match=r'garbage\.pth: it is truncated or corrupt') as err:
        load_file(garbage)
    assert 'weights_only' not in str(err.value) and 'convert' not in str(err.value)


def test_convert_keeps_weights_and_plain_values_and_names_what_it_drops(tmp_path, capsys):
    from drcnet.convert_checkpoint import main
    net = tiny(4)
    src = _pickled_checkpoint(tmp_path / 'pickled.pth', net)
    before = src.read_bytes()
    dst = tmp_path / 'pickled_weights.pth'
    assert main([str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    assert f'not kept (no tensors or plain values inside): settings ({__name__}.TrainerSettings)' in out
    ckpt = load_file(dst)
    assert set(ckpt) == {'params', 'args', 'net', 'mean'} and ckpt['args'] == {'lr': 2e-4, 'name': 'run1'}
    assert torch.equal(ckpt['mean'], torch.tensor([0.5, 0.25], dtype=torch.float64))
    for key in ('params', 'net'):  # the saved module became its state dict
        fresh = tiny(5)
        load_network(fresh, dst, param_key='params', ckpt={'params': ckpt[key]})
        assert same_weights(fresh, net), key
    assert src.read_bytes() == before
    assert main([str(src), str(dst)]) == 2  # an existing output is never overwritten
    assert 'exists' in capsys.readouterr().err and load_file(dst).keys() == ckpt.keys()


def test_the_advertised_convert_command_runs(tmp_path):
    import subprocess
    import sys
    src = tmp_path / 'whole_model.pth'
    net = tiny(6)
    torch.save(net, src)
    dst = tmp_path / 'converted.pth'
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, '-m', 'drcnet.convert_checkpoint', str(src), str(dst)],
                          capture_output=True, text=True, cwd=root, env={**os.environ, 'PYTHONPATH': str(root)})
    assert done.returncode == 0 and done.stderr == '', done.stderr
    fresh = tiny(7)
    load_network(fresh, dst)  # a bare state dict, strictly loaded
    assert same_weights(fresh, net)


def test_state_dict_fit_is_the_one_comparison_behind_every_strict_load():
    from drcnet.engine.checkpoint import fit_problems, state_dict_fit
    own = {'0.weight': torch.zeros(2, 3), '0.bias': torch.zeros(2)}
    state = {'features.0.weight': torch.ones(2, 3), 'features.0.bias': torch.ones(3), 'features.9.weight': 1,
             'classifier.weight': torch.ones(1)}
    fit = state_dict_fit(own, state, prefix='features.')
    assert list(fit['usable']) == ['0.weight'] and fit['missing'] == []
    assert fit['mismatched'] == [('features.0.bias', (3,), (2,))]
    assert fit['unexpected'] == ['features.9.weight']  # keys outside the prefix are not this module's
    assert fit_problems(fit) == ['1 unexpected in the file: features.9.weight',
                                 '1 with another shape: features.0.bias file (3,) vs network (2,)']
    assert fit_problems(fit, unexpected=False) == fit_problems(fit)[1:]
