"""GoPro (dynamic-scene deblurring) from its published GOPRO_Large layout into ours.

    python scripts/data_preparation/gopro.py --input RAW/GOPRO_Large --output datasets/GoPro

RAW (GOPRO_Large, as published):
    {train,test}/<sequence>/{blur,blur_gamma,sharp}/<frame>.png    2,103 training and 1,111 test pairs
Ours:
    datasets/GoPro/train/{input_crops,target_crops}/<sequence>_<frame>_sNNN.png   512x512 crops every 256 px
    datasets/GoPro/test/{input,target}/<sequence>_<frame>.png                      whole test images
``--blur blur`` (the default, as the deblurring papers train and test) or ``--blur blur_gamma``
picks the blurred frames; the choice is written to <split>/blur_source.txt and a rerun with the
other one is refused. ``--crop-size 0`` writes whole training images to train/{input,target}.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from drcnet.data.image_io import list_images  # noqa: E402
from drcnet.data.preparation import (LayoutError, PairTask, default_workers, expect_dir, match_by_stem,  # noqa: E402
                                     prepare_pair, run_tasks, summarize)


def split_tasks(raw: Path, out: Path, split: str, blur: str, crop: int, step: int) -> list:
    root = expect_dir(raw / split, f'GoPro {split} split')
    sequences = sorted(p for p in root.iterdir() if p.is_dir())
    if not sequences:
        raise LayoutError(f'GoPro {split} split: expected sequence folders like {root / "GOPR0372_07_00"} '
                          f'holding {blur}/ and sharp/ (none found)')
    tasks = []
    cropped = split == 'train' and crop > 0
    lq_dir = out / split / ('input_crops' if cropped else 'input')
    gt_dir = out / split / ('target_crops' if cropped else 'target')
    for seq in sequences:
        blurred = list_images(expect_dir(seq / blur, f'GoPro sequence {seq.name}'))
        sharp = list_images(expect_dir(seq / 'sharp', f'GoPro sequence {seq.name}'))
        for lq, gt in match_by_stem(blurred, sharp, f'GoPro sequence {seq}'):
            tasks.append(PairTask(lq, gt, lq_dir, gt_dir, f'{seq.name}_{gt.stem}',
                                  crop if cropped else None, step if cropped else None))
    return tasks


def record_blur(out: Path, split: str, blur: str) -> None:
    """Write which blurred frames a split came from; refuse to mix blur and blur_gamma in one folder."""
    marker = out / split / 'blur_source.txt'
    if marker.exists():
        previous = marker.read_text().strip()
        if previous != blur:
            raise LayoutError(f'{out / split} was prepared from {previous!r} frames; remove it or pass '
                              f'--blur {previous} (asked for {blur!r})')
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(blur + '\n')


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', required=True, type=Path, help='the GOPRO_Large folder')
    parser.add_argument('--output', default=Path('datasets/GoPro'), type=Path)
    parser.add_argument('--splits', nargs='+', default=['train', 'test'], choices=['train', 'test'])
    parser.add_argument('--blur', default='blur', choices=['blur', 'blur_gamma'])
    parser.add_argument('--crop-size', type=int, default=512, help='training crop size; 0 keeps whole images')
    parser.add_argument('--step', type=int, default=256)
    parser.add_argument('--workers', type=int, default=default_workers())
    args = parser.parse_args(argv)
    try:
        expect_dir(args.input, 'GOPRO_Large')
        jobs = []
        for split in args.splits:
            jobs.append((split, split_tasks(args.input, args.output, split, args.blur, args.crop_size, args.step)))
        for split, _ in jobs:
            record_blur(args.output, split, args.blur)
    except (LayoutError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    failures = 0
    for split, tasks in jobs:
        what = f'GoPro {split} ({args.blur})'
        message, failed = summarize(run_tasks(prepare_pair, tasks, args.workers, what), f'{what} -> {args.output}')
        print(message)
        failures += failed
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
