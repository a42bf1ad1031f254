"""Measure DRCNet's speed: conv ceiling, forward, DFR extras, train step, data loading, tiled memory.

    python scripts/benchmark.py [--quick] [--json PATH] [--device auto|cpu|cuda] [--only SECTIONS]

Sections (all by default; ``--only forward,train_step`` picks some):
- conv_ceiling_gflops / forward: ms, GFLOP (torch.utils.flop_counter) and GFLOP/s per image at batch 1
  for the paper and the demo network at 256 and 512 px; ``ceiling_ratio`` divides the achieved rate
  by the rate dense 3x3 convolutions reach at the network's own widths and resolutions (same
  device, threads and dtype; the faster of NCHW and channels_last), weighted by the FLOPs the
  network spends at each resolution, and timed between the forward runs so both see the same machine.
- dfr_profile: torch.profiler share of the forward time spent in the DFR extras (region norm with
  its masks, energy attention, the branch products and activations) of the demo network, on CPU.
- train_step: paper network, batch 4, 128 px, L1 on both stages, with and without Intra-CR
  (random VGG): ms per step (forward, backward, Adam) and ``intra_cr_overhead`` = with / without - 1.
- data: paired folder and lmdb loading (crop, flips, rotations) at gt_size 256 with 0 and 2 workers,
  samples/s, and the ratio to what a paper-network training step consumes.
- tiled: peak resident memory of a child process restoring a 4000x3000 image with tile 512
  (``--quick``: 1024x768, marked in the output).
- cuda (CUDA only): bf16 autocast, channels_last and torch.compile variants of the forward.

Timings are medians of repeated runs; the load average before and after is recorded, because
other processes on the machine make timings noisy.
"""
from __future__ import annotations

import argparse
import contextlib
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
from typing import Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import drcnet  # noqa: E402,F401  (registers every component)
from drcnet.archs import cpu_kernels, dfr_block  # noqa: E402
from drcnet.archs.drcnet_arch import DRCNet  # noqa: E402
from drcnet.engine.device import pick_device, reuse_freed_cpu_memory  # noqa: E402

PAPER_KWARGS = {'wf': 64, 'depth': 4}
DEMO_KWARGS = {'wf': 16, 'depth': 4}  # options/demo.yml's network
NETWORKS = {'paper': PAPER_KWARGS, 'demo': DEMO_KWARGS}
SECTIONS = ('forward', 'dfr_profile', 'train_step', 'data', 'tiled', 'cuda')
TILED_FULL = (3000, 4000)  # H, W
TILED_QUICK = (768, 1024)


# ----------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 1,
              device: torch.device = torch.device('cpu')) -> dict:
    """Median, minimum and all wall times (ms) of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    _sync(device)
    runs = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        _sync(device)
        runs.append((time.perf_counter() - start) * 1e3)
    return {'median_ms': statistics.median(runs), 'min_ms': min(runs), 'runs_ms': [round(r, 3) for r in runs]}


def time_pair(fn_a: Callable[[], object], fn_b: Callable[[], object], repeats: int, warmup: int = 1,
              device: torch.device = torch.device('cpu')) -> tuple:
    """Time two functions alternately (a, b, a, b, ...) so that load changes hit both alike."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    _sync(device)
    runs_a, runs_b = [], []
    for _ in range(max(1, repeats)):
        for fn, runs in ((fn_a, runs_a), (fn_b, runs_b)):
            start = time.perf_counter()
            fn()
            _sync(device)
            runs.append((time.perf_counter() - start) * 1e3)
    return ({'median_ms': statistics.median(runs_a), 'runs_ms': [round(r, 3) for r in runs_a]},
            {'median_ms': statistics.median(runs_b), 'runs_ms': [round(r, 3) for r in runs_b]})


def load_average() -> Optional[List[float]]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# ------------------------------------------------------------------------------------ FLOPs, ceiling
@contextlib.contextmanager
def _plain_path(net: nn.Module):
    """Run ``net`` on its plain (autograd-ready) path with nothing requiring gradients.

    The inference path runs the same convolutions, but oneDNN's fused kernels are invisible to
    FLOP counting, so FLOPs are counted here.
    """
    flags = [p.requires_grad for p in net.parameters()]
    try:
        for p in net.parameters():
            p.requires_grad_(False)
        with torch.enable_grad():
            yield
    finally:
        for p, flag in zip(net.parameters(), flags):
            p.requires_grad_(flag)


