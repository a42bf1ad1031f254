"""DND (Darmstadt Noise Dataset, sRGB): check the published files and copy them into our layout.

    python scripts/data_preparation/dnd.py --input RAW/dnd_2017 --output datasets/DND

RAW (dnd_2017 as published; MATLAB v7.3 files):
    info.mat                 struct "info" with "boundingboxes": per image, 20 boxes [top left bottom right], 1-based
    images_srgb/0001.mat ... 0050.mat    each holds "InoisySRGB" (H x W x 3, float in [0, 1])
Ours: the same files under datasets/DND/ (info.mat, images_srgb/). DND has no public ground truth:
`drcnet/inference/dnd.py` restores the 1,000 boxes and writes the submission files for the
benchmark's site. Every image is checked (variable present, boxes inside it); copies already in place
are skipped.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from drcnet.data.preparation import (DndTask, LayoutError, copy_file, default_workers, expect_dir,  # noqa: E402
                                     expect_file, prepare_dnd_image, read_dnd_boxes, run_tasks, summarize)


def build_tasks(raw: Path, out: Path) -> list:
    boxes = read_dnd_boxes(expect_file(raw / 'info.mat', 'DND'))
    if not boxes:
        raise LayoutError(f'{raw / "info.mat"}: lists no images')
    images = expect_dir(raw / 'images_srgb', 'DND')
    tasks = []
    for i, image_boxes in enumerate(boxes, 1):
        src = expect_file(images / f'{i:04d}.mat', f'DND image {i} of {len(boxes)}')
        tasks.append(DndTask(src, out / 'images_srgb' / src.name, image_boxes))
    return tasks


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', required=True, type=Path, help='the dnd_2017 folder')
    parser.add_argument('--output', default=Path('datasets/DND'), type=Path)
    parser.add_argument('--workers', type=int, default=default_workers())
    args = parser.parse_args(argv)
    try:
        expect_dir(args.input, 'DND')
        tasks = build_tasks(args.input, args.output)
    except (LayoutError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    results = run_tasks(prepare_dnd_image, tasks, args.workers, 'DND')
    message, failures = summarize(results, f'DND -> {args.output}')
    if not failures:
        copy_file(args.input / 'info.mat', args.output / 'info.mat')  # last: its presence marks a complete copy
    print(message)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
