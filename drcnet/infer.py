"""``drcnet-infer``: restore your own images (a file or a folder) with a trained DRCNet.

    drcnet-infer -i photos/ -o restored/ --weights net_g.pth [--tile 512] [--tta] [--compare]

Network options come from the checkpoint's ``network_g`` when it has one (ours do), else from
``--opt`` (a YAML file with ``network_g``), else from ``--task``, else the paper network.
Exit status: 0 all restored, 1 some images failed (each is named), 2 usage errors.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np


class UsageError(Exception):
    """A mistake in the command line or its files; reported without a traceback, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    from drcnet.engine.checkpoint import PARAM_KEYS
    from drcnet.inference.presets import TASKS

    p = argparse.ArgumentParser(prog='drcnet-infer', description='Restore images with a trained DRCNet.')
    p.add_argument('-i', '--input', required=True, help='an image file or a folder of images')
    p.add_argument('-o', '--output', required=True,
                   help='output folder (names mirror the input), or an image path when the input is one file')
    p.add_argument('--weights', required=True, help='checkpoint (.pth): ours, or the release\'s')
    p.add_argument('--opt', help='YAML file whose network_g gives the network options (for files without them)')
    p.add_argument('--task', choices=TASKS, help='network options of a known task (for files without them)')
    p.add_argument('--release-numerics', action='store_true',
                   help="use the release's numerics (threshold 0.8, delta 1e-4, batch region statistics)")
    p.add_argument('--param-key', choices=PARAM_KEYS, default='auto',
                   help='which weights of the checkpoint: auto = params_ema if present, else params, else '
                        "state_dict, else model (MPRNet-family and CCNet's authors' files)")
    p.add_argument('--tile', type=int, default=None, help='restore in tiles of N x N pixels (bounded memory)')
    p.add_argument('--tile-overlap', type=int, default=32, help='overlap of neighbouring tiles in pixels')
    p.add_argument('--tta', action='store_true', help='x8 self-ensemble (flips and rotations, averaged)')
    p.add_argument('--compare', action='store_true', help='also write <name>_compare.png: input | restored')
    p.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto')
    p.add_argument('--suffix', default='', help='added to output names before the extension')
    p.add_argument('--ext', default='png', help="output format: png (default), jpg, tif, bmp, or 'same' as the input")
    p.add_argument('--bits', type=int, choices=(8, 16), default=None,
                   help='bits per channel of png/tif outputs (default: as the input)')
    return p


def _read_yaml_network(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise UsageError(f'--opt: options file not found: {path}')
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8'))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UsageError(f'--opt: cannot parse {path} as YAML: {err}') from err
    net = data.get('network_g') if isinstance(data, dict) else None
    if not isinstance(net, dict):
        raise UsageError(f'--opt: {path} has no network_g mapping')
    from drcnet.engine.schema import OptionError, expand_numerics, translate_release_keys

    # the release's hin_position_left/right become sf_levels (one warning), and numerics: release its three
    # values, as for training and test options
    try:
        return expand_numerics(dict(translate_release_keys({'network_g': dict(net)})['network_g']))
    except OptionError as err:
        raise UsageError(f'--opt: {path}: {err}') from None


def network_options(ckpt: dict, opt_file: str | None, task: str | None,
                    release_numerics: bool = False) -> tuple[dict, str]:
    """(options, where they came from): checkpoint's network_g, else --opt, else --task, else the paper's."""
    from drcnet.engine.checkpoint import network_options_from
    from drcnet.inference.presets import RELEASE_NUMERICS, task_options

    opts = network_options_from(ckpt)
    if opts is not None:
        source = 'the checkpoint (network_g)'
        ignored = [flag for flag, value in (('--opt', opt_file), ('--task', task)) if value]
        if ignored:
            source += f'; {" and ".join(ignored)} ignored: the checkpoint records its network options'
    elif opt_file:
        opts, source = _read_yaml_network(Path(opt_file)), f'{opt_file} (network_g)'
    elif task:
        opts, source = task_options(task), f'the {task!r} preset'
    else:
        opts, source = task_options('paper'), 'the paper network (no --opt or --task given)'
    if release_numerics:
        opts.update(RELEASE_NUMERICS)
    return opts, source


def _output_names(inputs: list, root: Path | None, out: Path, args) -> list:
    """Output path of each input: relative path mirrored under ``out``; one-file input may name the file."""
    from drcnet.data.image_io import IMAGE_EXTENSIONS

    ext = args.ext.lower().lstrip('.')
    if ext != 'same' and f'.{ext}' not in IMAGE_EXTENSIONS:
        raise UsageError(f"--ext: {args.ext!r} is not one of same, {', '.join(e[1:] for e in IMAGE_EXTENSIONS)}")
    if root is None and out.suffix.lower() in IMAGE_EXTENSIONS:
        names = [out]
    else:
        names = [out / (path.relative_to(root) if root is not None else Path(path.name)) for path in inputs]
        names = [name.with_name(f'{name.stem}{args.suffix}{name.suffix if ext == "same" else "." + ext}')
                 for name in names]
    seen = {}
    for path, name in zip(inputs, names):
        if name.resolve() == path.resolve():
            raise UsageError(f'{path} would be overwritten by its restored image; choose another -o or --suffix')
        if name in seen:
            raise UsageError(f'{seen[name].name} and {path.name} would both be written to {name}; '
                             f'use --ext same or rename one')
        seen[name] = path
    return names


def _setup_logging() -> None:
    log = logging.getLogger('basicsr')
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter('%(message)s'))
        log.addHandler(handler)
    log.setLevel(logging.INFO)


