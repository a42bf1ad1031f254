"""Measure DRCNet's speed through its public entry points: network, loss, data loader and tiled restore.

    python scripts/benchmark.py [--quick] [--json PATH] [--device cpu|cuda] [--only SECTIONS] [--no-variants]

CPU sections (``--device cpu``, the default; ``--only forward,data`` picks some):
- forward: ms, GFLOP (torch.utils.flop_counter) and GFLOP/s per image at batch 1 of the paper (wf 64) and the
  demo (wf 16) network, ``accelerate``d as drcnet-infer does; ``ceiling_ratio`` divides the achieved rate by
  the rate of dense 3x3 convolutions at the network's own widths and resolutions (the faster of NCHW and
  channels-last, weighted by the FLOPs the network spends at each resolution), timed between the forwards.
- profile: torch.profiler share of the forward time spent in the two DFR operations, found by the
  record_function names ``drcnet.archs.dfr_block`` declares (spatial filter, energy attention).
- train_step: paper network, batch 4, 128 px, L1 on both stages, with and without IntraCRLoss (random VGG):
  ms per step (forward, backward, Adam), timed alternately, and ``intra_cr_overhead`` = with / without - 1.
- data: ``drcnet.data.loader.build_loader`` on a paired folder and its lmdb (gt_size 256, flips,
  rotations) with 0 and 2 workers: samples/s, and the ratio to what a training step consumes.
- tiled: peak resident memory (VmHWM) of a child process restoring a 4000x3000 image in 512 px tiles
  with ``drcnet.inference.tiling.restore`` (``--quick``: 1024x768, marked in the output).
- variants (full run only): paper network 256 px forward, batch 1, inference mode, one child process per
  allocator setting: (a) plain eager NCHW, (b) torch.compile of it, (c) ``accelerate`` + allocator.
``--device cuda``: train_step, data and the device section: training throughput of the paper network in
fp32, bf16 and fp16 autocast (fp16 with a GradScaler), each with and without channels-last and
torch.compile, peak memory, forward at 256 and 1024 px, all again with the release's numerics, and the
largest difference between the CPU's and the GPU's restored photograph.

Unless ``--no-accel``, glibc's allocator keeps freed memory (``drcnet.accel.reuse_freed_cpu_memory``) from
the start, and CPU inference networks are ``accelerate``d. Timings are medians of repeated runs; the load
average before and after is recorded, as other processes make timings noisy.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import drcnet  # noqa: E402,F401  (registers every component)
from drcnet.accel import accelerate, reuse_freed_cpu_memory  # noqa: E402
from drcnet.archs.dfr_block import PROFILE_ATTENTION, PROFILE_SPATIAL_FILTER  # noqa: E402
from drcnet.registry import ARCH_REGISTRY, LOSS_REGISTRY, build  # noqa: E402

PAPER = {'type': 'DRCNet', 'wf': 64, 'depth': 4}
DEMO = {'type': 'DRCNet', 'wf': 16, 'depth': 4}  # options/demo.yml's network
RELEASE_NUMERICS = {'sf_threshold': 0.8, 'ea_lambda': 1e-4, 'region_stats': 'batch'}  # outputs match the release
CPU_SECTIONS = ('forward', 'profile', 'train_step', 'data', 'tiled', 'variants')
CUDA_SECTIONS = ('train_step', 'data', 'device')
SECTIONS = CPU_SECTIONS + ('device',)
PRECISIONS = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
FORWARD_RANGE = 'benchmark.forward'
NO_CUDA = 'benchmark.py: --device cuda: torch.cuda.is_available() is False (no GPU visible, or a CPU-only torch)'


def build_net(cfg: Mapping, seed: int = 0) -> nn.Module:
    """A registered network from an options block, as train.py and drcnet-infer build it."""
    torch.manual_seed(seed)
    return build(ARCH_REGISTRY, cfg, where='network_g')


# ------------------------------------------------------------------------------------------ timing
def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_interleaved(fns: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1,
                     device: torch.device = torch.device('cpu')) -> Dict[str, List[float]]:
    """Wall times (ms) of each function, run in turn (a, b, a, b, ...) so that load changes hit all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    runs: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync(device)
            runs[name].append((time.perf_counter() - start) * 1e3)
    return runs


