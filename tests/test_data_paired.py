"""PairedRestorationDataset: aligned crops, name matching, and errors for every kind of bad input."""
from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing
import os
import pickle
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from drcnet.data.image_io import ImageReadError, write_image
from drcnet.data.loader import build_dataloader
from drcnet.data.paired_restoration_dataset import PairedRestorationDataset
from drcnet.data.samples import load_sample
from drcnet.registry import DATASET_REGISTRY, build

OFFSET = 51  # lq = gt + 51/255 exactly, on the 8-bit grid


def _photo_u8(name: str, h: int, w: int) -> np.ndarray:
    return (load_sample(name)[:h, :w] * 255).round().astype(np.uint8)


def _make_offset_pairs(root, names=('astronaut', 'chelsea', 'coffee'), h=60, w=76):
    """gt scaled to 0..200 and lq = gt + 51: a known relation every crop must keep."""
    gt_dir, lq_dir = root / 'gt', root / 'lq'
    for name in names:
        gt = (_photo_u8(name, h, w).astype(np.int32) * 200 // 255).astype(np.uint8)
        write_image(gt_dir / f'{name}.png', gt)
        write_image(lq_dir / f'{name}.png', gt + np.uint8(OFFSET))
    return gt_dir, lq_dir


def _dihedral(img: np.ndarray) -> list:
    out = []
    for k in range(4):
        r = np.rot90(img, k)
        out += [r, r[:, ::-1]]
    return [np.ascontiguousarray(x) for x in out]


def _locate(crop: np.ndarray, sources: list) -> tuple | None:
    """(source index, transform index) such that the crop is an exact window of a transformed source."""
    for s, src in enumerate(sources):
        for t, view in enumerate(_dihedral(src)):
            if view.shape[0] < crop.shape[0] or view.shape[1] < crop.shape[1]:
                continue
            score = cv2.matchTemplate(view, crop, cv2.TM_SQDIFF)
            # exact match up to float rounding (32 x 32 x 3 squared differences of 1e-7 each, far below 1e-3);
            # a wrong window scores > 1
            if score.min() < 1e-3:
                return s, t
    return None


def test_training_crops_keep_lq_gt_relation_through_crop_flip_and_rotation(tmp_path):
    random.seed(0)  # basicsr's crop and augment draw from python's random
    gt_dir, lq_dir = _make_offset_pairs(tmp_path)
    ds = PairedRestorationDataset(str(gt_dir), str(lq_dir), gt_size=32, phase='train')
    sources = [cv2.imread(str(p))[:, :, ::-1].astype(np.float32) / 255 for p in sorted(gt_dir.iterdir())]
    transforms, tops = set(), set()
    for i in range(30):
        item = ds[i % len(ds)]
        lq, gt = item['lq'], item['gt']
        assert lq.shape == gt.shape == (3, 32, 32) and lq.dtype == torch.float32
        # two float32 values of the 8-bit grid and their difference: three roundings of magnitude <= 1, 2e-7
        torch.testing.assert_close(lq - gt, torch.full_like(gt, OFFSET / 255), atol=1e-6, rtol=0)
        found = _locate(np.ascontiguousarray(gt.numpy().transpose(1, 2, 0)), sources)
        assert found is not None and found[0] == i % len(ds)  # a true window of its own image
        transforms.add(found[1])
        tops.add(float(gt[0, 0, 0]))
    assert len(transforms) >= 4  # flips and rotations happen
    assert len(tops) > 10  # and crops move


def test_validation_returns_whole_images_and_paths(tmp_path):
    gt_dir, lq_dir = _make_offset_pairs(tmp_path)
    ds = build(DATASET_REGISTRY, {'type': 'PairedRestorationDataset', 'dataroot_gt': str(gt_dir),
                                  'dataroot_lq': str(lq_dir), 'io_backend': {'type': 'disk'}},
               where='datasets.val', phase='val')
    assert len(ds) == 3
    item = ds[1]
    assert item['gt'].shape == (3, 60, 76)
    assert item['gt_path'].endswith('gt/chelsea.png') and item['lq_path'].endswith('lq/chelsea.png')
    rgb = cv2.imread(item['gt_path'])[:, :, ::-1].astype(np.float32) / 255
    torch.testing.assert_close(item['gt'], torch.from_numpy(rgb.transpose(2, 0, 1).copy()))
    assert 0 <= item['lq'].min() and item['lq'].max() <= 1


def test_pairs_match_by_name_with_template_not_by_position(tmp_path):
    gt_dir, lq_dir = tmp_path / 'gt', tmp_path / 'lq'
    # sorted positions disagree: gt a, b, c vs lq a_rain, b_rain, c_rain plus a differing extension
    for name, photo in (('a', 'astronaut'), ('b', 'chelsea'), ('c', 'coffee')):
        img = load_sample(photo)[:40, :40]
        write_image(gt_dir / f'{name}.png', img)
        write_image(lq_dir / f'{name}_rain{".jpg" if name == "b" else ".png"}', img)
    ds = PairedRestorationDataset(str(gt_dir), str(lq_dir), filename_tmpl='{}_rain', phase='test')
    names = [(ds[i]['lq_path'].split('/')[-1], ds[i]['gt_path'].split('/')[-1]) for i in range(3)]
    assert names == [('a_rain.png', 'a.png'), ('b_rain.jpg', 'b.png'), ('c_rain.png', 'c.png')]
    with pytest.raises(ValueError, match="filename_tmpl must contain"):
        PairedRestorationDataset(str(gt_dir), str(lq_dir), filename_tmpl='rain', phase='val')


def test_meta_info_file_selects_pairs(tmp_path):
    gt_dir, lq_dir = _make_offset_pairs(tmp_path)
    meta = tmp_path / 'meta.txt'
    meta.write_text('coffee.png (60,76,3)\nastronaut.png (60,76,3)\n')
    ds = PairedRestorationDataset(str(gt_dir), str(lq_dir), meta_info_file=str(meta), phase='val')
    assert sorted(ds[i]['gt_path'].split('/')[-1] for i in range(len(ds))) == ['astronaut.png', 'coffee.png']
    meta.write_text('coffee.png\nzebra.png\n')
    with pytest.raises(FileNotFoundError, match='zebra.png'):
        PairedRestorationDataset(str(gt_dir), str(lq_dir), meta_info_file=str(meta), phase='val')


def test_unmatched_names_are_listed_before_training(tmp_path):
    gt_dir, lq_dir = _make_offset_pairs(tmp_path)
    for extra in ('zz_orphan1', 'zz_orphan2'):
        write_image(lq_dir / f'{extra}.png', load_sample('rocket')[:60, :76])
    with pytest.raises(ValueError, match='no ground-truth partner') as info:
        PairedRestorationDataset(str(gt_dir), str(lq_dir), gt_size=32)
    assert 'zz_orphan1.png' in str(info.value) and 'zz_orphan2.png' in str(info.value)
    (lq_dir / 'zz_orphan1.png').unlink()
    (lq_dir / 'zz_orphan2.png').unlink()
    (lq_dir / 'coffee.png').unlink()
    with pytest.raises(ValueError, match='no input partner.*coffee.png'):
        PairedRestorationDataset(str(gt_dir), str(lq_dir), gt_size=32)


def test_missing_and_empty_folders_fail_at_construction(tmp_path):
    gt_dir, lq_dir = _make_offset_pairs(tmp_path)
    with pytest.raises(FileNotFoundError, match='dataroot_lq.*nowhere'):
        PairedRestorationDataset(str(gt_dir), str(tmp_path / 'nowhere'), gt_size=32)
    empty = tmp_path / 'empty'
    empty.mkdir()
    (empty / 'notes.txt').write_text('no images here')
    with pytest.raises(ValueError, match='dataroot_gt: no images'):
        PairedRestorationDataset(str(empty), str(lq_dir), gt_size=32)


def test_size_mismatch_names_both_files_and_sizes(tmp_path):
    gt_dir, lq_dir = _make_offset_pairs(tmp_path)
    write_image(lq_dir / 'chelsea.png', load_sample('chelsea')[:50, :70])
    ds = PairedRestorationDataset(str(gt_dir), str(lq_dir), phase='val')
    with pytest.raises(ValueError) as info:
        ds[1]
    message = str(info.value)
    assert 'lq/chelsea.png is 70x50' in message and 'gt/chelsea.png is 76x60' in message


def test_truncated_image_names_the_file(tmp_path):
    gt_dir, lq_dir = _make_offset_pairs(tmp_path)
    data = (gt_dir / 'coffee.png').read_bytes()
    (gt_dir / 'coffee.png').write_bytes(data[: len(data) // 3])
    ds = PairedRestorationDataset(str(gt_dir), str(lq_dir), gt_size=32)
    ds[0]  # other pairs still load
    with pytest.raises(ImageReadError, match='gt/coffee.png'):
        ds[2]


def test_bad_options_are_errors(tmp_path):
    gt_dir, lq_dir = _make_offset_pairs(tmp_path)
    with pytest.raises(ValueError, match='io_backend.type'):
        PairedRestorationDataset(str(gt_dir), str(lq_dir), io_backend={'type': 'memcached'}, gt_size=32)
    with pytest.raises(ValueError, match='gt_size'):
        PairedRestorationDataset(str(gt_dir), str(lq_dir), phase='train')
    with pytest.raises(ValueError, match='phase'):
        PairedRestorationDataset(str(gt_dir), str(lq_dir), phase='training')
    with pytest.raises(ValueError, match='gt_size 128 is larger'):
        PairedRestorationDataset(str(gt_dir), str(lq_dir), gt_size=128)[0]
    with pytest.raises(ValueError, match='use_hflip'):
        build(DATASET_REGISTRY, {'type': 'PairedRestorationDataset', 'dataroot_gt': str(gt_dir),
                                 'dataroot_lq': str(lq_dir), 'gt_size': 32, 'use_hfip': True}, where='datasets.train')
    with pytest.raises(ValueError, match='lmdb'):
        PairedRestorationDataset(str(gt_dir), str(lq_dir), io_backend={'type': 'lmdb'}, phase='val')


def _create_lmdb(folder, lmdb_path):
    path = Path(__file__).resolve().parents[1] / 'scripts' / 'create_lmdb.py'
    spec = importlib.util.spec_from_file_location('_paired_create_lmdb', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with open(os.devnull, 'w') as quiet, contextlib.redirect_stderr(quiet):  # progress bar
        module.create_lmdb(folder, lmdb_path)


@pytest.mark.skipif('fork' not in multiprocessing.get_all_start_methods(), reason='needs the fork start method')
def test_lmdb_read_in_the_parent_then_in_forked_workers(tmp_path):
    gt_dir, lq_dir = _make_offset_pairs(tmp_path)
    _create_lmdb(gt_dir, tmp_path / 'gt.lmdb')
    _create_lmdb(lq_dir, tmp_path / 'lq.lmdb')
    disk = PairedRestorationDataset(str(gt_dir), str(lq_dir), phase='val')
    ds = PairedRestorationDataset(str(tmp_path / 'gt.lmdb'), str(tmp_path / 'lq.lmdb'), io_backend={'type': 'lmdb'},
                                  phase='val')
    assert torch.equal(ds[0]['gt'], disk[0]['gt'])  # the parent opens both files before the workers fork
    pickle.loads(pickle.dumps(ds))  # no open environment travels to spawned workers
    loader = DataLoader(ds, batch_size=1, num_workers=2, multiprocessing_context='fork')
    batches = list(loader)
    assert len(batches) == len(disk) == 3
    for i, batch in enumerate(batches):
        assert torch.equal(batch['lq'][0], disk[i]['lq']) and torch.equal(batch['gt'][0], disk[i]['gt'])
    train = PairedRestorationDataset(str(tmp_path / 'gt.lmdb'), str(tmp_path / 'lq.lmdb'),
                                     io_backend={'type': 'lmdb'}, gt_size=32, phase='train')
    train[0]
    loader = build_dataloader(train, 'train', batch_size_per_gpu=2, num_worker_per_gpu=2, dataset_enlarge_ratio=2,
                              persistent_workers=False)
    for batch in loader:
        assert batch['gt'].shape == (2, 3, 32, 32)
        torch.testing.assert_close(batch['lq'] - batch['gt'], torch.full_like(batch['gt'], OFFSET / 255), atol=1e-6,
                                   rtol=0)
    assert torch.equal(ds[2]['lq'], disk[2]['lq'])  # the parent's own environments still read after the workers
