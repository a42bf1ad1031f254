"""Helpers for ``scripts/data_preparation`` and ``scripts/create_lmdb.py``: layouts, crops, parallel work.

Every output file is written under a temporary name and renamed, so an interrupted run leaves only
whole files, and a rerun skips what exists.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from drcnet.data.image_io import ImageReadError, read_image, write_image

__all__ = ['BlockTask', 'DndTask', 'LayoutError', 'PairTask', 'Result', 'copy_file', 'crop_names', 'crop_positions',
           'default_workers', 'encode_for_lmdb', 'expect_dir', 'expect_file', 'image_size', 'load_mat_array',
           'match_by_stem', 'prepare_dnd_image', 'prepare_pair', 'read_dnd_boxes', 'run_tasks', 'summarize',
           'write_blocks']


class LayoutError(FileNotFoundError):
    """The source is not in the benchmark's published layout; the message names the path expected."""


def expect_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else a LayoutError saying where ``what`` was expected."""
    path = Path(path)
    if not path.is_dir():
        raise LayoutError(f'{what}: expected the folder {path} (not found)')
    return path


def expect_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise LayoutError(f'{what}: expected the file {path} (not found)')
    return path


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def crop_positions(length: int, crop: int, step: int) -> list:
    """Start offsets of ``crop``-long windows every ``step`` pixels, plus one flush with the far end.

    The whole length is covered, as the benchmark releases' sub-image extraction does (no threshold).
    A length shorter than ``crop`` is a ValueError.
    """
    if crop < 1 or step < 1:
        raise ValueError(f'crop size and step must be positive, got {crop} and {step}')
    if length < crop:
        raise ValueError(f'an image side of {length} pixels is shorter than the crop size {crop}')
    starts = list(range(0, length - crop + 1, step))
    if starts[-1] + crop < length:
        starts.append(length - crop)
    return starts


def image_size(path: Path) -> tuple:
    """(height, width) read from the file header, without decoding the pixels."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as err:  # PIL raises several types for unreadable files
        raise ImageReadError(f'cannot read image {path}: {err}') from err
    return h, w


def match_by_stem(inputs: Sequence[Path], targets: Sequence[Path], where: str,
                  aliases: Callable[[str], Iterable[str]] | None = None) -> list:
    """(input, target) pairs with equal file names without extension; ``aliases`` maps a target stem to
    other stems its input may have (e.g. 'norain-1' -> 'rain-1'). Unpaired files are a LayoutError."""
    by_stem = {p.stem: p for p in inputs}
    pairs, missing = [], []
    used = set()
    for target in sorted(targets):
        names = [target.stem] + list(aliases(target.stem) if aliases else [])
        found = next((n for n in names if n in by_stem), None)
        if found is None:
            missing.append(target.name)
        else:
            used.add(found)
            pairs.append((by_stem[found], target))
    orphans = sorted(by_stem[s].name for s in by_stem if s not in used)
    if missing or orphans:
        parts = []
        if orphans:
            parts.append(f'{len(orphans)} input image(s) without a target: {", ".join(orphans[:5])}')
        if missing:
            parts.append(f'{len(missing)} target image(s) without an input: {", ".join(missing[:5])}')
        raise LayoutError(f'{where}: ' + '; '.join(parts))
    return pairs


def copy_file(src: Path, dst: Path) -> bool:
    """Copy ``src`` to ``dst`` through a temporary name; False (nothing done) when ``dst`` exists."""
    dst = Path(dst)
    if dst.exists():
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f'.{dst.name}.{os.getpid()}.tmp')
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return True


@dataclass(frozen=True)
class PairTask:
    """One (input, target) source pair and where its outputs go.

    ``crop`` None: both files are checked (readable, same size) and copied as ``name`` + their own
    extension. Otherwise both are cut into ``crop`` squares every ``step`` pixels, written as PNG
    ``name_s001.png``, ``name_s002.png``, ... in row-major order.
    """
    lq_src: Path
    gt_src: Path
    lq_dir: Path
    gt_dir: Path
    name: str
    crop: int | None = None
    step: int | None = None


@dataclass
class Result:
    name: str
    written: int = 0
    skipped: int = 0
    error: str | None = None


