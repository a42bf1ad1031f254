"""Print DRCNet's parameter count for every ablation row of paper Table 4 beside the paper's numbers.

    python scripts/count_params.py [--wf 64] [--depth 4]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drcnet.archs.drcnet_arch import DRCNet  # noqa: E402

# Paper Table 4, whole network, millions of parameters.
PAPER_MILLIONS = {'base': 12.7, 'sf': 15.4, 'ea': 13.1, 'sf_identity': 15.8, 'sf_ea': 18.6, 'dfr': 18.9}
DESCRIPTION = {
    'base': 'conv + identity (no filter, no attention)',
    'sf': 'spatial filter branch only',
    'ea': 'attention branch + identity',
    'sf_identity': 'spatial filter + identity',
    'sf_ea': 'spatial filter x attention',
    'dfr': 'full DFR block',
}


def count(block: str, wf: int, depth: int) -> int:
    return sum(p.numel() for p in DRCNet(wf=wf, depth=depth, block=block).parameters())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--wf', type=int, default=64)
    parser.add_argument('--depth', type=int, default=4)
    args = parser.parse_args(argv)
    print(f'DRCNet(wf={args.wf}, depth={args.depth}) parameters per encoder block type')
    print(f'{"block":<12} {"ours (M)":>9} {"paper (M)":>10} {"diff":>6}  encoder block')
    for block, paper in PAPER_MILLIONS.items():
        ours = count(block, args.wf, args.depth) / 1e6
        print(f'{block:<12} {ours:>9.3f} {paper:>10.1f} {ours - paper:>+6.2f}  {DESCRIPTION[block]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
