"""SIDD (smartphone denoising): SIDD-Medium sRGB training crops and the validation blocks, into our layout.

    python scripts/data_preparation/sidd.py --input RAW --output datasets/SIDD

RAW holds what the SIDD site publishes, unpacked:
    SIDD_Medium_Srgb/Data/<scene>/<id>_NOISY_SRGB_010.PNG, <id>_GT_SRGB_010.PNG (and _011)   160 scenes, 320 pairs
    ValidationNoisyBlocksSrgb.mat, ValidationGtBlocksSrgb.mat   (40, 32, 256, 256, 3) uint8 each
Ours:
    datasets/SIDD/train/{input_crops,gt_crops}/<id>_<take>_sNNN.png   512x512 crops every 384 pixels
    datasets/SIDD/val/{input,gt}/<i>_<j>.png                          the 1,280 256x256 validation blocks
Crops cover each image whole (the last row and column sit flush with the border). Files already in
place are skipped; ``--crop-size`` and ``--step`` change the crops.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from drcnet.data.preparation import (BlockTask, LayoutError, PairTask, default_workers, expect_dir,  # noqa: E402
                                     expect_file, load_mat_array, prepare_pair, run_tasks, summarize,
                                     write_blocks)

VAL_FILES = {'noisy': ('ValidationNoisyBlocksSrgb.mat', 'ValidationNoisyBlocksSrgb'),
             'gt': ('ValidationGtBlocksSrgb.mat', 'ValidationGtBlocksSrgb')}


def find_medium(raw: Path) -> Path:
    """The ``Data`` folder of SIDD-Medium sRGB inside ``raw`` (or ``raw`` is that folder or its parent)."""
    for candidate in (raw / 'SIDD_Medium_Srgb' / 'Data', raw / 'Data', raw):
        if candidate.is_dir() and any(candidate.glob('*/*_GT_SRGB_*.PNG')):
            return candidate
    raise LayoutError(f'SIDD-Medium sRGB: expected the folder {raw / "SIDD_Medium_Srgb" / "Data"} with one '
                      f'folder per scene holding <id>_NOISY_SRGB_010.PNG and <id>_GT_SRGB_010.PNG (not found)')


def train_tasks(raw: Path, out: Path, crop: int, step: int) -> list:
    tasks = []
    for scene in sorted(p for p in find_medium(raw).iterdir() if p.is_dir()):
        for gt in sorted(scene.glob('*_GT_SRGB_*.PNG')):
            noisy = gt.with_name(gt.name.replace('_GT_SRGB_', '_NOISY_SRGB_'))
            expect_file(noisy, f'SIDD scene {scene.name}')
            name = gt.stem.replace('_GT_SRGB', '')  # 0001_GT_SRGB_010 -> 0001_010
            tasks.append(PairTask(noisy, gt, out / 'train' / 'input_crops', out / 'train' / 'gt_crops', name,
                                  crop, step))
    if not tasks:
        raise LayoutError(f'SIDD-Medium sRGB: no <id>_GT_SRGB_*.PNG files under {find_medium(raw)}')
    return tasks


def val_tasks(raw: Path, out: Path) -> list:
    arrays = {}
    for kind, (file_name, key) in VAL_FILES.items():
        arrays[kind] = load_mat_array(expect_file(raw / file_name, 'SIDD validation blocks'), key)
    noisy, gt = arrays['noisy'], arrays['gt']
    if noisy.shape != gt.shape or noisy.ndim != 5 or noisy.shape[-1] != 3:
        raise LayoutError(f'SIDD validation blocks: expected two (images, blocks, H, W, 3) arrays of one shape, '
                          f'got {noisy.shape} and {gt.shape}')
    return [BlockTask(i, noisy[i], gt[i], out / 'val' / 'input', out / 'val' / 'gt') for i in range(noisy.shape[0])]


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', required=True, type=Path, help='folder holding SIDD_Medium_Srgb and the .mat files')
    parser.add_argument('--output', default=Path('datasets/SIDD'), type=Path)
    parser.add_argument('--splits', nargs='+', default=['train', 'val'], choices=['train', 'val'])
    parser.add_argument('--crop-size', type=int, default=512)
    parser.add_argument('--step', type=int, default=384)
    parser.add_argument('--workers', type=int, default=default_workers())
    args = parser.parse_args(argv)
    failures = 0
    try:
        expect_dir(args.input, 'SIDD data')
        jobs = []
        if 'train' in args.splits:
            jobs.append(('SIDD train crops', prepare_pair, train_tasks(args.input, args.output, args.crop_size,
                                                                        args.step)))
        if 'val' in args.splits:
            jobs.append(('SIDD validation blocks', write_blocks, val_tasks(args.input, args.output)))
    except (LayoutError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    for what, func, tasks in jobs:
        message, failed = summarize(run_tasks(func, tasks, args.workers, what), f'{what} -> {args.output}')
        print(message)
        failures += failed
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