def count_flops(net: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward, counted by torch.utils.flop_counter (2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode
    with _plain_path(net), FlopCounterMode(display=False) as counter:
        net(x.detach())
    return int(counter.get_total_flops())


def conv_flops_by_level(net: nn.Module, x: torch.Tensor) -> Dict[tuple, int]:
    """Convolution FLOPs of one forward grouped by output resolution: {(width, h, w): flops}.

    ``width`` is the network's channel width at that resolution (wf * 2**level), the size the
    ceiling's dense convolutions use. Every aten convolution is seen, also those called without
    their module (a convolution split over the parts of a concatenation).
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import conv_flop_count

    sizes: Dict[tuple, int] = {}

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.ops.aten.convolution.default:
                flops = conv_flop_count(list(args[0].shape), list(args[1].shape), list(out.shape), args[6])
                key = tuple(out.shape[-2:])
                sizes[key] = sizes.get(key, 0) + int(flops)
            return out

    with _plain_path(net), Recorder():
        net(x.detach())
    full_h = max(h for h, _ in sizes)
    wf = net.conv_01.out_channels if hasattr(net, 'conv_01') else 64
    levels: Dict[tuple, int] = {}
    for (h, w), flops in sizes.items():
        level = max(0, round(math.log2(full_h / h)))
        levels[(wf * 2 ** level, h, w)] = levels.get((wf * 2 ** level, h, w), 0) + flops
    return levels


def _ceiling_convs(levels: Dict[tuple, int], batch: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device = torch.device('cpu'), repeats: int = 3) -> List[dict]:
    """Per level, a dense 3x3 convolution (width -> width at the level's resolution) in the faster of
    NCHW and channels_last: {'width', 'size', 'layout', 'flops', 'net_flops', 'call', 'gflops'}."""
    convs = []
    gen = torch.Generator(device='cpu').manual_seed(0)
    for (width, h, w), net_flops in sorted(levels.items(), key=lambda kv: -kv[0][1]):
        x = torch.randn(batch, width, h, w, generator=gen).to(device, dtype)
        weight = (torch.randn(width, width, 3, 3, generator=gen) * 0.05).to(device, dtype)
        bias = torch.zeros(width).to(device, dtype)
        flops = 2 * 9 * width * width * batch * h * w
        best = None
        for layout in ('nchw', 'channels_last'):
            fmt = torch.channels_last if layout == 'channels_last' else torch.contiguous_format
            xl, wl = x.contiguous(memory_format=fmt), weight.contiguous(memory_format=fmt)

            def call(xl=xl, wl=wl, bias=bias):
                with torch.inference_mode():
                    return F.conv2d(xl, wl, bias, padding=1)
            timing = time_call(call, repeats, warmup=2, device=device)
            rate = flops / (timing['median_ms'] * 1e-3) / 1e9
            if best is None or rate > best['gflops']:
                best = {'width': width, 'size': [h, w], 'layout': layout, 'flops': flops, 'net_flops': net_flops,
                        'call': call, 'gflops': rate}
        convs.append(best)
    return convs


def _ceiling_summary(convs: List[dict], rates: List[float]) -> dict:
    """FLOP-weighted harmonic mean of the level rates: the network's FLOPs over the time they take there."""
    total_flops = sum(c['net_flops'] for c in convs)
    seconds = sum(c['net_flops'] / (rate * 1e9) for c, rate in zip(convs, rates))
    levels = [{'width': c['width'], 'size': c['size'], 'gflops': rate, 'layout': c['layout'],
               'net_gflop': c['net_flops'] / 1e9} for c, rate in zip(convs, rates)]
    return {'gflops': total_flops / seconds / 1e9, 'levels': levels}


def measure_forward(net: nn.Module, size: int, repeats: int, levels: Optional[Dict[tuple, int]] = None,
                    batch: int = 1, device: torch.device = torch.device('cpu'),
                    dtype: torch.dtype = torch.float32) -> dict:
    """ms per image, GFLOP per image, achieved GFLOP/s and, given the network's convolution FLOPs by
    level (``conv_flops_by_level``), the ceiling and the ratio achieved / ceiling.

    Each timed forward follows one timing of every ceiling convolution, so that a change of machine
    speed during the measurement (other processes, clock) weighs on both sides of the ratio alike.
    """
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    flops = count_flops(net, x)
    convs = _ceiling_convs(levels, batch, dtype, device) if levels else []

    def forward():
        with torch.inference_mode():
            net(x)
    forward()
    runs, conv_runs = [], [[] for _ in convs]
    for _ in range(max(1, repeats)):
        for conv, conv_ms in zip(convs, conv_runs):
            conv_ms.append(time_call(conv['call'], 1, warmup=0, device=device)['median_ms'])
        runs.append(time_call(forward, 1, warmup=0, device=device)['median_ms'])
    ms = statistics.median(runs) / batch
    result = {'ms': ms, 'gflop': flops / batch / 1e9, 'gflops': flops / batch / 1e9 / (ms * 1e-3),
              'runs_ms': [round(r, 3) for r in runs]}
    if convs:
        rates = [c['flops'] / (statistics.median(c_ms) * 1e-3) / 1e9 for c, c_ms in zip(convs, conv_runs)]
        ceiling = _ceiling_summary(convs, rates)
        result.update(ceiling_gflops=ceiling['gflops'], ceiling_ratio=result['gflops'] / ceiling['gflops'],
                      ceiling_levels=ceiling['levels'])
    return result


def cpu_layout_variants(net: nn.Module, size: int, repeats: int) -> dict:
    """ms per image with NCHW feature maps and with the unoptimised reference path (same results)."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    out = {}
    try:
        with torch.inference_mode():
            net.cpu_channels_last = False
            out['nchw_maps_ms'] = time_call(lambda: net(x), repeats)['median_ms']
            net.cpu_channels_last = True
            dfr_block.set_reference_path(net, True)
            out['reference_path_ms'] = time_call(lambda: net(x), repeats)['median_ms']
    finally:
        net.cpu_channels_last = True
        dfr_block.set_reference_path(net, False)
    return out


ALLOCATOR_CHILD = r'''
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(int(sys.argv[4]))
from drcnet.archs.drcnet_arch import DRCNet
from drcnet.engine.device import pick_device, reuse_freed_cpu_memory
pick_device('cpu')
torch.manual_seed(0)
net = DRCNet(wf=64, depth=4).eval()
x = torch.rand(1, 3, int(sys.argv[2]), int(sys.argv[2]))
runs = []
with torch.inference_mode():
    net(x)
    for _ in range(int(sys.argv[3])):
        start = time.perf_counter()
        net(x)
        runs.append((time.perf_counter() - start) * 1e3)
print(json.dumps({'median_ms': statistics.median(runs), 'tuned': reuse_freed_cpu_memory()}))
'''


def measure_default_allocator(size: int, repeats: int, threads: Optional[int] = None) -> dict:
    """Paper-network forward in a child process that leaves glibc's allocator at its defaults
    (``DRCNET_CPU_ALLOCATOR=default``), for comparison with drcnet's setting (engine/device.py)."""
    env = dict(os.environ, DRCNET_CPU_ALLOCATOR='default')
    proc = subprocess.run([sys.executable, '-c', ALLOCATOR_CHILD, str(ROOT), str(size), str(repeats),
                           str(threads or torch.get_num_threads())], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {'unavailable': f'child failed: {proc.stderr.strip().splitlines()[-1:]}'}
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    return {'ms': child['median_ms'], 'allocator_tuned': child['tuned']}


# ------------------------------------------------------------------------------------- DFR profile
CONV_OPS = ('aten::conv2d', 'aten::convolution', 'aten::_convolution', 'aten::mkldnn_convolution',
            'mkldnn::_convolution_pointwise', 'mkldnn::_convolution_pointwise_')
LABELS = ('drcnet.forward', 'dfr.block', 'dfr.region_norm', 'dfr.attention')
# the compiled attention (drcnet.archs.cpu_kernels), its activation and its product with the spatial branch
ATTENTION_KERNELS = ('drcnet::energy_attention_', 'drcnet::energy_attention_mul_')


@contextlib.contextmanager
def _labelled_dfr_parts(net: nn.Module):
    """Profiler ranges around the DFR blocks, their region norms and their attention."""
    from torch.autograd.profiler import record_function
    patched, handles, open_ranges = [], [], {}

    def wrap(owner, name, label):
        original = getattr(owner, name)

        def wrapped(*args, **kwargs):
            with record_function(label):
                return original(*args, **kwargs)
        setattr(owner, name, wrapped)
        patched.append((owner, name, original))

    def enter(module, inputs):
        rf = record_function('dfr.block')
        rf.__enter__()
        open_ranges.setdefault(id(module), []).append(rf)

    def leave(module, inputs, output):
        open_ranges[id(module)].pop().__exit__(None, None, None)

    wrap(dfr_block.AdaptiveFeatureNorm, 'forward', 'dfr.region_norm')
    wrap(dfr_block.AdaptiveFeatureNorm, 'forward_', 'dfr.region_norm')
    for name in ('energy_attention', '_energy_attention_', 'energy_attention_reference'):
        wrap(dfr_block, name, 'dfr.attention')
    for module in net.modules():
        if isinstance(module, dfr_block.DFRBlock):
            handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for owner, name, original in reversed(patched):
            setattr(owner, name, original)


def _dfr_times(events) -> Dict[str, float]:
    """ms per label, and of the outermost convolutions inside DFR blocks but outside region norms."""
    totals = {k: 0.0 for k in LABELS + ('dfr.dense_convs',)}
    for event in events:
        name = event.name
        if name in LABELS:
            totals[name] += event.cpu_time_total / 1e3
        elif name in ATTENTION_KERNELS:
            totals['dfr.attention'] += event.cpu_time_total / 1e3
        elif name in CONV_OPS:
            parent, in_block = event.cpu_parent, False
            while parent is not None:
                if parent.name in CONV_OPS or parent.name == 'dfr.region_norm':
                    break  # counted by its outermost convolution, or a part of the region norm
                if parent.name == 'dfr.block':
                    in_block = True
                    break
                parent = parent.cpu_parent
            if in_block:
                totals['dfr.dense_convs'] += event.cpu_time_total / 1e3
    return totals


def profile_dfr_extras(net: nn.Module, size: int, repeats: int = 3) -> dict:
    """Share of forward time in the DFR extras, from torch.profiler ranges (CPU, inference mode).

    extras = time inside DFR blocks minus their dense convolutions (conv_1, conv_2, identity, CSFF,
    down-sampling, fused or not): the region norm with its spatial response, 7x7 convolutions and
    masks, the energy attention, and the activations and products joining the branches.
    """
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile

    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    runs = []
    with torch.inference_mode():
        net(x)
        with _labelled_dfr_parts(net):
            for _ in range(max(1, repeats)):
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    with record_function('drcnet.forward'):
                        net(x)
                runs.append(_dfr_times(prof.events()))
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    extras = med['dfr.block'] - med['dfr.dense_convs']
    forward = med['drcnet.forward']
    return {'forward_ms': forward, 'dfr_blocks_ms': med['dfr.block'], 'dfr_dense_convs_ms': med['dfr.dense_convs'],
            'region_norm_ms': med['dfr.region_norm'], 'attention_ms': med['dfr.attention'],
            'joins_ms': extras - med['dfr.region_norm'] - med['dfr.attention'],
            'extras_ms': extras, 'extras_share': extras / forward if forward > 0 else float('nan'),
            'note': 'profiled on CPU under torch.inference_mode; times include profiler overhead'}


# -------------------------------------------------------------------------------------- train step
def _photo_batch(batch: int, size: int, seed: int = 0) -> tuple:
    """(lq, gt) from scikit-image photographs: random crops, Gaussian noise sigma 25 on lq."""
    import numpy as np
    from skimage import data
    photos = [data.astronaut(), data.coffee(), data.rocket(), data.chelsea()]
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(batch):
        img = photos[i % len(photos)]
        y = rng.integers(0, img.shape[0] - size + 1)
        x = rng.integers(0, img.shape[1] - size + 1)
        crops.append(img[y:y + size, x:x + size].astype(np.float32).transpose(2, 0, 1) / 255.0)
    gt = torch.from_numpy(np.stack(crops))
    lq = (gt + torch.randn(gt.shape, generator=torch.Generator().manual_seed(seed)) * (25 / 255)).clamp(0, 1)
    return lq, gt


def make_train_step(net: nn.Module, lq: torch.Tensor, gt: torch.Tensor,
                    regulariser: Optional[nn.Module] = None) -> Callable[[], float]:
    """One optimisation step (forward, L1 on both stages [+ regulariser], backward, Adam)."""
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.9, 0.999))

    def step() -> float:
        optimiser.zero_grad(set_to_none=True)
        outs = net(lq)
        loss = sum(F.l1_loss(out, gt) for out in outs)
        if regulariser is not None:
            loss = loss + regulariser(outs, gt, lq)
        loss.backward()
        optimiser.step()
        return float(loss.detach())
    return step


def measure_train_step(net_kwargs: dict, batch: int, size: int, repeats: int,
                       device: torch.device = torch.device('cpu')) -> dict:
    """Paper-recipe steps with and without Intra-CR (random VGG weights), timed alternately."""
    try:
        from drcnet.losses.contrastive_loss import IntraCRLoss
    except ImportError as err:
        return {'unavailable': f'drcnet.losses.contrastive_loss: {err}'}
    lq, gt = (t.to(device) for t in _photo_batch(batch, size))
    torch.manual_seed(0)
    net_plain = DRCNet(**net_kwargs).to(device).train()
    net_cr = DRCNet(**net_kwargs).to(device).train()
    net_cr.load_state_dict(net_plain.state_dict())
    regulariser = IntraCRLoss(vgg_weights='random').to(device)
    # two warm-up steps each: the second Intra-CR step still ran 15 % slower than the later ones, which
    # decided the median of a --quick run's two timed steps
    plain, with_cr = time_pair(make_train_step(net_plain, lq, gt), make_train_step(net_cr, lq, gt, regulariser),
                               repeats, warmup=2, device=device)
    return {'network': net_kwargs, 'batch': batch, 'size': size,
            'ms_l1': plain['median_ms'], 'ms_l1_intra_cr': with_cr['median_ms'],
            'intra_cr_overhead': with_cr['median_ms'] / plain['median_ms'] - 1,
            'runs_ms_l1': plain['runs_ms'], 'runs_ms_l1_intra_cr': with_cr['runs_ms']}


# -------------------------------------------------------------------------------------------- data
def write_pair_folders(root: Path, copies: int = 2) -> tuple:
    """gt/ and lq/ folders of PNGs from scikit-image photographs (lq: Gaussian noise sigma 25)."""
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


def _loader_rate(dataset, workers: int, batch: int, batches: int) -> float:
    """Samples per second a training loader delivers, after its first batch (worker start-up)."""
    from drcnet.data.loader import build_dataloader
    loader = build_dataloader(dataset, 'train', batch_size_per_gpu=batch, num_worker_per_gpu=workers,
                              dataset_enlarge_ratio=max(1, math.ceil((batches + 2) * batch / len(dataset))),
                              persistent_workers=False)
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * batch / (time.perf_counter() - start)
    del it
    return rate


def measure_data(gt_size: int, batches: int, step_ms: Optional[float], workdir: Path) -> dict:
    """Paired folder and lmdb loading rates at ``gt_size`` with 0 and 2 workers."""
    try:
        from drcnet.data.paired_restoration_dataset import PairedRestorationDataset
    except ImportError as err:
        return {'unavailable': f'drcnet.data.paired_restoration_dataset: {err}'}
    gt_dir, lq_dir = write_pair_folders(workdir)
    roots = {'folder': (gt_dir, lq_dir, {'type': 'disk'})}
    result: dict = {'gt_size': gt_size, 'batch': 4}
    try:
        sys.path.insert(0, str(ROOT / 'scripts'))
        from create_lmdb import create_lmdb
        gt_lmdb, lq_lmdb = workdir / 'gt.lmdb', workdir / 'lq.lmdb'
        with open(os.devnull, 'w') as quiet, contextlib.redirect_stderr(quiet):  # progress bars
            create_lmdb(gt_dir, gt_lmdb)
            create_lmdb(lq_dir, lq_lmdb)
        roots['lmdb'] = (gt_lmdb, lq_lmdb, {'type': 'lmdb'})
    except Exception as err:  # noqa: BLE001  (report, do not fake)
        result['lmdb'] = {'unavailable': f'scripts/create_lmdb.py: {type(err).__name__}: {err}'}
    consumed = None
    if step_ms:
        # A step on 4 x 128^2 pixels processes the pixels of one gt_size-256 sample.
        consumed = (4 * 128 * 128) / (gt_size * gt_size) / (step_ms * 1e-3)
        result['consumed_samples_per_s'] = consumed
        result['consumed_from'] = f'paper-network L1 training step of {step_ms:.0f} ms on 4 x 128^2 px'
    for name, (gt, lq, backend) in roots.items():
        # a fresh data set object per loader, as a training run builds it
        entry = result.setdefault(name, {})
        for w in (0, 2):
            try:
                dataset = PairedRestorationDataset(str(gt), str(lq), io_backend=backend, gt_size=gt_size,
                                                   use_hflip=True, use_rot=True, phase='train')
                entry[f'workers_{w}_samples_per_s'] = _loader_rate(dataset, w, 4, batches)
            except Exception as err:  # noqa: BLE001  (report, do not fake)
                entry[f'workers_{w}_samples_per_s'] = f'unavailable: {type(err).__name__}: {_last_line(err)}'
                continue
            if consumed:
                entry[f'workers_{w}_ratio'] = entry[f'workers_{w}_samples_per_s'] / consumed
    return result


def _last_line(err: Exception) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else repr(err)


# ------------------------------------------------------------------------------------------- tiled
TILED_CHILD = r'''
import json, resource, sys, time


def peak_rss_mb():
    # VmHWM: the peak of this process's own address space. ru_maxrss is not used: across fork and
    # exec Linux carries the parent's high-water mark into the child's ru_maxrss.
    try:
        with open('/proc/self/status') as status:
            for line in status:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(int(sys.argv[5]))
from drcnet.archs.drcnet_arch import DRCNet
from drcnet.engine.device import pick_device
from drcnet.inference.tiling import restore
pick_device('cpu')  # as drcnet-infer does on a CPU
h, w, tile = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
net = DRCNet(wf=64, depth=4).eval()
img = torch.rand(1, 3, h, w)
start = time.perf_counter()
out = restore(net, img, tile=tile, overlap=32)
assert out.shape == img.shape and bool(torch.isfinite(out).all())
print(json.dumps({'seconds': time.perf_counter() - start, 'peak_rss_mb': peak_rss_mb(),
                  'ru_maxrss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def measure_tiled_rss(height: int, width: int, tile: int = 512, threads: Optional[int] = None) -> dict:
    """Peak RSS (MB) of a child process restoring an image tile by tile with the paper network.

    The child reports its own peak (VmHWM; ru_maxrss as a fall-back and for reference, inflated
    by the parent's peak when the parent is large).
    """
    if not (ROOT / 'drcnet' / 'inference' / 'tiling.py').is_file():
        return {'unavailable': 'drcnet/inference/tiling.py is missing'}
    threads = threads or torch.get_num_threads()
    proc = subprocess.run([sys.executable, '-c', TILED_CHILD, str(ROOT), str(height), str(width), str(tile),
                           str(threads)], capture_output=True, text=True)
    if proc.returncode != 0:
        return {'unavailable': f'tiled child failed: {proc.stderr.strip().splitlines()[-1:]}'}
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    return {'image': [height, width], 'tile': tile, 'overlap': 32, 'seconds': child['seconds'],
            'peak_rss_mb': child['peak_rss_mb'], 'child_ru_maxrss_mb': child['ru_maxrss_mb']}


# -------------------------------------------------------------------------------------------- CUDA
def cuda_variants(size: int, repeats: int, device: torch.device) -> dict:
    """Paper network on CUDA: fp32, bf16 autocast, channels_last and torch.compile."""
    net = DRCNet(**PAPER_KWARGS).to(device).eval()
    x = torch.rand(1, 3, size, size, device=device)
    out = {}

    def run(label, model, inp, autocast=False):
        def call():
            with torch.autocast('cuda', dtype=torch.bfloat16, enabled=autocast):
                return model(inp)
        with torch.inference_mode():
            out[label] = {'ms': time_call(call, repeats, warmup=3, device=device)['median_ms']}

    run('fp32', net, x)
    run('bf16_autocast', net, x, autocast=True)
    net_cl = net.to(memory_format=torch.channels_last)
    run('channels_last', net_cl, x.contiguous(memory_format=torch.channels_last))
    run('channels_last_bf16', net_cl, x.contiguous(memory_format=torch.channels_last), autocast=True)
    try:
        compiled = torch.compile(DRCNet(**PAPER_KWARGS).to(device).eval())
        run('compile', compiled, x)
        run('compile_bf16', compiled, x, autocast=True)
    except Exception as err:  # noqa: BLE001
        out['compile'] = {'unavailable': f'{type(err).__name__}: {err}'}
    return out


# ------------------------------------------------------------------------------------------ report
def _get(results: dict, path: str):
    node = results
    for key in path.split('.'):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, (int, float)) else None


def check_targets(results: dict) -> dict:
    """The issue's targets for this machine: value, bound and whether it is met (None: not measured)."""
    data_ratios = [_get(results, f'data.{name}.workers_2_ratio') for name in ('folder', 'lmdb')]
    data_ratio = min(r for r in data_ratios if r is not None) if any(r is not None for r in data_ratios) else None
    targets = {
        'forward.paper.256.ceiling_ratio': (_get(results, 'forward.paper.256.ceiling_ratio'), '>=', 0.85),
        'dfr_profile.demo.256.extras_share': (_get(results, 'dfr_profile.demo.256.extras_share'), '<=', 0.25),
        'train_step.intra_cr_overhead': (_get(results, 'train_step.intra_cr_overhead'), '<=', 0.35),
        'data.workers_2_ratio (min of folder, lmdb)': (data_ratio, '>=', 4.0),
        'tiled_peak_rss_mb': (_get(results, 'tiled_peak_rss_mb'), '<', 3000.0),
    }
    out = {}
    for name, (value, op, bound) in targets.items():
        met = None if value is None else (value >= bound if op == '>=' else value <= bound if op == '<=' else value < bound)
        out[name] = {'value': value, 'target': f'{op} {bound:g}', 'met': met}
    if results.get('tiled', {}).get('quick'):
        out['tiled_peak_rss_mb']['note'] = 'quick run: a smaller image than the 4000x3000 of the target'
    return out


def _fmt(value, spec: str = '.1f') -> str:
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def print_table(results: dict) -> None:
    meta = results['meta']
    print(f"DRCNet benchmark  device={meta['device']}  threads={meta['threads']}  dtype={meta['dtype']}  "
          f"torch={meta['torch']}  quick={meta['quick']}  load={meta['load_before']} -> {meta.get('load_after')}")
    if 'dfr_cpu_kernels' in meta:
        print(f"DFR blocks on the CPU: {meta['dfr_cpu_kernels']}")
    if 'forward' in results:
        print(f"\n{'network':<8}{'size':>6}{'ms/img':>10}{'GFLOP':>9}{'GFLOP/s':>9}{'ceiling':>9}{'ratio':>7}")
        for name, by_size in results['forward'].items():
            for size, r in by_size.items():
                print(f"{name:<8}{size:>6}{_fmt(r['ms']):>10}{_fmt(r['gflop']):>9}{_fmt(r['gflops']):>9}"
                      f"{_fmt(r.get('ceiling_gflops')):>9}{_fmt(r.get('ceiling_ratio'), '.2f'):>7}")
                extra = []
                if 'nchw_maps_ms' in r:
                    extra.append(f"NCHW maps {r['nchw_maps_ms']:.1f} ms")
                if 'reference_path_ms' in r:
                    extra.append(f"reference path {r['reference_path_ms']:.1f} ms")
                untuned = r.get('default_allocator', {})
                if 'ms' in untuned:
                    extra.append(f"glibc malloc defaults {untuned['ms']:.1f} ms")
                if extra:
                    print(f"{'':<14}(same results: {', '.join(extra)})")
    if 'dfr_profile' in results:
        for name, by_size in results['dfr_profile'].items():
            for size, r in by_size.items():
                print(f"\nDFR extras, {name} {size}px: {r['extras_share'] * 100:.1f} % of {r['forward_ms']:.1f} ms "
                      f"(region norm {r['region_norm_ms']:.1f}, attention {r['attention_ms']:.1f}, "
                      f"joins {r['joins_ms']:.1f}; dense convs in blocks {r['dfr_dense_convs_ms']:.1f} ms)")
    ts = results.get('train_step')
    if ts:
        if 'unavailable' in ts:
            print(f"\ntrain_step: unavailable: {ts['unavailable']}")
        else:
            print(f"\ntrain step (batch {ts['batch']}, {ts['size']}px): L1 {ts['ms_l1']:.0f} ms, "
                  f"L1 + Intra-CR {ts['ms_l1_intra_cr']:.0f} ms, overhead {ts['intra_cr_overhead']:.3f}")
    data = results.get('data')
    if data:
        if 'unavailable' in data:
            print(f"\ndata: unavailable: {data['unavailable']}")
        else:
            print(f"\ndata (gt_size {data['gt_size']}): consumed by a training step "
                  f"{_fmt(data.get('consumed_samples_per_s'), '.2f')} samples/s")
            for name in ('folder', 'lmdb'):
                r = data.get(name, {})
                if 'unavailable' in r:
                    print(f"  {name}: unavailable: {r['unavailable']}")
                    continue
                print(f"  {name:<7}" + '  '.join(
                    f"{w} workers {_fmt(r.get(f'workers_{w}_samples_per_s'))}/s (x{_fmt(r.get(f'workers_{w}_ratio'))})"
                    for w in (0, 2)))
    if 'tiled' in results:
        t = results['tiled']
        if 'unavailable' in t:
            print(f"\ntiled: unavailable: {t['unavailable']}")
        else:
            print(f"\ntiled {t['image'][1]}x{t['image'][0]} tile {t['tile']}: peak RSS {t['peak_rss_mb']:.0f} MB, "
                  f"{t['seconds']:.0f} s" + ('  (QUICK: smaller image than the 4000x3000 target)' if t.get('quick') else ''))
    if 'cuda' in results:
        print(f"\ncuda: {results['cuda']}")
    if 'targets' in results:
        print('\ntargets')
        for name, t in results['targets'].items():
            state = {True: 'met', False: 'NOT met', None: 'not measured'}[t['met']]
            print(f"  {name:<44} {_fmt(t['value'], '.3f'):>10}  {t['target']:<9} {state}  {t.get('note', '')}")


# -------------------------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> dict:
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    quick = args.quick
    repeats = args.repeats or (3 if quick else 7)
    sections = SECTIONS if not args.only else tuple(s.strip() for s in args.only.split(','))
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"--only: {', '.join(unknown)} not among {', '.join(SECTIONS)}")
    results: dict = {'meta': {
        'torch': torch.__version__, 'device': str(device), 'threads': torch.get_num_threads(), 'dtype': 'float32',
        'quick': quick, 'repeats': repeats, 'cpu': platform.processor() or platform.machine(),
        'cpu_allocator': ('freed memory kept for reuse (drcnet.engine.device)' if reuse_freed_cpu_memory()
                          else 'C library defaults'),
        'dfr_cpu_kernels': ('compiled (drcnet.archs.cpu_kernels)' if cpu_kernels.kernels() is not None
                            else 'PyTorch operations'),
        'load_before': load_average(), 'started': time.strftime('%Y-%m-%d %H:%M:%S')}}

    if 'forward' in sections:
        results['conv_ceiling_gflops'], results['conv_ceiling_levels'], results['forward'] = {}, {}, {}
        for name, kwargs in NETWORKS.items():
            torch.manual_seed(0)
            net = DRCNet(**kwargs).to(device).eval()
            for size in (256, 512):
                x = torch.rand(1, 3, size, size, device=device)
                r = measure_forward(net, size, repeats, conv_flops_by_level(net, x), device=device)
                results['conv_ceiling_gflops'].setdefault(name, {})[str(size)] = r['ceiling_gflops']
                results['conv_ceiling_levels'].setdefault(name, {})[str(size)] = r.pop('ceiling_levels')
                results['forward'].setdefault(name, {})[str(size)] = r
                print(f'forward {name} {size}: {r["ms"]:.1f} ms, ratio {r["ceiling_ratio"]:.2f}', file=sys.stderr)
            if device.type == 'cpu':
                results['forward'][name]['256'].update(cpu_layout_variants(net, 256, repeats))
            del net
        if device.type == 'cpu':
            untuned = measure_default_allocator(256, repeats)
            results['forward']['paper']['256']['default_allocator'] = untuned
            print(f'forward paper 256 with glibc malloc defaults: {untuned}', file=sys.stderr)

    if 'dfr_profile' in sections:
        torch.manual_seed(0)
        demo = DRCNet(**DEMO_KWARGS).eval()
        results['dfr_profile'] = {'demo': {'256': profile_dfr_extras(demo, 256, repeats=7)}}
        print('dfr profile done', file=sys.stderr)

    step_ms = None
    if 'train_step' in sections:
        results['train_step'] = measure_train_step(PAPER_KWARGS, 4, 128, max(2, repeats // 2 + 1), device=device)
        step_ms = results['train_step'].get('ms_l1')
        print('train step done', file=sys.stderr)

    if 'data' in sections:
        with tempfile.TemporaryDirectory(prefix='drcnet_bench_') as tmp:
            try:
                results['data'] = measure_data(256, 10 if quick else 40, step_ms, Path(tmp))
            except Exception as err:  # noqa: BLE001  (report, do not fake)
                results['data'] = {'unavailable': f'{type(err).__name__}: {err}'}
        print('data done', file=sys.stderr)

    if 'tiled' in sections:
        h, w = TILED_QUICK if quick else TILED_FULL
        results['tiled'] = measure_tiled_rss(h, w, 512)
        results['tiled']['quick'] = quick
        if 'peak_rss_mb' in results['tiled']:
            results['tiled_peak_rss_mb'] = results['tiled']['peak_rss_mb']
        print('tiled done', file=sys.stderr)

    if 'cuda' in sections:
        results['cuda'] = (cuda_variants(256, repeats, device) if device.type == 'cuda'
                           else {'unavailable': 'no CUDA device in this run'})

    results['targets'] = check_targets(results)
    results['meta']['load_after'] = load_average()
    results['meta']['finished'] = time.strftime('%Y-%m-%d %H:%M:%S')
    return results


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='fewer repeats and a smaller tiled image (< 3 min)')
    parser.add_argument('--json', type=Path, help='write the results here')
    parser.add_argument('--device', default='auto', help='auto, cpu or cuda')
    parser.add_argument('--threads', type=int, help='torch threads (default: torch.get_num_threads())')
    parser.add_argument('--repeats', type=int, help='timed runs per measurement (default 7, quick 3)')
    parser.add_argument('--only', help=f"comma-separated sections: {', '.join(SECTIONS)}")
    args = parser.parse_args(argv)
    results = run(args)
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f'\nwrote {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