def load_average() -> Optional[List[float]]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# ------------------------------------------------------------------------------ FLOPs and ceiling
def count_flops(net: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward (2 per multiply-add), counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return int(counter.get_total_flops())


def conv_flops_by_level(net: nn.Module, x: torch.Tensor, wf: int) -> Dict[tuple, int]:
    """Convolution FLOPs of one forward by output resolution: {(width, h, w): flops}, width = wf * 2**level."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import conv_flop_count
    by_size: Dict[tuple, int] = {}

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.ops.aten.convolution.default:
                flops = conv_flop_count(list(args[0].shape), list(args[1].shape), list(out.shape), args[6])
                key = tuple(out.shape[-2:])
                by_size[key] = by_size.get(key, 0) + int(flops)
            return out

    # outside inference mode every convolution (conv2d, conv_transpose2d) reaches aten.convolution
    with torch.no_grad(), Recorder():
        net(x)
    full_h = max(h for h, _ in by_size)
    levels: Dict[tuple, int] = {}
    for (h, w), flops in by_size.items():
        key = (wf * 2 ** max(0, round(math.log2(full_h / h))), h, w)
        levels[key] = levels.get(key, 0) + flops
    return levels


def ceiling_convs(levels: Dict[tuple, int], device: torch.device, repeats: int = 3) -> List[dict]:
    """Per level, a dense width -> width 3x3 convolution at the level's resolution, in its faster layout."""
    gen = torch.Generator().manual_seed(0)
    convs = []
    for (width, h, w), net_flops in sorted(levels.items(), key=lambda kv: -kv[0][1]):
        x = torch.randn(1, width, h, w, generator=gen).to(device)
        weight = (torch.randn(width, width, 3, 3, generator=gen) * 0.05).to(device)
        flops = 2 * 9 * width * width * h * w
        best = None
        for layout, fmt in (('nchw', torch.contiguous_format), ('channels_last', torch.channels_last)):
            def call(x=x.contiguous(memory_format=fmt), weight=weight.contiguous(memory_format=fmt)):
                with torch.inference_mode():
                    return F.conv2d(x, weight, padding=1)
            ms = statistics.median(time_interleaved({'conv': call}, repeats, warmup=2, device=device)['conv'])
            if best is None or ms < best['ms']:
                best = {'width': width, 'size': [h, w], 'layout': layout, 'flops': flops, 'net_flops': net_flops,
                        'call': call, 'ms': ms}
        convs.append(best)
    return convs


def measure_forward(net: nn.Module, size: int, repeats: int, wf: int,
                    device: torch.device = torch.device('cpu')) -> dict:
    """ms, GFLOP and GFLOP/s of one image, and the ratio to the convolution ceiling timed between the forwards.

    The ceiling is the FLOP-weighted harmonic mean of the level rates: the network's convolution FLOPs
    over the time dense convolutions would take for them.
    """
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    flops = count_flops(net, x)
    convs = ceiling_convs(conv_flops_by_level(net, x, wf), device)

    def forward():
        with torch.inference_mode():
            net(x)
    fns = {'forward': forward, **{f'conv{i}': c['call'] for i, c in enumerate(convs)}}
    runs = time_interleaved(fns, repeats, device=device)
    ms = statistics.median(runs['forward'])
    levels, seconds = [], 0.0
    for i, conv in enumerate(convs):
        rate = conv['flops'] / (statistics.median(runs[f'conv{i}']) * 1e-3) / 1e9
        seconds += conv['net_flops'] / (rate * 1e9)
        levels.append({'width': conv['width'], 'size': conv['size'], 'layout': conv['layout'], 'gflops': rate,
                       'net_gflop': conv['net_flops'] / 1e9})
    ceiling = sum(c['net_flops'] for c in convs) / seconds / 1e9
    gflops = flops / 1e9 / (ms * 1e-3)
    return {'ms': ms, 'gflop': flops / 1e9, 'gflops': gflops, 'ceiling_gflops': ceiling,
            'ceiling_ratio': gflops / ceiling, 'ceiling_levels': levels,
            'runs_ms': [round(r, 2) for r in runs['forward']]}


# ------------------------------------------------------------------------------------ DFR profile
def dfr_profile(net: nn.Module, size: int, repeats: int = 3) -> dict:
    """Share of the forward's CPU time in the two DFR operations, by their record_function names."""
    from torch.profiler import ProfilerActivity, profile, record_function

    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    names = (FORWARD_RANGE, PROFILE_SPATIAL_FILTER, PROFILE_ATTENTION)
    runs = []
    with torch.inference_mode():
        net(x)
        for _ in range(max(1, repeats)):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                with record_function(FORWARD_RANGE):
                    net(x)
            totals = {name: None for name in names}
            for event in prof.events():
                if event.name in totals:
                    totals[event.name] = (totals[event.name] or 0.0) + event.cpu_time_total / 1e3
            missing = [name for name in names[1:] if totals[name] is None]
            if missing:
                raise RuntimeError(f"DFR profile: no {' or '.join(map(repr, missing))} range in the forward of "
                                   f"{type(net).__name__}; drcnet.archs.dfr_block declares these names, so the "
                                   f"operation was renamed, lost its record_function, or is not in this network")
            runs.append(totals)
    med = {name: statistics.median(r[name] for r in runs) for name in names}
    dfr_ms = med[PROFILE_SPATIAL_FILTER] + med[PROFILE_ATTENTION]
    return {'forward_ms': med[FORWARD_RANGE], 'spatial_filter_ms': med[PROFILE_SPATIAL_FILTER],
            'attention_ms': med[PROFILE_ATTENTION], 'share': dfr_ms / med[FORWARD_RANGE],
            'note': 'CPU, inference mode, times include the profiler overhead'}


# ------------------------------------------------------------------------------------- train step
@functools.lru_cache(maxsize=1)
def _photographs() -> tuple:
    from skimage import data
    return data.astronaut(), data.coffee(), data.rocket(), data.chelsea()


def photo_batch(batch: int, size: int, seed: int = 0) -> tuple:
    """(lq, gt): random crops of scikit-image photographs, lq with Gaussian noise sigma 25."""
    import numpy as np
    photos = _photographs()
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(batch):
        img = photos[i % len(photos)]
        y, x = rng.integers(0, img.shape[0] - size + 1), rng.integers(0, img.shape[1] - size + 1)
        crops.append(img[y:y + size, x:x + size].astype(np.float32).transpose(2, 0, 1) / 255.0)
    gt = torch.from_numpy(np.stack(crops))
    lq = (gt + torch.randn(gt.shape, generator=torch.Generator().manual_seed(seed)) * (25 / 255)).clamp(0, 1)
    return lq, gt


def make_train_step(net: nn.Module, lq: torch.Tensor, gt: torch.Tensor, regulariser: Optional[nn.Module] = None,
                    autocast_dtype: Optional[torch.dtype] = None) -> Callable[[], float]:
    """One optimisation step: forward (autocast if a dtype is given), L1 on both stages [+ regulariser],
    backward (through a GradScaler for float16), Adam."""
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.9, 0.999))
    scaler = torch.amp.GradScaler(lq.device.type, enabled=autocast_dtype is torch.float16)

    def step() -> float:
        optimiser.zero_grad(set_to_none=True)
        with torch.autocast(lq.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            outs = net(lq)
            loss = sum(F.l1_loss(out.float(), gt) for out in outs)
            if regulariser is not None:
                loss = loss + regulariser(outs, gt, lq)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        return float(loss.detach())
    return step


def measure_train_step(net_cfg: Mapping, batch: int, size: int, repeats: int,
                       device: torch.device = torch.device('cpu')) -> dict:
    """Paper-recipe steps with and without Intra-CR (random VGG weights), timed alternately."""
    lq, gt = (t.to(device) for t in photo_batch(batch, size))
    plain, with_cr = build_net(net_cfg).to(device).train(), build_net(net_cfg).to(device).train()
    regulariser = build(LOSS_REGISTRY, {'type': 'IntraCRLoss', 'vgg_weights': 'random'}, where='contrastive').to(device)
    # two warm-up steps each: the second Intra-CR step still runs slower than the later ones
    runs = time_interleaved({'l1': make_train_step(plain, lq, gt),
                             'l1_intra_cr': make_train_step(with_cr, lq, gt, regulariser)}, repeats, warmup=2,
                            device=device)
    ms_l1, ms_cr = statistics.median(runs['l1']), statistics.median(runs['l1_intra_cr'])
    return {'network': dict(net_cfg), 'batch': batch, 'size': size, 'ms_l1': ms_l1, 'ms_l1_intra_cr': ms_cr,
            'intra_cr_overhead': ms_cr / ms_l1 - 1, 'runs_ms': {k: [round(r, 1) for r in v] for k, v in runs.items()}}


# ------------------------------------------------------------------------------------------- data
def write_pair_folders(root: Path, copies: int = 2) -> tuple:
    """gt/ and lq/ folders of PNGs made from scikit-image photographs (lq: Gaussian noise sigma 25)."""
    import cv2
    import numpy as np
    from skimage import data
    photos = [data.astronaut(), data.coffee(), data.rocket(), data.chelsea(), data.stereo_motorcycle()[0],
              data.hubble_deep_field(), data.immunohistochemistry(), data.retina()]
    gt_dir, lq_dir = root / 'gt', root / 'lq'
    gt_dir.mkdir(parents=True, exist_ok=True)
    lq_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for copy in range(copies):
        for i, img in enumerate(photos):
            img = np.rot90(img, copy).copy()
            noisy = np.clip(img + rng.normal(0, 25, img.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(gt_dir / f'{copy}_{i:02d}.png'), img[..., ::-1])
            cv2.imwrite(str(lq_dir / f'{copy}_{i:02d}.png'), noisy[..., ::-1])
    return gt_dir, lq_dir


def loader_rate(cfg: Mapping, batches: int) -> float:
    """Samples per second that the loader of a ``datasets.train`` block delivers after its first batch."""
    from drcnet.data.loader import build_loader
    _, loader = build_loader(cfg, 'datasets.train')
    it = iter(loader)
    next(it)  # worker start-up
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * cfg['batch_size_per_gpu'] / (time.perf_counter() - start)
    del it
    return rate


def measure_data(gt_size: int, batches: int, train_step: Optional[Mapping], workdir: Path) -> dict:
    """Loading rates of a paired folder and of its lmdb (scripts/create_lmdb.py) with 0 and 2 workers, and
    their ratio to the samples a training step (``measure_train_step``'s result) consumes."""
    gt_dir, lq_dir = write_pair_folders(workdir)
    images = len(list(gt_dir.iterdir()))
    sys.path.insert(0, str(ROOT / 'scripts'))
    from create_lmdb import create_lmdb
    with open(os.devnull, 'w') as quiet, contextlib.redirect_stderr(quiet):  # progress bars
        create_lmdb(gt_dir, workdir / 'gt.lmdb')
        create_lmdb(lq_dir, workdir / 'lq.lmdb')
    roots = {'folder': (gt_dir, lq_dir, 'disk'), 'lmdb': (workdir / 'gt.lmdb', workdir / 'lq.lmdb', 'lmdb')}
    batch = 4
    result: dict = {'gt_size': gt_size, 'batch': batch}
    consumed = None
    if train_step:  # in pixels: a step on 4 crops of 128 px consumes one sample of 256 px
        step_pixels = train_step['batch'] * train_step['size'] ** 2
        consumed = step_pixels / gt_size ** 2 / (train_step['ms_l1'] * 1e-3)
        result['consumed_samples_per_s'] = consumed
    for name, (gt, lq, backend) in roots.items():
        for workers in (0, 2):
            cfg = {'type': 'PairedRestorationDataset', 'phase': 'train', 'dataroot_gt': str(gt),
                   'dataroot_lq': str(lq), 'io_backend': {'type': backend}, 'gt_size': gt_size, 'use_hflip': True,
                   'use_rot': True, 'batch_size_per_gpu': batch, 'num_worker_per_gpu': workers,
                   'persistent_workers': False, 'dataset_enlarge_ratio': math.ceil((batches + 2) * batch / images)}
            rate = loader_rate(cfg, batches)
            result.setdefault(name, {})[f'workers_{workers}_samples_per_s'] = rate
            if consumed:
                result[name][f'workers_{workers}_ratio'] = rate / consumed
    return result


# --------------------------------------------------------------------------------- child processes
def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would carry the parent's peak across exec)."""
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024
    raise RuntimeError('no VmHWM line in /proc/self/status')


def child_tiled(height: int, width: int, tile: int, accel: bool) -> dict:
    """Restore a random image tile by tile with the paper network, as drcnet-infer --tile does."""
    from drcnet.inference.tiling import restore
    if accel:
        reuse_freed_cpu_memory()
    net = build_net(PAPER)
    net = accelerate(net, 'cpu') if accel else net.eval()
    img = torch.rand(1, 3, height, width)
    start = time.perf_counter()
    out = restore(net, img, tile=tile, overlap=32)
    assert out.shape == img.shape and bool(torch.isfinite(out).all())
    return {'seconds': time.perf_counter() - start, 'peak_rss_mb': peak_rss_mb()}


def child_variants(variants: List[str], size: int, repeats: int, allocator: bool, backend: str = 'inductor',
                   net_cfg: Mapping = PAPER) -> dict:
    """Batch-1 forwards in this process: 'eager' (NCHW, no accel), 'compile' (torch.compile of it) and 'accel'
    (``accelerate``); the allocator setting, process-wide, is the caller's choice."""
    allocator = reuse_freed_cpu_memory() if allocator else False
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    fns, result = {}, {'allocator': allocator}
    for variant in variants:
        net = build_net(net_cfg).eval()
        if variant == 'accel':
            net = accelerate(net, 'cpu')
        elif variant == 'compile':
            net = torch.compile(net, backend=backend)
            start = time.perf_counter()
            with torch.inference_mode():
                net(x)
            result['compile'] = {'compile_s': time.perf_counter() - start}

        def forward(net=net):
            with torch.inference_mode():
                net(x)
        fns[variant] = forward
    for variant, runs in time_interleaved(fns, repeats, warmup=2).items():
        result.setdefault(variant, {}).update(ms=statistics.median(runs), runs_ms=[round(r, 1) for r in runs])
    return result


CHILDREN = {'tiled': child_tiled, 'variants': child_variants}


def run_child(task: str, threads: int, **kwargs) -> dict:
    """``CHILDREN[task](**kwargs)`` in a fresh Python process; its JSON result, or {'unavailable': why}."""
    spec = json.dumps({'task': task, 'threads': threads, 'kwargs': kwargs})
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), '--child', spec],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return {'unavailable': f'{task} child failed: {proc.stderr.strip().splitlines()[-1:]}'}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_variants(size: int, repeats: int, threads: int) -> dict:
    """(a) eager and (b) compiled in one process with glibc's allocator defaults, interleaved; (c) accel in
    another with drcnet's allocator setting, which cannot be undone in a process."""
    plain = run_child('variants', threads, variants=['eager', 'compile'], size=size, repeats=repeats, allocator=False)
    accel = run_child('variants', threads, variants=['accel'], size=size, repeats=repeats, allocator=True)
    out = {'size': size}
    for label, child, variant in (('a_eager', plain, 'eager'), ('b_compile', plain, 'compile'),
                                  ('c_accel', accel, 'accel')):
        out[label] = {**child.get(variant, child), 'allocator_reuses_freed_memory': child.get('allocator')}
    return out


