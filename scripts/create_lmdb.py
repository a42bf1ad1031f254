"""Pack folders of images into lmdb files (basicsr's lmdb layout, with meta_info.txt) for fast reading.

    python scripts/create_lmdb.py --input datasets/SIDD/train/input_crops datasets/SIDD/train/gt_crops

writes datasets/SIDD/train/input_crops.lmdb and gt_crops.lmdb (or the paths given with --output).
Keys are the file names without extension (the relative path with --recursive), so a paired
folder's two lmdb files share keys, as PairedRestorationDataset with io_backend lmdb expects.
Every image is stored as a lossless PNG of the pixels the folder reader decodes: the folder and
its lmdb give identical tensors. An lmdb is built under a temporary name and renamed when
complete; an existing complete one is skipped.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drcnet import _compat  # noqa: E402,F401  (before basicsr)
from basicsr.utils.lmdb_util import LmdbMaker  # noqa: E402
from drcnet.data.image_io import list_images  # noqa: E402
from drcnet.data.preparation import LayoutError, default_workers, encode_for_lmdb, image_size  # noqa: E402


def image_keys(folder: Path, recursive: bool) -> list:
    """(path, key) for every image of ``folder``, sorted by key; clashing or non-ASCII keys are errors."""
    paths = list_images(folder, recursive=recursive)
    if not paths:
        raise LayoutError(f'no images in {folder}')
    entries, seen = [], {}
    for path in paths:
        key = path.relative_to(folder).with_suffix('').as_posix()
        if not key.isascii() or ' ' in key:
            raise ValueError(f'{path}: lmdb keys must be ASCII without spaces; rename the file')
        if key in seen:
            raise ValueError(f'two images share the key {key!r}: {seen[key]} and {path}')
        seen[key] = path
        entries.append((path, key))
    return sorted(entries, key=lambda e: e[1])


def _listed_keys(lmdb_path: Path) -> list:
    meta = lmdb_path / 'meta_info.txt'
    if not meta.is_file():
        return []
    return [os.path.splitext(line.split()[0])[0] for line in meta.read_text().splitlines() if line.strip()]


def create_lmdb(folder: Path, lmdb_path: Path, recursive: bool = False, compress_level: int = 1,
                workers: int = 1, batch: int = 5000) -> str:
    """Build ``lmdb_path`` from ``folder``; returns a one-line report. Raises on bad input."""
    from tqdm import tqdm

    if not str(lmdb_path).endswith('.lmdb'):
        raise ValueError(f'--output must end with .lmdb, got {lmdb_path}')
    entries = image_keys(folder, recursive)
    keys = [key for _, key in entries]
    if lmdb_path.exists():
        if _listed_keys(lmdb_path) == keys:
            return f'{lmdb_path}: already complete ({len(keys)} images), skipped'
        raise ValueError(f'{lmdb_path} exists but does not list the images now in {folder}; remove it to rebuild')
    partial = lmdb_path.with_name(f'.{lmdb_path.stem}.incomplete.lmdb')
    if partial.exists():
        shutil.rmtree(partial)  # left by an interrupted run
    # an upper bound on the PNG sizes (lmdb reserves address space only, so a generous map is free)
    map_size = sum(h * w for h, w in (image_size(p) for p, _ in entries)) * 8 + (64 << 20)
    maker = LmdbMaker(str(partial), map_size=map_size, batch=batch, compress_level=compress_level)
    tasks = [(str(path), key, compress_level) for path, key in entries]
    errors = []
    pool = Pool(min(workers, len(tasks))) if workers > 1 else None
    try:
        results = pool.imap(encode_for_lmdb, tasks, chunksize=16) if pool else map(encode_for_lmdb, tasks)
        for key, data, info in tqdm(results, total=len(tasks), desc=f'lmdb {lmdb_path.name}', unit='image'):
            if data is None:
                errors.append(info)
                continue
            maker.put(data, key, info)
    finally:
        maker.close()
        if pool:
            pool.close()
            pool.join()
    if errors:
        shutil.rmtree(partial)
        raise ValueError(f'{len(errors)} image(s) could not be read, nothing written:\n  ' + '\n  '.join(errors[:10]))
    os.replace(partial, lmdb_path)
    return f'{lmdb_path}: {len(keys)} images from {folder}'


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', nargs='+', required=True, type=Path, help='image folder(s)')
    parser.add_argument('--output', nargs='+', type=Path, help='lmdb path(s) ending in .lmdb; default <folder>.lmdb')
    parser.add_argument('--recursive', action='store_true', help='include sub-folders (keys keep the relative path)')
    parser.add_argument('--compress-level', type=int, default=1, choices=range(10), metavar='0-9')
    parser.add_argument('--workers', type=int, default=default_workers())
    args = parser.parse_args(argv)
    outputs = args.output or [folder.parent / f'{folder.name}.lmdb' for folder in args.input]
    if len(outputs) != len(args.input):
        print(f'error: {len(args.input)} --input folder(s) but {len(outputs)} --output path(s)', file=sys.stderr)
        return 2
    status = 0
    for folder, out in zip(args.input, outputs):
        try:
            print(create_lmdb(folder, out, args.recursive, args.compress_level, args.workers))
        except (OSError, ValueError) as err:
            print(f'error: {err}', file=sys.stderr)
            status = 2
    return status


if __name__ == '__main__':
    sys.exit(main())
