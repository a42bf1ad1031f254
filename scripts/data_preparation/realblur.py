"""RealBlur-J and RealBlur-R (real camera blur) from their published lists into our layout.

    python scripts/data_preparation/realblur.py --input RAW/RealBlur --output datasets/RealBlur

RAW (RealBlur as published):
    RealBlur_J_test_list.txt, RealBlur_R_test_list.txt (and *_train_list.txt): lines "gt_path blur_path",
        e.g. RealBlur-J_ECC_IMCORR_centroid_itensity_ref/scene230/gt/gt_1.png
             RealBlur-J_ECC_IMCORR_centroid_itensity_ref/scene230/blur/blur_1.png
    the folders those paths name, relative to RAW
Ours:
    datasets/RealBlur/RealBlur_J/test/{input,target}/<scene>_<n>.png   (980 test pairs each; _R alike)
Pairs are checked (readable, same size) and copied; files already in place are skipped.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from drcnet.data.preparation import (LayoutError, PairTask, default_workers, expect_dir, expect_file,  # noqa: E402
                                     prepare_pair, run_tasks, summarize)


def pair_name(blur_path: str) -> str:
    """'.../scene230/blur/blur_1.png' -> 'scene230_1'."""
    parts = Path(blur_path).parts
    scene = parts[-3] if len(parts) >= 3 else 'scene'
    number = re.sub(r'^(blur|gt)_?', '', Path(blur_path).stem)
    return f'{scene}_{number}'


def read_list(raw: Path, list_file: Path) -> list:
    """(blur, gt) absolute paths from a RealBlur list; each named file must exist."""
    pairs = []
    for number, line in enumerate(list_file.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise LayoutError(f'{list_file}, line {number}: expected "gt_path blur_path", got {line!r}')
        gt, blur = fields[0], fields[1]
        if '/blur/' in gt and '/gt/' in blur:  # tolerate the two columns swapped
            gt, blur = blur, gt
        pairs.append((expect_file(raw / blur, f'{list_file.name}, line {number}'),
                      expect_file(raw / gt, f'{list_file.name}, line {number}'), pair_name(blur)))
    if not pairs:
        raise LayoutError(f'{list_file}: the list is empty')
    return pairs


def build_tasks(raw: Path, out: Path, variants: list, splits: list) -> list:
    tasks = []
    for variant in variants:
        for split in splits:
            list_file = expect_file(raw / f'RealBlur_{variant}_{split}_list.txt', f'RealBlur-{variant} {split} list')
            dst = out / f'RealBlur_{variant}' / split
            names = set()
            for blur, gt, name in read_list(raw, list_file):
                if name in names:
                    raise LayoutError(f'{list_file}: two pairs would both be named {name!r}')
                names.add(name)
                tasks.append(PairTask(blur, gt, dst / 'input', dst / 'target', name))
    return tasks


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', required=True, type=Path, help='the RealBlur folder holding the list files')
    parser.add_argument('--output', default=Path('datasets/RealBlur'), type=Path)
    parser.add_argument('--variants', nargs='+', default=['J', 'R'], choices=['J', 'R'])
    parser.add_argument('--splits', nargs='+', default=['test'], choices=['train', 'test'])
    parser.add_argument('--workers', type=int, default=default_workers())
    args = parser.parse_args(argv)
    try:
        expect_dir(args.input, 'RealBlur')
        tasks = build_tasks(args.input, args.output, args.variants, args.splits)
    except (LayoutError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    message, failures = summarize(run_tasks(prepare_pair, tasks, args.workers, 'RealBlur'),
                                  f'RealBlur -> {args.output}')
    print(message)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