def _prepare(args):
    """Check the arguments, build and load the network; UsageError on any mistake."""
    from drcnet.data.image_io import list_images
    from drcnet.engine.checkpoint import CheckpointError, load_file, load_network

    src = Path(args.input)
    if not src.exists():
        raise UsageError(f'--input: {src} does not exist')
    weights = Path(args.weights)
    if not weights.is_file():
        raise UsageError(f'--weights: checkpoint file not found: {weights}')
    if args.tile is not None:
        if args.tile < 1 or args.tile_overlap < 0:
            raise UsageError(f'--tile {args.tile} / --tile-overlap {args.tile_overlap}: need tile >= 1, overlap >= 0')
        if args.tile <= args.tile_overlap:
            raise UsageError(f'--tile ({args.tile}) must be larger than --tile-overlap ({args.tile_overlap})')
    if src.is_dir():
        out_dir = Path(args.output).resolve()
        root = src
        inside = out_dir != src.resolve()  # an output folder inside the input folder: skip earlier results
        inputs = [p for p in list_images(src, recursive=True) if not (inside and out_dir in p.resolve().parents)]
        if not inputs:
            raise UsageError(f'--input: no images ({", ".join(("png", "jpg", "tif", "bmp"))}) in {src}')
    else:
        root, inputs = None, [src]
    outputs = _output_names(inputs, root, Path(args.output), args)

    import drcnet  # noqa: F401  (registers the networks)
    from drcnet.engine.device import pick_device
    from drcnet.registry import ARCH_REGISTRY, build

    try:
        device = pick_device(args.device)
        ckpt = load_file(weights)
        opts, source = network_options(ckpt, args.opt, args.task, args.release_numerics)
        net = build(ARCH_REGISTRY, opts, where='network_g')
        report = load_network(net, weights, param_key=args.param_key, strict=True, ckpt=ckpt)
    except (CheckpointError, ValueError) as err:
        raise UsageError(str(err)) from err
    print(f'network: {opts} from {source}; weights {report["param_key"]!r} of {weights} '
          f'({report["loaded"]} tensors); device {device}')
    from drcnet.accel import accelerate, reuse_freed_cpu_memory
    if device.type == 'cpu':
        reuse_freed_cpu_memory()  # process-wide, so the command's choice, never a library side effect
    return accelerate(net.to(device), device), device, list(zip(inputs, outputs))


def restore_file(net, src: Path, dst: Path, args, device, progress: bool = False) -> None:
    """Read, restore and write one image (and its comparison picture) in the input's form.

    The network restores RGB at float precision: a grey image is restored as three equal channels and
    written grey, a 16-bit one is written with 16 bits, and an alpha channel is carried through unchanged.
    """
    import torch

    from drcnet.data.image_io import read_stored_image, side_by_side, to_float, write_image
    from drcnet.inference.tiling import restore

    stored = read_stored_image(src)
    x = torch.from_numpy(np.ascontiguousarray(stored.rgb.transpose(2, 0, 1)))[None]
    y = restore(net, x, tile=args.tile, overlap=args.tile_overlap, tta=args.tta, device=device,
                progress=progress)
    del x
    out = y[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    ext = dst.suffix.lower()
    bits = (args.bits or stored.bits) if ext in ('.png', '.tif', '.tiff') else 8
    keep_alpha = ext not in ('.jpg', '.jpeg')
    if stored.alpha is not None and not keep_alpha:
        print(f'note: {dst} has no alpha channel (JPEG has none); use --ext png to keep that of {src}',
              file=sys.stderr)
    pixels = stored.like_stored(out, bits, keep_alpha=keep_alpha)
    write_image(dst, pixels, bits=bits)
    if args.compare:
        shown = pixels[:, :, 0] if stored.grey and pixels.ndim == 3 else pixels  # without alpha
        write_image(dst.with_name(f'{dst.stem}_compare.png'), side_by_side(stored.rgb, to_float(shown)))


def main(argv: list | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse exits on --help (0) and on usage errors (2)
        return int(stop.code or 0)
    _setup_logging()
    try:
        net, device, jobs = _prepare(args)
    except UsageError as err:
        print(f'drcnet-infer: error: {err}', file=sys.stderr)
        return 2

    from drcnet.data.image_io import ImageReadError, ImageWriteError
    from tqdm import tqdm

    failed = []
    start = time.time()
    bar = tqdm(jobs, desc='restoring', unit='img', disable=len(jobs) < 2)
    for src, dst in bar:
        try:
            restore_file(net, src, dst, args, device, progress=len(jobs) == 1)
        except (ImageReadError, ImageWriteError) as err:
            failed.append(src)
            message = str(err) if str(src) in str(err) else f'{src}: {err}'
            tqdm.write(f'failed: {message}', file=sys.stderr)
        except RuntimeError as err:  # e.g. out of memory: report it, go on with the next image
            failed.append(src)
            hint = '' if args.tile else ' (try --tile 512)'
            tqdm.write(f'failed: {src}: {str(err).splitlines()[0]}{hint}', file=sys.stderr)
    bar.close()
    done = len(jobs) - len(failed)
    print(f'restored {done} of {len(jobs)} images into {args.output} in {time.time() - start:.1f} s')
    if failed:
        print(f'{len(failed)} failed: {", ".join(str(p) for p in failed)}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
