"""Benchmark preparation scripts and create_lmdb on tiny copies of each benchmark's published layout."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from drcnet.data import degradations as D
from drcnet.data.image_io import read_image, write_image
from drcnet.data.paired_restoration_dataset import PairedRestorationDataset
from drcnet.data.preparation import crop_positions
from drcnet.data.samples import load_sample

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'hubble_deep_field', 'immunohistochemistry')


def _script(name: str):
    """Import a script by path so its main(argv) runs in this process."""
    path = ROOT / 'scripts' / (f'{name}.py' if name == 'create_lmdb' else f'data_preparation/{name}.py')
    spec = importlib.util.spec_from_file_location(f'_prep_{name}', path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _clean(i: int, h: int = 70, w: int = 90) -> np.ndarray:
    photo = load_sample(PHOTOS[i % len(PHOTOS)])
    return np.ascontiguousarray(photo[20:20 + h, 30:30 + w])


def _noisy(img: np.ndarray, seed: int) -> np.ndarray:
    return D.quantize(D.gaussian_noise(img, 25, np.random.default_rng(seed)))


def _assert_same_pixels(path: Path, expected: np.ndarray, atol: float = 0.0):
    np.testing.assert_allclose(read_image(path), expected, atol=atol, rtol=0)


# ---------------------------------------------------------------------------------------------- Rain13k
def _fake_mprnet_rain(raw: Path) -> None:
    for i in range(3):
        clean = _clean(i)
        write_image(raw / 'train/Rain13K/target' / f'{i + 1}.jpg', clean, params=[cv2.IMWRITE_JPEG_QUALITY, 95])
        write_image(raw / 'train/Rain13K/input' / f'{i + 1}.jpg', D.rain(clean, np.random.default_rng(i), 'light'))
    for i in range(2):  # Test100 as MPRNet ships it: same names on both sides
        clean = _clean(i + 3)
        write_image(raw / 'test/Test100/target' / f'{i + 1}.png', clean)
        write_image(raw / 'test/Test100/input' / f'{i + 1}.png', D.rain(clean, np.random.default_rng(9), 'heavy'))
    for i in range(2):  # Rain100L with its original rain-N / norain-N names
        clean = _clean(i + 1)
        write_image(raw / 'test/Rain100L/target' / f'norain-{i + 1:03d}.png', clean)
        rainy = D.rain(clean, np.random.default_rng(i), 'light')
        write_image(raw / 'test/Rain100L/input' / f'rain-{i + 1:03d}.png', rainy)


def test_rain13k_layout_to_ours_and_rerun_skips(tmp_path, capsys):
    raw, out = tmp_path / 'Datasets', tmp_path / 'datasets/Rain13k'
    _fake_mprnet_rain(raw)
    rain13k = _script('rain13k')
    assert rain13k.main(['--input', str(raw), '--output', str(out), '--workers', '2']) == 0
    assert 'failure' in capsys.readouterr().out
    assert sorted(p.name for p in (out / 'train/input').iterdir()) == ['1.jpg', '2.jpg', '3.jpg']
    assert (out / 'train/target/2.jpg').read_bytes() == (raw / 'train/Rain13K/target/2.jpg').read_bytes()
    assert sorted(p.name for p in (out / 'test/Rain100L/input').iterdir()) == ['norain-001.png', 'norain-002.png']
    ds = PairedRestorationDataset(str(out / 'test/Rain100L/target'), str(out / 'test/Rain100L/input'), phase='test')
    item = ds[1]
    torch.testing.assert_close(item['gt'], torch.from_numpy(_clean(2).transpose(2, 0, 1).copy()), atol=0.5 / 255,
                               rtol=0)
    assert (item['lq'] - item['gt']).min() >= -1 / 255  # the rainy partner, not another image
    assert not (out / 'test/Rain100H').exists()
    # a second run finds everything in place
    assert rain13k.main(['--input', str(raw), '--output', str(out), '--workers', '1']) == 0
    assert '0 file(s) written, 14 already there' in capsys.readouterr().out


def test_rain13k_wrong_layout_names_the_expected_path(tmp_path, capsys):
    raw = tmp_path / 'Datasets'
    (raw / 'train').mkdir(parents=True)
    assert _script('rain13k').main(['--input', str(raw), '--splits', 'train']) == 2
    assert str(raw / 'train/Rain13K/input') in capsys.readouterr().err
    assert _script('rain13k').main(['--input', str(raw), '--splits', 'test']) == 2
    assert str(raw / 'test/Test100') in capsys.readouterr().err
    write_image(raw / 'train/Rain13K/input/1.png', _clean(0))
    write_image(raw / 'train/Rain13K/input/2.png', _clean(1))
    write_image(raw / 'train/Rain13K/target/1.png', _clean(0))
    assert _script('rain13k').main(['--input', str(raw), '--splits', 'train']) == 2
    assert 'without a target: 2.png' in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- SIDD
def _fake_sidd(raw: Path, h: int = 150, w: int = 200) -> dict:
    sources = {}
    for scene, take in (('0001_001_S6_00100_00060_3200_L', '010'), ('0001_001_S6_00100_00060_3200_L', '011'),
                        ('0002_001_S6_00100_00020_3200_N', '010')):
        sid = scene[:4]
        clean = _clean(len(sources), h, w)
        noisy = _noisy(clean, len(sources))
        folder = raw / 'SIDD_Medium_Srgb/Data' / scene
        write_image(folder / f'{sid}_GT_SRGB_{take}.PNG', clean)
        write_image(folder / f'{sid}_NOISY_SRGB_{take}.PNG', noisy)
        sources[f'{sid}_{take}'] = (noisy, clean)
    rng = np.random.default_rng(0)
    gt = (np.stack([np.stack([_clean(i + j, 32, 32) for j in range(3)]) for i in range(2)]) * 255).round()
    noisy = np.clip(gt + rng.normal(0, 20, gt.shape), 0, 255).round()
    scipy.io.savemat(raw / 'ValidationGtBlocksSrgb.mat', {'ValidationGtBlocksSrgb': gt.astype(np.uint8)})
    scipy.io.savemat(raw / 'ValidationNoisyBlocksSrgb.mat', {'ValidationNoisyBlocksSrgb': noisy.astype(np.uint8)})
    sources['val'] = (noisy.astype(np.uint8), gt.astype(np.uint8))
    return sources


def test_crop_positions_cover_the_image_with_the_release_step():
    assert crop_positions(150, 64, 48) == [0, 48, 86]
    assert crop_positions(128, 64, 64) == [0, 64]
    assert crop_positions(2000, 512, 384)[-1] == 2000 - 512
    with pytest.raises(ValueError, match='shorter than the crop size'):
        crop_positions(50, 64, 48)


def test_sidd_crops_blocks_and_lmdb_give_identical_tensors(tmp_path, capsys):
    raw, out = tmp_path / 'SIDD_raw', tmp_path / 'datasets/SIDD'
    sources = _fake_sidd(raw)
    sidd = _script('sidd')
    assert sidd.main(['--input', str(raw), '--output', str(out), '--crop-size', '64', '--step', '48',
                      '--workers', '2']) == 0
    crops = sorted(p.name for p in (out / 'train/input_crops').iterdir())
    assert len(crops) == 3 * 3 * 4  # 3 images, rows at 0/48/86, columns at 0/48/96/136
    assert crops == sorted(p.name for p in (out / 'train/gt_crops').iterdir())
    noisy, clean = sources['0001_011']
    _assert_same_pixels(out / 'train/input_crops/0001_011_s001.png', noisy[0:64, 0:64])
    _assert_same_pixels(out / 'train/gt_crops/0001_011_s006.png', clean[48:112, 48:112], atol=0.5 / 255)
    _assert_same_pixels(out / 'train/gt_crops/0001_011_s012.png', clean[86:150, 136:200], atol=0.5 / 255)
    val_noisy, val_gt = sources['val']
    assert len(list((out / 'val/input').iterdir())) == 6
    _assert_same_pixels(out / 'val/input/01_02.png', val_noisy[1, 2] / np.float32(255))
    _assert_same_pixels(out / 'val/gt/00_01.png', val_gt[0, 1] / np.float32(255))
    capsys.readouterr()
    assert sidd.main(['--input', str(raw), '--output', str(out), '--crop-size', '64', '--step', '48',
                      '--workers', '1']) == 0
    assert capsys.readouterr().out.count(' 0 file(s) written') == 2

    create_lmdb = _script('create_lmdb')
    folders = [out / 'train/input_crops', out / 'train/gt_crops']
    assert create_lmdb.main(['--input', *map(str, folders), '--workers', '2']) == 0
    meta = (out / 'train/gt_crops.lmdb/meta_info.txt').read_text().splitlines()
    assert len(meta) == 36 and meta[0] == '0001_010_s001.png (64,64,3) 1'
    disk = PairedRestorationDataset(str(folders[1]), str(folders[0]), phase='val')
    lmdb = PairedRestorationDataset(str(out / 'train/gt_crops.lmdb'), str(out / 'train/input_crops.lmdb'),
                                    io_backend={'type': 'lmdb'}, phase='val')
    assert len(disk) == len(lmdb) == 36
    for i in range(len(disk)):
        a, b = disk[i], lmdb[i]
        assert torch.equal(a['lq'], b['lq']) and torch.equal(a['gt'], b['gt'])
        assert Path(a['lq_path']).stem == Path(b['lq_path']).name
    train = PairedRestorationDataset(str(out / 'train/gt_crops.lmdb'), str(out / 'train/input_crops.lmdb'),
                                     io_backend={'type': 'lmdb'}, gt_size=32)
    assert train[5]['lq'].shape == (3, 32, 32)
    capsys.readouterr()
    assert create_lmdb.main(['--input', str(folders[0]), '--workers', '1']) == 0
    assert 'already complete' in capsys.readouterr().out


def test_sidd_wrong_layout_names_the_expected_path(tmp_path, capsys):
    raw = tmp_path / 'SIDD_raw'
    raw.mkdir()
    sidd = _script('sidd')
    assert sidd.main(['--input', str(raw), '--splits', 'train']) == 2
    assert str(raw / 'SIDD_Medium_Srgb' / 'Data') in capsys.readouterr().err
    assert sidd.main(['--input', str(raw), '--splits', 'val']) == 2
    assert str(raw / 'ValidationNoisyBlocksSrgb.mat') in capsys.readouterr().err
    scipy.io.savemat(raw / 'ValidationNoisyBlocksSrgb.mat', {'wrong_name': np.zeros((1, 1, 4, 4, 3), np.uint8)})
    blocks = np.zeros((1, 1, 4, 4, 3), np.uint8)
    scipy.io.savemat(raw / 'ValidationGtBlocksSrgb.mat', {'ValidationGtBlocksSrgb': blocks})
    assert sidd.main(['--input', str(raw), '--splits', 'val']) == 2
    err = capsys.readouterr().err
    assert "no variable 'ValidationNoisyBlocksSrgb'" in err and 'wrong_name' in err


def test_lmdb_matches_folder_for_jpeg_exif_grey_and_16_bit(tmp_path):
    folder = tmp_path / 'mixed'
    folder.mkdir()
    pil = Image.fromarray((_clean(0) * 255).round().astype(np.uint8))
    exif = pil.getexif()
    exif[0x0112] = 8
    pil.save(folder / 'a_rotated.jpg', exif=exif.tobytes(), quality=90)
    cv2.imwrite(str(folder / 'b_grey.png'), (_clean(1)[:, :, 1] * 255).round().astype(np.uint8))
    write_image(folder / 'c_deep.png', D.blur(_clean(2), D.linear_motion_kernel(5, 0.0)), bits=16)  # off the 8-bit grid
    write_image(folder / 'd_plain.bmp', _clean(3))
    assert _script('create_lmdb').main(['--input', str(folder), '--output', str(tmp_path / 'mixed.lmdb'),
                                        '--workers', '1']) == 0
    disk = PairedRestorationDataset(str(folder), str(folder), phase='val')
    lmdb = PairedRestorationDataset(str(tmp_path / 'mixed.lmdb'), str(tmp_path / 'mixed.lmdb'),
                                    io_backend={'type': 'lmdb'}, phase='val')
    assert len(disk) == len(lmdb) == 4
    for i in range(4):
        assert torch.equal(disk[i]['gt'], lmdb[i]['gt']), disk[i]['gt_path']
    assert disk[0]['gt'].shape == (3, 90, 70)  # the EXIF rotation is applied in both
    assert ((disk[2]['gt'] * 65535).round() % 257 != 0).float().mean() > 0.5  # 16 bits survive, not 8


def test_create_lmdb_names_a_bad_image_and_writes_nothing(tmp_path, capsys):
    folder = tmp_path / 'imgs'
    write_image(folder / 'good.png', _clean(0))
    data = (write_image(tmp_path / 'tmp.png', _clean(1))).read_bytes()
    (folder / 'bad.png').write_bytes(data[:200])
    assert _script('create_lmdb').main(['--input', str(folder), '--workers', '1']) == 2
    assert 'bad.png' in capsys.readouterr().err
    assert not (tmp_path / 'imgs.lmdb').exists()
    assert _script('create_lmdb').main(['--input', str(tmp_path / 'nothing')]) == 2
    assert 'nothing' in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- GoPro
def _fake_gopro(raw: Path) -> None:
    for split, seqs in (('train', ('GOPR0372_07_00', 'GOPR0374_11_00')), ('test', ('GOPR0384_11_00',))):
        for s, seq in enumerate(seqs):
            for frame in ('000001', '000002'):
                clean = _clean(s + int(frame), 80, 100)
                kernel = D.linear_motion_kernel(9, 30.0 * s)
                write_image(raw / split / seq / 'sharp' / f'{frame}.png', clean)
                write_image(raw / split / seq / 'blur' / f'{frame}.png', D.blur(clean, kernel))
                gamma_blur = D.blur(clean ** 2.2, kernel) ** (1 / 2.2)
                write_image(raw / split / seq / 'blur_gamma' / f'{frame}.png', gamma_blur)


def test_gopro_train_crops_test_copies_and_blur_choice(tmp_path, capsys):
    raw, out = tmp_path / 'GOPRO_Large', tmp_path / 'datasets/GoPro'
    _fake_gopro(raw)
    gopro = _script('gopro')
    assert gopro.main(['--input', str(raw), '--output', str(out), '--crop-size', '48', '--step', '32',
                       '--workers', '1']) == 0
    crops = sorted(p.name for p in (out / 'train/input_crops').iterdir())
    per_image = len(crop_positions(80, 48, 32)) * len(crop_positions(100, 48, 32))
    assert len(crops) == 4 * per_image and crops[0] == 'GOPR0372_07_00_000001_s001.png'
    assert sorted(p.name for p in (out / 'test/target').iterdir()) == ['GOPR0384_11_00_000001.png',
                                                                       'GOPR0384_11_00_000002.png']
    assert (out / 'test/input/GOPR0384_11_00_000002.png').read_bytes() == \
        (raw / 'test/GOPR0384_11_00/blur/000002.png').read_bytes()
    assert (out / 'train/blur_source.txt').read_text().strip() == 'blur'
    capsys.readouterr()
    assert gopro.main(['--input', str(raw), '--output', str(out), '--blur', 'blur_gamma']) == 2
    assert "prepared from 'blur'" in capsys.readouterr().err
    (raw / 'test/GOPR0384_11_00/sharp').rename(raw / 'test/GOPR0384_11_00/sharp_moved')
    assert gopro.main(['--input', str(raw), '--output', str(tmp_path / 'other'), '--splits', 'test']) == 2
    assert str(raw / 'test/GOPR0384_11_00/sharp') in capsys.readouterr().err


def test_preparation_reports_a_size_mismatch_naming_both_files(tmp_path, capsys):
    raw, out = tmp_path / 'GOPRO_Large', tmp_path / 'out'
    write_image(raw / 'test/SEQ/sharp/000001.png', _clean(0, 60, 80))
    write_image(raw / 'test/SEQ/blur/000001.png', _clean(0, 60, 70))
    write_image(raw / 'test/SEQ/sharp/000002.png', _clean(1, 60, 80))
    write_image(raw / 'test/SEQ/blur/000002.png', _clean(1, 60, 80))
    assert _script('gopro').main(['--input', str(raw), '--output', str(out), '--splits', 'test',
                                  '--workers', '1']) == 1
    printed = capsys.readouterr().out
    assert 'blur/000001.png is 70x60' in printed and 'sharp/000001.png is 80x60' in printed
    assert (out / 'test/input/SEQ_000002.png').exists()  # the good pair is still prepared


# ----------------------------------------------------------------------------------------- HIDE, RealBlur
def test_hide_published_layout_to_ours(tmp_path, capsys):
    raw, out = tmp_path / 'HIDE_dataset', tmp_path / 'datasets/HIDE'
    parts = {'18sep27_1_11_0004': 'test-close-ups', '18sep30_2_01_0021': 'test-long-shot',
             '18sep30_2_01_0044': 'test-long-shot'}
    for i, (name, part) in enumerate(parts.items()):
        clean = _clean(i)
        write_image(raw / 'GT' / f'{name}.png', clean)
        write_image(raw / 'test' / part / f'{name}.png', D.blur(clean, D.linear_motion_kernel(7, 10.0)))
    write_image(raw / 'GT' / 'train_only_0001.png', _clean(5))  # sharp frames of the training split
    hide = _script('hide')
    assert hide.main(['--input', str(raw), '--output', str(out), '--workers', '1']) == 0
    assert sorted(p.stem for p in (out / 'test/input').iterdir()) == sorted(parts)
    ds = PairedRestorationDataset(str(out / 'test/target'), str(out / 'test/input'), phase='test')
    assert len(ds) == 3
    (raw / 'test/test-long-shot').rename(raw / 'test/long')
    assert hide.main(['--input', str(raw), '--output', str(tmp_path / 'x')]) == 2
    assert str(raw / 'test/test-long-shot') in capsys.readouterr().err


def test_realblur_lists_to_ours(tmp_path, capsys):
    raw, out = tmp_path / 'RealBlur', tmp_path / 'datasets/RealBlur'
    lines = []
    for i, scene in enumerate(('scene230', 'scene231')):
        for n in (1, 2):
            base = f'RealBlur-J_ECC_IMCORR_centroid_itensity_ref/{scene}'
            clean = _clean(i + n)
            write_image(raw / base / f'gt/gt_{n}.png', clean)
            write_image(raw / base / f'blur/blur_{n}.png', D.blur(clean, D.trajectory_kernel(np.random.default_rng(n))))
            lines.append(f'{base}/gt/gt_{n}.png {base}/blur/blur_{n}.png')
    (raw / 'RealBlur_J_test_list.txt').write_text('\n'.join(lines) + '\n')
    realblur = _script('realblur')
    assert realblur.main(['--input', str(raw), '--output', str(out), '--variants', 'J', '--workers', '1']) == 0
    names = sorted(p.name for p in (out / 'RealBlur_J/test/input').iterdir())
    assert names == ['scene230_1.png', 'scene230_2.png', 'scene231_1.png', 'scene231_2.png']
    assert (out / 'RealBlur_J/test/target/scene231_2.png').read_bytes() == \
        (raw / 'RealBlur-J_ECC_IMCORR_centroid_itensity_ref/scene231/gt/gt_2.png').read_bytes()
    assert realblur.main(['--input', str(raw), '--output', str(out)]) == 2  # R asked for, not there
    assert str(raw / 'RealBlur_R_test_list.txt') in capsys.readouterr().err
    missing = 'missing/scene9/gt/gt_1.png missing/scene9/blur/blur_1.png'
    (raw / 'RealBlur_J_test_list.txt').write_text(f'{lines[0]}\n{missing}\n')
    assert realblur.main(['--input', str(raw), '--output', str(out), '--variants', 'J']) == 2
    assert str(raw / 'missing/scene9/blur/blur_1.png') in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- DND
def _fake_dnd(raw: Path, count: int = 2, h: int = 60, w: int = 80) -> None:
    (raw / 'images_srgb').mkdir(parents=True)
    with h5py.File(raw / 'info.mat', 'w') as f:
        info = f.create_group('info')
        refs = []
        for i in range(count):
            tops = np.arange(20) % 4 * 10 + 1
            lefts = np.arange(20) // 4 * 10 + 1
            boxes = np.stack([tops, lefts, tops + 15, lefts + 15], axis=1).astype(np.float64)  # (20, 4)
            refs.append(f.create_dataset(f'#refs#/{i}', data=boxes.T).ref)  # MATLAB stores it transposed
        info.create_dataset('boundingboxes', data=np.array(refs, dtype=h5py.ref_dtype).reshape(1, count))
    for i in range(count):
        with h5py.File(raw / 'images_srgb' / f'{i + 1:04d}.mat', 'w') as f:
            f.create_dataset('InoisySRGB', data=_noisy(_clean(i, h, w), i).transpose(2, 1, 0))


def test_dnd_layout_is_checked_and_copied(tmp_path, capsys):
    raw, out = tmp_path / 'dnd_2017', tmp_path / 'datasets/DND'
    _fake_dnd(raw)
    dnd = _script('dnd')
    assert dnd.main(['--input', str(raw), '--output', str(out), '--workers', '1']) == 0
    assert (out / 'info.mat').is_file() and sorted(p.name for p in (out / 'images_srgb').iterdir()) == \
        ['0001.mat', '0002.mat']
    with h5py.File(out / 'images_srgb/0002.mat', 'r') as f:
        np.testing.assert_array_equal(np.asarray(f['InoisySRGB']).T, _noisy(_clean(1, 60, 80), 1))
    (raw / 'images_srgb/0002.mat').unlink()
    assert dnd.main(['--input', str(raw), '--output', str(tmp_path / 'again')]) == 2
    assert str(raw / 'images_srgb/0002.mat') in capsys.readouterr().err
    with h5py.File(raw / 'images_srgb/0002.mat', 'w') as f:
        f.create_dataset('Inoisy', data=np.zeros((3, 80, 60), np.float32))
    assert dnd.main(['--input', str(raw), '--output', str(tmp_path / 'again'), '--workers', '1']) == 1
    assert 'InoisySRGB' in capsys.readouterr().out
    assert not (tmp_path / 'again/info.mat').exists()
