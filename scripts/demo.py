"""`make demo`: train the small demo DRCNet on degraded sample photographs, then score held-out ones.

    python scripts/demo.py [--opt options/demo.yml] [--force_yml train:total_iter=100]

Prints input-vs-restored PSNR/SSIM per held-out image and writes, under results/<name>/, the restored
images, side-by-side pictures (degraded | restored | clean) and metrics.{json,csv,md}.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drcnet.accel import reuse_freed_cpu_memory  # noqa: E402
from drcnet.data.image_io import side_by_side, write_image  # noqa: E402
from drcnet.data.loader import build_dataset  # noqa: E402
from drcnet.engine.context import init_context  # noqa: E402
from drcnet.engine.evaluator import score, to_uint8  # noqa: E402
from drcnet.engine.logger import setup_logger  # noqa: E402
from drcnet.engine.options import apply_overrides, load_yaml  # noqa: E402
from drcnet.engine.schema import validate  # noqa: E402
from drcnet.inference.tiling import restore  # noqa: E402
from drcnet.metrics.report import markdown_table, write_report  # noqa: E402
from drcnet.train import train  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--opt', default=str(ROOT / 'options' / 'demo.yml'))
    parser.add_argument('--force_yml', nargs='+', default=None)
    args = parser.parse_args(argv)
    opts = validate(apply_overrides(load_yaml(args.opt), args.force_yml))
    setup_logger(None)
    ctx = init_context('none', opts['device'])
    if ctx.device.type == 'cpu':
        reuse_freed_cpu_memory()  # twice as fast a CPU training step (README, Speed)
    start = time.time()
    summary = train(opts, ctx)
    net = summary['model'].inference_net()

    out_dir = Path(opts['path']['results_root']) / opts['name']
    val_cfg = opts['datasets']['val']
    dataset, _ = build_dataset(val_cfg, 'datasets.val', phase='val')
    rows = []
    for i in range(len(dataset)):
        item = dataset[i]
        lq, gt = item['lq'][None], item['gt'][None]
        restored = to_uint8(restore(net, lq.to(ctx.device)).float()[0])
        degraded, clean = to_uint8(lq[0]), to_uint8(gt[0])
        before = score(degraded, clean, opts['val']['metrics'], val_cfg['test_y_channel'])
        after = score(restored, clean, opts['val']['metrics'], val_cfg['test_y_channel'])
        name = Path(str(item['lq_path'])).name
        write_image(out_dir / f'{name}_restored.png', restored.astype(np.float32) / 255)
        write_image(out_dir / f'{name}_degraded_restored_clean.png',
                    side_by_side(degraded, restored, clean).astype(np.float32) / 255)
        rows.append({'dataset': name, 'protocol': 'Y' if val_cfg['test_y_channel'] else 'RGB', 'images': 1,
                     'input_psnr': before['psnr'], 'input_ssim': before['ssim'],
                     'psnr': after['psnr'], 'ssim': after['ssim']})
    result = write_report(rows, out_dir, meta={'trained_iterations': summary['iter'],
                                               'minutes': round((time.time() - start) / 60, 1)})
    print(f'\nDRCNet demo: {summary["iter"]} iterations in {(time.time() - start) / 60:.1f} min; '
          f'held-out photographs (input = degraded, psnr/ssim = restored):\n')
    print(markdown_table(result['rows']))
    print(f'\npictures and metrics in {out_dir}/')
    return 0


if __name__ == '__main__':
    sys.exit(main())