def crop_names(task: PairTask, count: int) -> list:
    """(input, target) output paths of a pair's ``count`` crops: name_s001.png, name_s002.png, ..."""
    return [(Path(task.lq_dir) / f'{task.name}_s{k:03d}.png', Path(task.gt_dir) / f'{task.name}_s{k:03d}.png')
            for k in range(1, count + 1)]


def _pair_outputs(task: PairTask) -> list:
    if task.crop is None:
        return [(Path(task.lq_dir) / f'{task.name}{Path(task.lq_src).suffix.lower()}',
                 Path(task.gt_dir) / f'{task.name}{Path(task.gt_src).suffix.lower()}')]
    h, w = image_size(task.gt_src)
    return crop_names(task, len(crop_positions(h, task.crop, task.step)) * len(crop_positions(w, task.crop, task.step)))


def prepare_pair(task: PairTask) -> Result:
    """Check one pair and write its outputs (copies or crops); existing outputs are skipped."""
    result = Result(task.name)
    try:
        outputs = _pair_outputs(task)
        if all(lq.exists() and gt.exists() for lq, gt in outputs):
            result.skipped = 2 * len(outputs)  # files, like result.written
            return result
        lq, gt = read_image(task.lq_src), read_image(task.gt_src)
        if lq.shape != gt.shape:
            raise ValueError(f'input and target differ in size: {task.lq_src} is {lq.shape[1]}x{lq.shape[0]}, '
                             f'{task.gt_src} is {gt.shape[1]}x{gt.shape[0]} (WxH)')
        if task.crop is None:
            (lq_dst, gt_dst), = outputs
            result.written += copy_file(task.lq_src, lq_dst) + copy_file(task.gt_src, gt_dst)
            return result
        h, w = gt.shape[:2]
        rows, cols = crop_positions(h, task.crop, task.step), crop_positions(w, task.crop, task.step)
        boxes = [(t, l) for t in rows for l in cols]
        if len(boxes) != len(outputs):  # header and pixels disagree (e.g. EXIF rotation)
            outputs = crop_names(task, len(boxes))
        c = task.crop
        for (t, l), (lq_dst, gt_dst) in zip(boxes, outputs):
            for img, dst in ((lq, lq_dst), (gt, gt_dst)):
                if dst.exists():
                    result.skipped += 1
                else:
                    write_image(dst, np.ascontiguousarray(img[t:t + c, l:l + c]))
                    result.written += 1
    except (OSError, ValueError) as err:
        message = str(err)
        named = str(task.gt_src) in message or str(task.lq_src) in message
        result.error = message if named else f'{task.lq_src} / {task.gt_src}: {message}'
    return result


