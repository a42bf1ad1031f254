"""HIDE (human-aware deblurring) test set from its published layout into ours.

    python scripts/data_preparation/hide.py --input RAW/HIDE_dataset --output datasets/HIDE

RAW, either HIDE as published:
    GT/<name>.png                                          sharp frames (training and test)
    test/test-close-ups/<name>.png, test/test-long-shot/<name>.png   2,025 blurred test frames
    train/<name>.png                                       blurred training frames (with --splits train)
or a folder already split into {input,target}/ (as MPRNet distributes test/HIDE).
Ours:
    datasets/HIDE/test/{input,target}/<name>.png   (and train/{input,target} when asked)
Pairs are checked (readable, same size) and copied; files already in place are skipped.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from drcnet.data.image_io import list_images  # noqa: E402
from drcnet.data.preparation import (LayoutError, PairTask, default_workers, expect_dir, match_by_stem,  # noqa: E402
                                     prepare_pair, run_tasks, summarize)

TEST_PARTS = ('test-close-ups', 'test-long-shot')


def build_tasks(raw: Path, out: Path, splits: list) -> list:
    if (raw / 'input').is_dir() and (raw / 'target').is_dir() and not (raw / 'GT').is_dir():
        pairs = match_by_stem(list_images(raw / 'input'), list_images(raw / 'target'), f'HIDE ({raw})')
        return [PairTask(lq, gt, out / 'test' / 'input', out / 'test' / 'target', gt.stem) for lq, gt in pairs]
    if not (raw / 'GT').is_dir():
        raise LayoutError(f'HIDE: expected the folder {raw / "GT"} beside {raw / "test"} (as published), '
                          f'or {raw / "input"} and {raw / "target"} (not found)')
    sharp = {p.stem: p for p in list_images(raw / 'GT')}
    tasks = []
    for split in splits:
        if split == 'test':
            blurred = []
            for part in TEST_PARTS:
                blurred += list_images(expect_dir(raw / 'test' / part, 'HIDE test set'))
        else:
            blurred = list_images(expect_dir(raw / 'train', 'HIDE training set'))
        missing = [p.name for p in blurred if p.stem not in sharp]
        if missing:
            raise LayoutError(f'HIDE {split}: {len(missing)} blurred frame(s) have no sharp frame in {raw / "GT"}: '
                              f'{", ".join(missing[:5])}')
        tasks += [PairTask(p, sharp[p.stem], out / split / 'input', out / split / 'target', p.stem) for p in blurred]
    return tasks


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', required=True, type=Path, help='the HIDE_dataset folder')
    parser.add_argument('--output', default=Path('datasets/HIDE'), type=Path)
    parser.add_argument('--splits', nargs='+', default=['test'], choices=['train', 'test'])
    parser.add_argument('--workers', type=int, default=default_workers())
    args = parser.parse_args(argv)
    try:
        expect_dir(args.input, 'HIDE')
        tasks = build_tasks(args.input, args.output, args.splits)
    except (LayoutError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    message, failures = summarize(run_tasks(prepare_pair, tasks, args.workers, 'HIDE'), f'HIDE -> {args.output}')
    print(message)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
