"""Paired (degraded, clean) images from two folders or two lmdb files, matched by name."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping

from torch.utils.data import Dataset

from drcnet.data.image_io import IMAGE_EXTENSIONS, decode_image, list_images, read_image
from drcnet.data.transforms import augment_pair, check_pair_sizes, random_crop_pair, to_tensor
from drcnet.registry import DATASET_REGISTRY

__all__ = ['PairedRestorationDataset', 'match_pairs', 'read_meta_info']

logger = logging.getLogger('basicsr')

_SHOW = 5  # how many unmatched names an error lists
PHASES = ('train', 'val', 'test')


def _stem(name: str) -> str:
    return os.path.splitext(name)[0]


def read_meta_info(path: str | os.PathLike) -> list:
    """Image names from a meta info file (first field of each line, as basicsr writes them)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'meta_info_file does not exist: {path}')
    names = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f'meta_info_file lists no images: {path}')
    return names


def _by_stem(names: list, where: str) -> dict:
    table = {}
    for name in names:
        key = _stem(name)
        if key in table:
            raise ValueError(f'{where}: two images share the name {key!r}: {table[key]} and {name}')
        table[key] = name
    return table


def match_pairs(gt_names: list, lq_names: list, filename_tmpl: str = '{}', gt_where: str = 'dataroot_gt',
                lq_where: str = 'dataroot_lq') -> list:
    """(lq_name, gt_name) pairs where lq's name (without extension) is ``filename_tmpl.format(gt's)``.

    Names without a partner on either side are a ValueError listing the first few of them.
    """
    if '{}' not in filename_tmpl:
        raise ValueError(f"filename_tmpl must contain '{{}}' (the ground-truth name), got {filename_tmpl!r}")
    gt_table = _by_stem(gt_names, gt_where)
    lq_table = _by_stem(lq_names, lq_where)
    expected = {filename_tmpl.format(stem): stem for stem in gt_table}
    lq_orphans = sorted(lq_table[s] for s in lq_table if s not in expected)
    gt_orphans = sorted(gt_table[expected[s]] for s in expected if s not in lq_table)
    if lq_orphans or gt_orphans:
        parts = []
        if lq_orphans:
            parts.append(f'{len(lq_orphans)} image(s) in {lq_where} have no ground-truth partner in {gt_where}: '
                         f'{", ".join(lq_orphans[:_SHOW])}{" ..." if len(lq_orphans) > _SHOW else ""}')
        if gt_orphans:
            parts.append(f'{len(gt_orphans)} image(s) in {gt_where} have no input partner in {lq_where}: '
                         f'{", ".join(gt_orphans[:_SHOW])}{" ..." if len(gt_orphans) > _SHOW else ""}')
        hint = '' if filename_tmpl == '{}' else f' (input names are filename_tmpl {filename_tmpl!r} of the gt name)'
        raise ValueError('unmatched images: ' + '; '.join(parts) + hint)
    return [(lq_table[lq_stem], gt_table[gt_stem]) for lq_stem, gt_stem in sorted(expected.items(),
                                                                                   key=lambda kv: kv[1])]


_LMDB_ENVS: dict = {}  # real path -> environment opened by this process: lmdb allows one per file per process


def _close_inherited_lmdb() -> None:
    """In a forked child: close the parent's environments, which the child must not use, so it can open its own."""
    # py-lmdb refuses to reopen a file while an inherited handle is open; without a lock file
    # (lock=False) closing only unmaps the child's copy and cannot disturb the parent.
    envs = list(_LMDB_ENVS.values())
    _LMDB_ENVS.clear()
    for env in envs:
        env.close()


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_close_inherited_lmdb)


def _open_lmdb(path: str):
    key = os.path.realpath(path)
    env = _LMDB_ENVS.get(key)
    if env is None:
        import lmdb
        # lock=False: no lock file shared with forked children, so _close_inherited_lmdb is safe there
        env = lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False)
        _LMDB_ENVS[key] = env
    return env


class _LmdbReader:
    """Reads records of one lmdb file; the environment opens lazily so each worker process gets its own.

    Only the path is kept (pickles for spawned workers); open environments live in ``_LMDB_ENVS``.
    """

    def __init__(self, path: str):
        self.path = path

    def get(self, key: str) -> bytes:
        with _open_lmdb(self.path).begin(write=False) as txn:
            buf = txn.get(key.encode('ascii'))
        if buf is None:
            raise KeyError(f'lmdb {self.path} has no record {key!r} (listed in its meta_info.txt)')
        return buf


