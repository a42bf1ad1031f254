"""Denoise the DND sRGB benchmark and write the files its server expects.

    python scripts/dnd_submission.py --dnd datasets/DND --weights W.pth --out results/DND [--tta] [--tile 256]

DND publishes no clean images: upload the files of OUT/bundled/ to the benchmark's site. The network
options come from the checkpoint (ours record them), else --opt, else --task (default denoise).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drcnet.engine.checkpoint import CheckpointError, load_file, load_network  # noqa: E402
from drcnet.engine.device import pick_device  # noqa: E402
from drcnet.engine.logger import setup_logger  # noqa: E402
from drcnet.inference.dnd import denoise_dnd  # noqa: E402
from drcnet.inference.presets import TASKS  # noqa: E402
from drcnet.infer import UsageError, network_options  # noqa: E402
from drcnet.registry import ARCH_REGISTRY, build  # noqa: E402

logger = logging.getLogger('basicsr')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dnd', required=True, help='folder with info.mat and images_srgb/')
    parser.add_argument('--weights', required=True)
    parser.add_argument('--out', default='results/DND')
    parser.add_argument('--opt', help='YAML whose network_g gives the network options')
    parser.add_argument('--task', choices=TASKS, default='denoise')
    parser.add_argument('--param-key', default='auto', choices=('auto', 'params', 'params_ema'))
    parser.add_argument('--tile', type=int, default=None)
    parser.add_argument('--tile-overlap', type=int, default=32)
    parser.add_argument('--tta', action='store_true')
    parser.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto')
    args = parser.parse_args(argv)
    setup_logger(None)
    try:
        ckpt = load_file(args.weights)
        opts, source = network_options(ckpt, args.opt, args.task)
        logger.info(f'network options from {source}: {opts}')
        net = build(ARCH_REGISTRY, opts, where='network_g')
        load_network(net, args.weights, param_key=args.param_key, strict=True, ckpt=ckpt)
        device = pick_device(args.device)
        upload = denoise_dnd(net.to(device).eval(), args.dnd, args.out, tile=args.tile, overlap=args.tile_overlap,
                             tta=args.tta, device=device)
    except (CheckpointError, UsageError, ValueError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f'DND submission files in {upload}/ (upload them to the benchmark site)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