# ------------------------------------------------------------------------------- device (CUDA) run
def peak_memory_mb(device: torch.device) -> Optional[float]:
    return torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == 'cuda' else None


def reset_peak_memory(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _variant(cfg: Mapping, device: torch.device, channels_last: bool, compiled: bool, backend: str,
             train: bool) -> nn.Module:
    net = build_net(cfg).to(device).train(train)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if compiled:
        torch.compiler.reset()  # the networks share one forward code object: keep below dynamo's recompile limit
        return torch.compile(net, backend=backend)
    return net


def train_throughput(cfg: Mapping, device: torch.device, precision: str, channels_last: bool, compiled: bool,
                     batch: int, size: int, steps: int, backend: str = 'inductor') -> dict:
    """Iterations/s and images/s of training steps (L1 on both stages, Adam), first step and peak memory."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    lq, gt = (t.to(device).contiguous(memory_format=fmt) for t in photo_batch(batch, size))
    reset_peak_memory(device)
    model = _variant(cfg, device, channels_last, compiled, backend, train=True)
    step = make_train_step(model, lq, gt, autocast_dtype=PRECISIONS[precision])
    start = time.perf_counter()
    step()
    sync(device)
    first_s = time.perf_counter() - start
    losses = []
    runs = time_interleaved({'step': lambda: losses.append(step())}, steps, warmup=0, device=device)['step']
    ms = statistics.median(runs)
    return {'it_per_s': 1e3 / ms, 'images_per_s': batch * 1e3 / ms, 'ms': ms, 'first_step_s': first_s,
            'finite_loss': all(math.isfinite(v) for v in losses), 'peak_memory_mb': peak_memory_mb(device)}


def forward_time(cfg: Mapping, device: torch.device, precision: str, channels_last: bool, compiled: bool,
                 size: int, repeats: int, backend: str = 'inductor') -> dict:
    """ms of a batch-1 inference forward at ``size`` px, first call (compilation) and peak memory."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    reset_peak_memory(device)
    model = _variant(cfg, device, channels_last, compiled, backend, train=False)
    dtype = PRECISIONS[precision]

    def forward():
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            model(x)
    start = time.perf_counter()
    forward()
    sync(device)
    first_s = time.perf_counter() - start
    ms = statistics.median(time_interleaved({'forward': forward}, repeats, warmup=0, device=device)['forward'])
    return {'ms': ms, 'first_call_s': first_s, 'peak_memory_mb': peak_memory_mb(device)}


def compare_with_cpu(cfg: Mapping, device: torch.device, size: int) -> dict:
    """Largest absolute difference between the final images restored on the CPU and on ``device`` (float32)."""
    import numpy as np
    from skimage import data
    img = data.astronaut()[128:128 + size, 128:128 + size].astype(np.float32).transpose(2, 0, 1) / 255.0
    gt = torch.from_numpy(np.ascontiguousarray(img))[None]
    lq = (gt + torch.randn(gt.shape, generator=torch.Generator().manual_seed(0)) * (25 / 255)).clamp(0, 1)
    net = build_net(cfg).eval()
    with torch.inference_mode():
        on_cpu = net(lq)[-1]
        on_device = net.to(device)(lq.to(device))[-1].cpu()
    return {'photograph': f'astronaut {size}x{size} crop, noise sigma 25',
            'max_abs_diff': float((on_cpu - on_device).abs().max())}


def measure_device(device: torch.device, net_cfg: Mapping = PAPER, batch: int = 4, train_size: int = 256,
                   forward_sizes: tuple = (256, 1024), steps: int = 5, precisions: tuple = tuple(PRECISIONS),
                   layouts: tuple = (False, True), compiled: tuple = (False, True), backend: str = 'inductor',
                   compare_size: int = 256) -> dict:
    """Training throughput and forward time of every precision x layout x compile variant, for the paper's
    and the release's numerics, and one CPU-vs-device comparison. Runs on any device."""
    result: dict = {'device': str(device), 'network': dict(net_cfg), 'batch': batch, 'train_size': train_size,
                    'steps': steps, 'compile_backend': backend, 'numerics': {}}
    if device.type == 'cuda':
        result['tf32'] = {'cudnn': torch.backends.cudnn.allow_tf32, 'matmul': torch.backends.cuda.matmul.allow_tf32}
    for numerics, extra in (('paper', {}), ('release', RELEASE_NUMERICS)):
        cfg = {**net_cfg, **extra}
        rows = result['numerics'].setdefault(numerics, {'options': extra, 'variants': {}})['variants']
        for precision in precisions:
            for channels_last in layouts:
                for comp in compiled:
                    layout = 'channels_last' if channels_last else 'nchw'
                    name = f"{precision}/{layout}/{'compile' if comp else 'eager'}"
                    try:
                        row = {'train': train_throughput(cfg, device, precision, channels_last, comp, batch,
                                                         train_size, steps, backend)}
                        for size in forward_sizes:
                            row[f'forward_{size}'] = forward_time(cfg, device, precision, channels_last, comp, size,
                                                                  steps, backend)
                    except RuntimeError as err:  # out of memory, a compiler missing: report it, run the others
                        row = {'error': f'{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}'}
                    rows[name] = row
                    print(f'device {numerics} {name}: {row.get("train", row)}', file=sys.stderr)
    result['cpu_vs_device'] = compare_with_cpu(net_cfg, device, compare_size)
    return result


# ------------------------------------------------------------------------------------------ report
def _get(results: dict, path: str):
    node = results
    for key in path.split('.'):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def check_targets(results: dict) -> dict:
    """Each target's value, bound and whether it is met (None: not measured in this run)."""
    ratios = [_get(results, f'data.{name}.workers_2_ratio') for name in ('folder', 'lmdb')]
    ratios = [r for r in ratios if r is not None]
    targets = {
        'forward.paper.256.ceiling_ratio': (_get(results, 'forward.paper.256.ceiling_ratio'), '>=', 0.85),
        'train_step.intra_cr_overhead': (_get(results, 'train_step.intra_cr_overhead'), '<=', 0.35),
        'data.workers_2_ratio (min of folder, lmdb)': (min(ratios) if ratios else None, '>=', 4.0),
        'tiled_peak_rss_mb': (_get(results, 'tiled.peak_rss_mb'), '<', 3000.0),
    }
    compare = {'>=': lambda v, b: v >= b, '<=': lambda v, b: v <= b, '<': lambda v, b: v < b}
    out = {}
    for name, (value, op, bound) in targets.items():
        met = None if value is None else compare[op](value, bound)
        out[name] = {'value': value, 'target': f'{op} {bound:g}', 'met': met}
    if results.get('tiled', {}).get('quick'):
        out['tiled_peak_rss_mb']['note'] = 'quick run: a smaller image than the 4000x3000 of the target'
    return out


def _fmt(value, spec: str = '.1f') -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def print_table(results: dict) -> None:
    meta = results['meta']
    print(f"DRCNet benchmark  device={meta['device']}  threads={meta['threads']}  torch={meta['torch']}  "
          f"quick={meta['quick']}  accel={meta['accel']}  load={meta['load_before']} -> {meta.get('load_after')}")
    if 'forward' in results:
        print(f"\n{'forward':<14}{'ms/img':>9}{'GFLOP':>8}{'GFLOP/s':>9}{'ceiling':>9}{'ratio':>7}")
        for name, by_size in results['forward'].items():
            for size, r in by_size.items():
                print(f"{name + ' ' + size:<14}{_fmt(r['ms']):>9}{_fmt(r['gflop']):>8}{_fmt(r['gflops']):>9}"
                      f"{_fmt(r['ceiling_gflops']):>9}{_fmt(r['ceiling_ratio'], '.2f'):>7}")
    for name, r in results.get('profile', {}).items():
        print(f"\nDFR operations, {name} 256 px: {r['share'] * 100:.1f} % of {r['forward_ms']:.1f} ms "
              f"(spatial filter {r['spatial_filter_ms']:.1f} ms, energy attention {r['attention_ms']:.1f} ms)")
    ts = results.get('train_step')
    if ts:
        print(f"\ntrain step (batch {ts['batch']}, {ts['size']} px): L1 {ts['ms_l1']:.0f} ms, "
              f"L1 + Intra-CR {ts['ms_l1_intra_cr']:.0f} ms, overhead {ts['intra_cr_overhead']:.3f}")
    data = results.get('data')
    if data:
        print(f"\ndata (gt_size {data['gt_size']}): a training step consumes "
              f"{_fmt(data.get('consumed_samples_per_s'), '.2f')} samples/s")
        for name in ('folder', 'lmdb'):
            r = data[name]
            print(f'  {name:<7}' + '  '.join(f"{w} workers {_fmt(r[f'workers_{w}_samples_per_s'])}/s "
                                             f"(x{_fmt(r.get(f'workers_{w}_ratio'))})" for w in (0, 2)))
    t = results.get('tiled')
    if t:
        if 'unavailable' in t:
            print(f"\ntiled: unavailable: {t['unavailable']}")
        else:
            print(f"\ntiled {t['image'][1]}x{t['image'][0]} tile {t['tile']}: peak RSS {t['peak_rss_mb']:.0f} MB, "
                  f"{t['seconds']:.0f} s" + ('  (QUICK: smaller than the 4000x3000 target)' if t['quick'] else ''))
    v = results.get('variants')
    if v:
        print(f"\nvariants, paper network {v['size']} px forward, batch 1:")
        eager_ms = v['a_eager'].get('ms')
        for label in ('a_eager', 'b_compile', 'c_accel'):
            r = v[label]
            if 'ms' not in r:
                print(f"  {label:<10} {r.get('unavailable')}")
                continue
            extra = f", compile {r['compile_s']:.0f} s" if 'compile_s' in r else ''
            print(f"  {label:<10} {r['ms']:>8.1f} ms  (x{_fmt(eager_ms / r['ms'] if eager_ms else None, '.2f')} "
                  f"eager's speed{extra})")
    dev = results.get('device')
    if dev:
        sizes = sorted({k for block in dev['numerics'].values() for row in block['variants'].values() for k in row
                        if k.startswith('forward_')}, key=lambda k: int(k.split('_')[1]))
        print(f"\ndevice {dev['device']}: training batch {dev['batch']} at {dev['train_size']} px; forward batch 1")
        print(f"{'numerics':<9}{'variant':<28}{'it/s':>7}{'img/s':>8}{'peak MB':>9}"
              + ''.join(f"{s.split('_')[1] + ' ms':>10}" for s in sizes))
        for numerics, block in dev['numerics'].items():
            for name, row in block['variants'].items():
                if 'error' in row:
                    print(f"{numerics:<9}{name:<28}{row['error']}")
                    continue
                tr = row['train']
                print(f"{numerics:<9}{name:<28}{tr['it_per_s']:>7.2f}{tr['images_per_s']:>8.2f}"
                      f"{_fmt(tr['peak_memory_mb'], '.0f'):>9}" + ''.join(f"{row[s]['ms']:>10.1f}" for s in sizes))
        print(f"CPU vs {dev['device']}: max abs diff {dev['cpu_vs_device']['max_abs_diff']:.2e}")
    print('\ntargets')
    for name, t in results['targets'].items():
        state = {True: 'met', False: 'NOT met', None: 'not measured'}[t['met']]
        print(f"  {name:<44} {_fmt(t['value'], '.3f'):>10}  {t['target']:<8} {state}  {t.get('note', '')}")


# -------------------------------------------------------------------------------------------- main
def pick_sections(device_type: str, only: Optional[str], quick: bool, variants: Optional[bool]) -> tuple:
    """The sections to run: ``--only``'s, else the device's, with the variants unless quick or told not to."""
    if only:
        sections = tuple(s.strip() for s in only.split(','))
        unknown = sorted(set(sections) - set(SECTIONS))
        if unknown:
            raise SystemExit(f"benchmark.py: --only: {', '.join(unknown)} not among {', '.join(SECTIONS)}")
        return sections
    sections = CPU_SECTIONS if device_type == 'cpu' else CUDA_SECTIONS
    if not (variants if variants is not None else not quick):
        sections = tuple(s for s in sections if s != 'variants')
    return sections


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    accel = not args.no_accel
    allocator = reuse_freed_cpu_memory() if accel and device.type == 'cpu' else False
    threads = torch.get_num_threads()
    quick, repeats = args.quick, args.repeats or (3 if args.quick else 7)
    sections = pick_sections(device.type, args.only, quick, args.variants)
    results: dict = {'meta': {
        'torch': torch.__version__, 'device': str(device), 'threads': threads, 'quick': quick, 'repeats': repeats,
        'accel': accel, 'cpu_allocator_reuses_freed_memory': allocator, 'sections': list(sections),
        'cpu': platform.processor() or platform.machine(), 'load_before': load_average(),
        'started': time.strftime('%Y-%m-%d %H:%M:%S')}}

    if 'forward' in sections:
        for name, cfg in (('paper', PAPER), ('demo', DEMO)):
            net = build_net(cfg).to(device)
            net = accelerate(net, device) if accel else net.eval()
            for size in (256,) if quick else (256, 512):
                r = measure_forward(net, size, repeats, cfg['wf'], device)
                results.setdefault('forward', {}).setdefault(name, {})[str(size)] = r
                print(f"forward {name} {size}: {r['ms']:.1f} ms, ratio {r['ceiling_ratio']:.2f}", file=sys.stderr)
    if 'profile' in sections:
        for name, cfg in (('demo', DEMO), ('paper', PAPER)):
            net = build_net(cfg)
            net = accelerate(net, 'cpu') if accel else net.eval()
            results.setdefault('profile', {})[name] = dfr_profile(net, 256, repeats)
        print('profile done', file=sys.stderr)
    if 'train_step' in sections:
        results['train_step'] = measure_train_step(PAPER, 4, 128, max(2, repeats // 2 + 1), device)
        print('train step done', file=sys.stderr)
    if 'data' in sections:
        with tempfile.TemporaryDirectory(prefix='drcnet_bench_') as tmp:
            results['data'] = measure_data(256, 10 if quick else 40, results.get('train_step'), Path(tmp))
        print('data done', file=sys.stderr)
    if 'tiled' in sections:
        h, w = (768, 1024) if quick else (3000, 4000)
        results['tiled'] = {'image': [h, w], 'tile': 512, 'quick': quick,
                            **run_child('tiled', threads, height=h, width=w, tile=512, accel=accel)}
        print('tiled done', file=sys.stderr)
    if 'variants' in sections:
        results['variants'] = measure_variants(256, repeats, threads)
        print('variants done', file=sys.stderr)
    if 'device' in sections:
        results['device'] = measure_device(device, steps=3 if quick else 10)

    results['targets'] = check_targets(results)
    results['meta'].update(load_after=load_average(), finished=time.strftime('%Y-%m-%d %H:%M:%S'))
    return results


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='fewer repeats, 256 px only, smaller tiled image, '
                                                             'no variants (about 2 min)')
    parser.add_argument('--json', '--out', dest='json', type=Path, help='write the results here')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--threads', type=int, help='torch threads (default: torch.get_num_threads())')
    parser.add_argument('--repeats', type=int, help='timed runs per measurement (default 7, quick 3)')
    parser.add_argument('--only', help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument('--variants', action=argparse.BooleanOptionalAction,
                        help='the eager / compile / accel forward comparison (default: on, off with --quick)')
    parser.add_argument('--no-accel', action='store_true', help='neither accelerate() nor the allocator setting')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # one measurement in a fresh process (run_child)
        spec = json.loads(args.child)
        torch.set_num_threads(spec['threads'])
        print(json.dumps(CHILDREN[spec['task']](**spec['kwargs'])))
        return 0
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit(NO_CUDA)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = run(args)
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f'\nwrote {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
