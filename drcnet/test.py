"""drcnet-test / python test.py -opt options/test/<task>.yml: a PSNR/SSIM table per benchmark."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

import drcnet  # noqa: F401  (registers every component)
from drcnet.accel import accelerate, reuse_freed_cpu_memory
from drcnet.data.loader import build_loader
from drcnet.engine.checkpoint import CheckpointError, load_network
from drcnet.engine.context import init_context, shutdown
from drcnet.engine.evaluator import evaluate
from drcnet.engine.logger import setup_logger
from drcnet.engine.options import build_parser, parse_options
from drcnet.engine.preflight import check_paths
from drcnet.engine.schema import OptionError
from drcnet.inference.tiling import restore
from drcnet.metrics.report import write_report
from drcnet.registry import ARCH_REGISTRY, build

logger = logging.getLogger('basicsr')


def run_tests(opts: dict, device: torch.device) -> dict:
    """Evaluate ``network_g`` with ``path.pretrain_network_g`` on every dataset of ``opts``."""
    weights = opts['path']['pretrain_network_g']
    if not weights:
        raise OptionError('path.pretrain_network_g: the checkpoint to evaluate is missing')
    if not Path(weights).is_file():
        raise OptionError(f'path.pretrain_network_g: no file at {weights} (put the weights there or give another path)')
    net = build(ARCH_REGISTRY, opts['network_g'], where='network_g')
    report = load_network(net, weights, param_key=opts['path']['param_key_g'], strict=opts['path']['strict_load_g'])
    if device.type == 'cpu':
        reuse_freed_cpu_memory()  # process-wide, so the command's choice, never a library side effect
    net = accelerate(net.to(device), device)
    val = opts['val']
    out_dir = Path(opts['path']['results_root']) / opts['name']
    rows = []
    for name, cfg in opts['datasets'].items():
        _, loader = build_loader(cfg, f'datasets.{name}', seed=opts['manual_seed'] or 0, device=device)

        def restore_fn(lq):
            return restore(net, lq.to(device), tile=val['tile'], overlap=val['tile_overlap'], tta=val['tta']).float()

        row = evaluate(restore_fn, loader, cfg['name'], val['metrics'], test_y_channel=cfg['test_y_channel'],
                       save_dir=out_dir if val['save_img'] else None, suffix=val['suffix'], pbar=val['pbar'],
                       protocol=cfg['protocol'])
        logger.info(f"{cfg['name']}: PSNR {row.get('psnr', float('nan')):.2f} SSIM {row.get('ssim', float('nan')):.4f} "
                    f"({row['protocol']}, {row['images']} images, {row['seconds']:.1f}s)")
        rows.append(row)
    meta = {'checkpoint': str(weights), 'param_key': report['param_key'],
            'protocol': "PSNR/SSIM by basicsr on 8-bit images; Y = the 8-bit Y of MATLAB's rgb2ycbcr (deraining), "
                        'RGB = all three channels; RealBlur-ECC = RealBlur\'s protocol (aligned to the ground truth '
                        'by ECC, scored inside the covered region)',
            'tile': val['tile'], 'tta': val['tta']}
    result = write_report(rows, out_dir, meta)
    result['out_dir'] = out_dir
    return result


def main(argv=None) -> int:
    args = build_parser('Evaluate a trained network on benchmark test sets.', is_train=False).parse_args(argv)
    setup_logger(None)
    try:
        opts = parse_options(args, is_train=False)
        check_paths(opts, is_train=False)
        ctx = init_context('none', opts['device'])
        setup_logger(Path(opts['path']['results_root']) / opts['name'] / 'test.log')
        result = run_tests(opts, ctx.device)
    except (OptionError, CheckpointError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(result['markdown'])
    print(f"written: {result['out_dir'] / 'metrics.json'}, metrics.csv, metrics.md")
    shutdown(ctx)
    return 0


if __name__ == '__main__':
    sys.exit(main())
