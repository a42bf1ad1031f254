"""scripts/dnd_submission.py end to end on a fabricated DND folder."""
import importlib.util
from pathlib import Path

import torch
from scipy.io import loadmat

from drcnet.archs.drcnet_arch import DRCNet
from drcnet.engine.checkpoint import save_network
from tests.test_dnd import fabricated

SCRIPT = Path(__file__).resolve().parents[1] / 'scripts' / 'dnd_submission.py'


def load_script():
    spec = importlib.util.spec_from_file_location('dnd_submission', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_writes_bundled_files_with_every_box(tmp_path):
    root, images, boxes = fabricated(tmp_path)
    torch.manual_seed(0)
    weights = tmp_path / 'w.pth'
    save_network(DRCNet(wf=8, depth=2), weights, {'type': 'DRCNet', 'wf': 8, 'depth': 2})
    out = tmp_path / 'out'
    assert load_script().main(['--dnd', str(root), '--weights', str(weights), '--out', str(out),
                               '--device', 'cpu']) == 0
    for i, img_boxes in enumerate(boxes):
        bundled = loadmat(out / 'bundled' / f'{i + 1:04d}.mat')
        crops = bundled['Idenoised'].ravel()
        assert len(crops) == 20
        for crop, (y1, x1, y2, x2) in zip(crops, img_boxes):
            assert crop.shape == (y2 - y1 + 1, x2 - x1 + 1, 3)


def test_missing_weights_are_named(tmp_path, capsys):
    root, _, _ = fabricated(tmp_path)
    assert load_script().main(['--dnd', str(root), '--weights', str(tmp_path / 'none.pth')]) == 2
    assert 'none.pth' in capsys.readouterr().err
