"""python -m drcnet.convert_checkpoint IN OUT: rewrite a trusted checkpoint that holds Python objects as a
tensors-only file (a module of its own, so that running it does not re-import drcnet.engine.checkpoint)."""
from __future__ import annotations

import argparse
import sys

from drcnet.engine.checkpoint import CheckpointError, convert_checkpoint


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m drcnet.convert_checkpoint',
        description='Load IN with weights_only=False (this runs code stored in the file: only for files you '
                    'trust) and write its tensors, numbers, strings and containers to OUT, which drcnet loads '
                    'without running code. Modules and optimisers become their state dicts.')
    parser.add_argument('input', metavar='IN')
    parser.add_argument('output', metavar='OUT')
    args = parser.parse_args(argv)
    try:
        report = convert_checkpoint(args.input, args.output)
    except CheckpointError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f'wrote {args.output}: {report["tensors"]} tensors')
    if report['dropped']:
        print(f'not kept (no tensors or plain values inside): {", ".join(report["dropped"])}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