@DATASET_REGISTRY.register()
class PairedRestorationDataset(Dataset):
    """Aligned (lq, gt) image pairs for restoration at scale 1: deraining, denoising, deblurring.

    Pairs are matched by name (lq name = ``filename_tmpl.format(gt name)``, extensions may differ).
    Training takes the same random ``gt_size`` crop of both, then one flip/rotation; validation and
    test return whole images. ``io_backend`` is ``{'type': 'disk'}`` or ``{'type': 'lmdb'}`` (both roots
    then end in ``.lmdb``, made by ``scripts/create_lmdb.py``). ``meta_info_file`` lists the gt names
    to use. Items: ``lq``, ``gt`` float32 (3, H, W) RGB in [0, 1], ``lq_path``, ``gt_path``.
    """

    def __init__(self, dataroot_gt: str, dataroot_lq: str, io_backend: Mapping | None = None,
                 meta_info_file: str | None = None, filename_tmpl: str = '{}', gt_size: int | None = None,
                 use_hflip: bool = True, use_rot: bool = True, phase: str = 'train'):
        super().__init__()
        if phase not in PHASES:
            raise ValueError(f'phase: {phase!r} is not one of {", ".join(PHASES)}')
        backend = dict(io_backend or {'type': 'disk'})
        kind = backend.pop('type', 'disk')
        if kind not in ('disk', 'lmdb'):
            raise ValueError(f'io_backend.type: {kind!r} is not one of disk, lmdb')
        if backend:
            raise ValueError(f'io_backend: unknown key(s) {", ".join(sorted(backend))}; only "type" is read')
        if phase == 'train' and gt_size is None:
            raise ValueError('gt_size: training crops need a size (e.g. gt_size: 256)')
        if gt_size is not None and (int(gt_size) != gt_size or gt_size < 1):
            raise ValueError(f'gt_size: expected a positive integer, got {gt_size!r}')
        self.gt_root, self.lq_root = str(dataroot_gt), str(dataroot_lq)
        self.backend, self.filename_tmpl, self.phase = kind, filename_tmpl, phase
        self.gt_size = None if gt_size is None else int(gt_size)
        self.use_hflip, self.use_rot = bool(use_hflip), bool(use_rot)
        if kind == 'lmdb':
            self.pairs = self._lmdb_pairs(meta_info_file)
            self._readers = {'lq': _LmdbReader(self.lq_root), 'gt': _LmdbReader(self.gt_root)}
        else:
            self.pairs = self._disk_pairs(meta_info_file)
            self._readers = None
        logger.info('PairedRestorationDataset (%s, %s): %d pairs from %s and %s', phase, kind, len(self.pairs),
                    self.lq_root, self.gt_root)

    # ---------------------------------------------------------------------------------------- listing
    def _disk_pairs(self, meta_info_file: str | None) -> list:
        for key, root in (('dataroot_gt', self.gt_root), ('dataroot_lq', self.lq_root)):
            if not Path(root).is_dir():
                raise FileNotFoundError(f'{key}: folder does not exist: {root}')
        lq_names = [p.name for p in list_images(self.lq_root)]
        if meta_info_file is not None:
            gt_names = read_meta_info(meta_info_file)
            missing = [n for n in gt_names if not (Path(self.gt_root) / n).is_file()]
            if missing:
                raise FileNotFoundError(f'{len(missing)} image(s) listed in {meta_info_file} are not in '
                                        f'{self.gt_root}: {", ".join(missing[:_SHOW])}')
            wanted = {self.filename_tmpl.format(_stem(n)) for n in gt_names}
            lq_names = [n for n in lq_names if _stem(n) in wanted]
        else:
            gt_names = [p.name for p in list_images(self.gt_root)]
        for key, root, names in (('dataroot_gt', self.gt_root, gt_names), ('dataroot_lq', self.lq_root, lq_names)):
            if not names:
                raise ValueError(f'{key}: no images ({" ".join(IMAGE_EXTENSIONS)}) in {root}')
        pairs = match_pairs(gt_names, lq_names, self.filename_tmpl,
                            gt_where=f'dataroot_gt ({self.gt_root})', lq_where=f'dataroot_lq ({self.lq_root})')
        return [(os.path.join(self.lq_root, lq), os.path.join(self.gt_root, gt)) for lq, gt in pairs]

    def _lmdb_pairs(self, meta_info_file: str | None) -> list:
        for key, root in (('dataroot_gt', self.gt_root), ('dataroot_lq', self.lq_root)):
            if not root.rstrip('/').endswith('.lmdb'):
                raise ValueError(f'{key}: io_backend lmdb needs a path ending in .lmdb, got {root}')
            if not (Path(root) / 'data.mdb').is_file():
                raise FileNotFoundError(f'{key}: not an lmdb (no data.mdb) at {root}; make one with '
                                        f'scripts/create_lmdb.py')
        gt_names = read_meta_info(meta_info_file or Path(self.gt_root) / 'meta_info.txt')
        lq_names = read_meta_info(Path(self.lq_root) / 'meta_info.txt')
        if meta_info_file is not None:
            wanted = {self.filename_tmpl.format(_stem(n)) for n in gt_names}
            lq_names = [n for n in lq_names if _stem(n) in wanted]
        pairs = match_pairs(gt_names, lq_names, self.filename_tmpl,
                            gt_where=f'dataroot_gt ({self.gt_root})', lq_where=f'dataroot_lq ({self.lq_root})')
        return [(_stem(lq), _stem(gt)) for lq, gt in pairs]  # lmdb keys are names without extension

    # -------------------------------------------------------------------------------------- reading
    def _read(self, which: str, name: str):
        if self._readers is None:
            return read_image(name), name
        root = self.lq_root if which == 'lq' else self.gt_root
        shown = f'{root}/{name}'
        try:
            buf = self._readers[which].get(name)
        except KeyError as err:
            raise ValueError(str(err.args[0])) from None
        return decode_image(buf, shown), shown

    def __getitem__(self, index: int) -> dict:
        lq_name, gt_name = self.pairs[index]
        lq, lq_path = self._read('lq', lq_name)
        gt, gt_path = self._read('gt', gt_name)
        check_pair_sizes(lq, gt, lq_path, gt_path)
        if self.phase == 'train':
            gt, lq = random_crop_pair(gt, lq, self.gt_size, gt_path)
            gt, lq = augment_pair(gt, lq, self.use_hflip, self.use_rot)
        return {'lq': to_tensor(lq), 'gt': to_tensor(gt), 'lq_path': lq_path, 'gt_path': gt_path}

    def __len__(self) -> int:
        return len(self.pairs)
