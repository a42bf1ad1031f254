"""The DND writer on a fabricated folder in DND's layout (MATLAB v7.3 = HDF5 with a 512-byte header)."""
import h5py
import numpy as np
import pytest
import torch
from scipy.io import loadmat

from drcnet.archs.drcnet_arch import DRCNet
from drcnet.inference.dnd import bundle_submissions_srgb, denoise_dnd, read_dnd_info, read_noisy_box
from tests.conftest import photo_tensor

HEADER = b'MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .'


def v73_file(path):
    """An HDF5 file with MATLAB's 512-byte user block, as MATLAB's save -v7.3 writes."""
    return h5py.File(path, 'w', userblock_size=512)


def stamp_header(path):
    """MATLAB's header: 116 bytes of text, 8 of subsystem offset, version 0x0200 (v7.3), 'IM' (little-endian)."""
    with open(path, 'r+b') as f:
        f.write(HEADER.ljust(116, b' ') + b' ' * 8 + b'\x00\x02' + b'IM')


def make_dnd(root, images, boxes):
    """images: HxWx3 arrays; boxes: per image an (N, 4) array of [y1 x1 y2 x2], 1-based inclusive."""
    (root / 'images_srgb').mkdir(parents=True)
    for i, img in enumerate(images):
        path = root / 'images_srgb' / f'{i + 1:04d}.mat'
        with v73_file(path) as f:
            f.create_dataset('InoisySRGB', data=img.T)  # MATLAB column-major: h5py sees (3, W, H)
        stamp_header(path)
    path = root / 'info.mat'
    with v73_file(path) as f:
        refs = f.create_group('#refs#')
        info = f.create_group('info')
        cell = info.create_dataset('boundingboxes', (1, len(boxes)), dtype=h5py.ref_dtype)
        for i, b in enumerate(boxes):
            cell[0, i] = refs.create_dataset(f'bb{i}', data=np.asarray(b, np.float64).T).ref  # 20x4 -> (4, 20)
    stamp_header(path)


def fabricated(tmp_path):
    rng = np.random.default_rng(0)
    photos = [photo_tensor('chelsea')[0, :, :60, :90], photo_tensor('coffee')[0, :, 100:150, 200:280]]
    images = [np.clip(p.permute(1, 2, 0).numpy() + rng.normal(0, 0.05, (p.shape[1], p.shape[2], 3)), 0, 1)
              .astype(np.float32) for p in photos]
    boxes = []
    for img in images:
        h, w = img.shape[:2]
        rows = []
        for k in range(20):
            bh, bw = 12 + k % 5, 20 + (k * 3) % 9  # non-square boxes catch swapped axes
            y1, x1 = int(rng.integers(1, h - bh + 2)), int(rng.integers(1, w - bw + 2))
            rows.append([y1, x1, y1 + bh - 1, x1 + bw - 1])
        boxes.append(np.array(rows))
    make_dnd(tmp_path / 'dnd', images, boxes)
    return tmp_path / 'dnd', images, boxes


def test_read_info_and_boxes_in_matlab_coordinates(tmp_path):
    root, images, boxes = fabricated(tmp_path)
    with pytest.raises(NotImplementedError):  # scipy recognises v7.3 files and leaves them to HDF5 readers
        loadmat(str(root / 'info.mat'))
    info = read_dnd_info(root)
    assert [i.index for i in info] == [1, 2]
    for rec, img, b in zip(info, images, boxes):
        assert np.array_equal(rec.boxes, b)
        y1, x1, y2, x2 = b[3]
        crop = read_noisy_box(rec.path, b[3])
        assert np.array_equal(crop, img[y1 - 1:y2, x1 - 1:x2])


def test_denoise_dnd_writes_per_box_and_bundled_files(tmp_path):
    root, images, boxes = fabricated(tmp_path)
    out = tmp_path / 'submission'
    bundled = denoise_dnd(lambda x: x * 0.5, root, out, progress=False)
    assert bundled == out / 'bundled'
    assert sorted(p.name for p in bundled.iterdir()) == ['0001.mat', '0002.mat']
    assert len(list(out.glob('000?_??.mat'))) == 40
    for i, (img, b) in enumerate(zip(images, boxes)):
        m = loadmat(str(bundled / f'{i + 1:04d}.mat'))
        assert m['Idenoised'].shape == (1, 20) and m['Idenoised'].dtype == object
        assert not bool(m['israw'].item()) and str(m['eval_version'][0]) == '1.0'
        for k, (y1, x1, y2, x2) in enumerate(b):
            crop = m['Idenoised'][0, k]
            assert crop.shape == (y2 - y1 + 1, x2 - x1 + 1, 3) and crop.dtype == np.float32
            assert np.allclose(crop, img[y1 - 1:y2, x1 - 1:x2] * 0.5, atol=1e-6)
        single = loadmat(str(out / f'{i + 1:04d}_07.mat'))['Idenoised_crop']
        assert np.array_equal(single, m['Idenoised'][0, 6])


def test_denoise_dnd_with_a_network_and_rebundling(tmp_path):
    root, _, boxes = fabricated(tmp_path)
    torch.manual_seed(0)
    net = DRCNet(wf=8, depth=2).eval()
    out = tmp_path / 'net'
    denoise_dnd(net, root, out, bundle=False, progress=False)
    assert not (out / 'bundled').exists()
    bundled = bundle_submissions_srgb(out, read_dnd_info(root))
    m = loadmat(str(bundled / '0002.mat'))
    shapes = [m['Idenoised'][0, k].shape for k in range(20)]
    assert shapes == [(y2 - y1 + 1, x2 - x1 + 1, 3) for y1, x1, y2, x2 in boxes[1]]
    assert all(0 <= m['Idenoised'][0, k].min() and m['Idenoised'][0, k].max() <= 1 for k in range(20))


def test_bad_dnd_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='info.mat'):
        read_dnd_info(tmp_path)
    root, images, _ = fabricated(tmp_path)
    h, w = images[0].shape[:2]
    with pytest.raises(ValueError, match='outside'):
        read_noisy_box(root / 'images_srgb' / '0001.mat', [h - 5, 1, h + 5, 10])
    (root / 'images_srgb' / '0002.mat').unlink()
    with pytest.raises(FileNotFoundError, match='0002.mat'):
        denoise_dnd(lambda x: x, root, tmp_path / 'o', progress=False)