def run_tasks(func: Callable, tasks: Sequence, workers: int, desc: str) -> list:
    """``func`` over ``tasks`` in ``workers`` processes (in this process when 1) with a progress bar."""
    from tqdm import tqdm

    results = []
    if not tasks:
        return results
    with tqdm(total=len(tasks), desc=desc, unit='item') as bar:
        if workers <= 1:
            for task in tasks:
                results.append(func(task))
                bar.update()
        else:
            with Pool(min(workers, len(tasks))) as pool:
                for result in pool.imap_unordered(func, tasks, chunksize=max(1, len(tasks) // (workers * 8))):
                    results.append(result)
                    bar.update()
    return results


def summarize(results: Sequence[Result], what: str) -> tuple:
    """(message, number of failures) for a finished run."""
    written = sum(r.written for r in results)
    skipped = sum(r.skipped for r in results)
    failed = [r for r in results if r.error]
    lines = [f'{what}: {written} file(s) written, {skipped} already there (skipped), {len(failed)} failure(s)']
    lines += [f'  FAILED {r.name}: {r.error}' for r in failed[:20]]
    if len(failed) > 20:
        lines.append(f'  ... and {len(failed) - 20} more')
    return '\n'.join(lines), len(failed)


def load_mat_array(path: Path, key: str) -> np.ndarray:
    """Array ``key`` of a MATLAB file (scipy for v5 files, h5py for v7.3, whose axes come reversed)."""
    path = Path(path)
    import scipy.io
    try:
        data = scipy.io.loadmat(str(path), variable_names=[key])
    except NotImplementedError:  # v7.3 (HDF5) file
        import h5py
        with h5py.File(path, 'r') as f:
            if key not in f:
                raise LayoutError(f'{path}: no variable {key!r}; it holds {", ".join(sorted(f.keys()))}') from None
            return np.asarray(f[key]).transpose()
    except (ValueError, OSError) as err:
        raise ImageReadError(f'cannot read MATLAB file {path}: {err}') from err
    if key not in data:
        names = sorted(k for k in scipy.io.whosmat(str(path)))
        raise LayoutError(f'{path}: no variable {key!r}; it holds {", ".join(n[0] for n in names)}')
    return data[key]


@dataclass(frozen=True)
class BlockTask:
    """Row ``index`` of SIDD-style (N, B, H, W, 3) uint8 block arrays, written as ``<index>_<b>.png``."""
    index: int
    noisy: np.ndarray
    gt: np.ndarray
    lq_dir: Path
    gt_dir: Path


def write_blocks(task: BlockTask) -> Result:
    """Write one row of noisy/clean blocks as PNG pairs; existing files are skipped."""
    result = Result(f'block row {task.index}')
    try:
        for j in range(task.noisy.shape[0]):
            name = f'{task.index:02d}_{j:02d}.png'
            for block, folder in ((task.noisy[j], task.lq_dir), (task.gt[j], task.gt_dir)):
                dst = Path(folder) / name
                if dst.exists():
                    result.skipped += 1
                else:
                    write_image(dst, np.ascontiguousarray(block))
                    result.written += 1
    except (OSError, ValueError) as err:
        result.error = str(err)
    return result


def read_dnd_boxes(info_path: Path) -> list:
    """Per-image (20, 4) arrays of 1-based [top, left, bottom, right] boxes from DND's info.mat (v7.3)."""
    import h5py
    try:
        with h5py.File(info_path, 'r') as f:
            if 'info' not in f or 'boundingboxes' not in f['info']:
                raise LayoutError(f'{info_path}: expected a struct "info" with a field "boundingboxes"')
            info = f['info']
            refs = np.asarray(info['boundingboxes']).reshape(-1)
            return [np.asarray(info[ref]).T.astype(np.int64) for ref in refs]
    except OSError as err:
        raise ImageReadError(f'cannot read {info_path} as a MATLAB v7.3 (HDF5) file: {err}') from err


@dataclass(frozen=True)
class DndTask:
    """One DND image file to check against its boxes and copy."""
    src: Path
    dst: Path
    boxes: np.ndarray


def prepare_dnd_image(task: DndTask) -> Result:
    """Check that a DND image holds 'InoisySRGB' (3 channels) covering its boxes, then copy it."""
    import h5py
    result = Result(Path(task.src).name)
    try:
        with h5py.File(task.src, 'r') as f:
            if 'InoisySRGB' not in f:
                raise LayoutError(f'{task.src}: no variable "InoisySRGB"; it holds {", ".join(sorted(f.keys()))}')
            shape = f['InoisySRGB'].shape  # stored as (3, W, H): MATLAB's axes reversed
        if len(shape) != 3 or shape[0] != 3:
            raise LayoutError(f'{task.src}: InoisySRGB has shape {shape}, expected (3, W, H)')
        width, height = shape[1], shape[2]
        boxes = task.boxes
        if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes[:, 2].max() > height or boxes[:, 3].max() > width \
                or boxes[:, :2].min() < 1:
            raise LayoutError(f'{task.src}: its bounding boxes do not fit a {width}x{height} image')
        if copy_file(task.src, task.dst):
            result.written = 1
        else:
            result.skipped = 1
    except (OSError, ValueError) as err:
        result.error = str(err)
    return result


def encode_for_lmdb(task: tuple) -> tuple:
    """(path, key, compress_level) -> (key, PNG bytes of the decoded pixels, (h, w, c)), or (key, None, error).

    The pixels are those ``read_image`` decodes (EXIF applied, alpha dropped, 8 or 16 bits kept), stored
    losslessly, so the lmdb and the folder give identical tensors.
    """
    import cv2

    from drcnet.data.image_io import decode_raw
    path, key, level = task
    try:
        raw = decode_raw(Path(path).read_bytes(), str(path))
    except (OSError, ValueError) as err:
        return key, None, str(err)
    ok, buf = cv2.imencode('.png', raw, [cv2.IMWRITE_PNG_COMPRESSION, int(level)])
    if not ok:
        return key, None, f'cannot encode {path} as PNG'
    h, w = raw.shape[:2]
    return key, buf.tobytes(), (h, w, 1 if raw.ndim == 2 else raw.shape[2])
