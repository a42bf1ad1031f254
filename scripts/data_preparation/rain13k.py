"""Rain13k (training) and the five deraining test sets, from the layout MPRNet distributes, into ours.

    python scripts/data_preparation/rain13k.py --input RAW --output datasets/Rain13k

RAW (the unpacked "Datasets" folder):
    train/Rain13K/{input,target}/*            13,712 pairs, same file names on both sides
    test/{Test100,Rain100H,Rain100L,Test2800,Test1200}/{input,target}/*
Ours:
    datasets/Rain13k/train/{input,target}/*
    datasets/Rain13k/test/<set>/{input,target}/*
Each pair is checked (both readable, same size) and copied as it is. Original Rain100L/H names
(rain-001.png beside norain-001.png) are paired too. Files already in place are skipped.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from drcnet.data.image_io import list_images  # noqa: E402
from drcnet.data.preparation import (LayoutError, PairTask, default_workers, expect_dir, match_by_stem,  # noqa: E402
                                     prepare_pair, run_tasks, summarize)

TEST_SETS = ('Test100', 'Rain100H', 'Rain100L', 'Test2800', 'Test1200')


def _rain_aliases(stem: str) -> list:
    # the original Rain100L/H releases name the clean image norain-N and the rainy one rain-N
    return [stem.replace('norain', 'rain', 1)] if stem.startswith('norain') else []


def _split_tasks(src: Path, dst: Path, what: str) -> list:
    inputs = list_images(expect_dir(src / 'input', what))
    targets = list_images(expect_dir(src / 'target', what))
    if not targets:
        raise LayoutError(f'{what}: no images in {src / "target"}')
    pairs = match_by_stem(inputs, targets, f'{what} ({src})', aliases=_rain_aliases)
    return [PairTask(lq, gt, dst / 'input', dst / 'target', gt.stem) for lq, gt in pairs]


def build_tasks(raw: Path, out: Path, splits: list, test_sets: list) -> list:
    """Every copy task; a LayoutError names the first expected path that is missing."""
    tasks = []
    if 'train' in splits:
        tasks += _split_tasks(raw / 'train' / 'Rain13K', out / 'train', 'Rain13K training set')
    if 'test' in splits:
        present = [name for name in test_sets if (raw / 'test' / name).is_dir()]
        if not present:
            raise LayoutError(f'deraining test sets: expected at least one of '
                              f'{", ".join(str(raw / "test" / n) for n in test_sets)} (none found)')
        for name in present:
            tasks += _split_tasks(raw / 'test' / name, out / 'test' / name, f'{name} test set')
    return tasks


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', required=True, type=Path, help='the unpacked MPRNet "Datasets" folder')
    parser.add_argument('--output', default=Path('datasets/Rain13k'), type=Path)
    parser.add_argument('--splits', nargs='+', default=['train', 'test'], choices=['train', 'test'])
    parser.add_argument('--test-sets', nargs='+', default=list(TEST_SETS), choices=TEST_SETS)
    parser.add_argument('--workers', type=int, default=default_workers())
    args = parser.parse_args(argv)
    try:
        expect_dir(args.input, 'deraining data')
        tasks = build_tasks(args.input, args.output, args.splits, args.test_sets)
    except (LayoutError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    results = run_tasks(prepare_pair, tasks, args.workers, 'Rain13k')
    message, failures = summarize(results, f'Rain13k -> {args.output}')
    print(message)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
