"""drcnet-train / python train.py -opt OPTIONS.yml [--launcher pytorch] [--auto_resume] [--debug]."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

import drcnet
from drcnet.data.loader import build_loader
from drcnet.engine.checkpoint import CheckpointError, atomic_save, load_file, load_network, save_network
from drcnet.engine.context import (RunContext, average_across_ranks, barrier, check_replicas, experiment_paths,
                                   init_context, shutdown)
from drcnet.engine.evaluator import evaluate
from drcnet.engine.logger import format_eta, setup_logger
from drcnet.engine.options import build_parser, dump_options, parse_options
from drcnet.engine.preflight import check_paths
from drcnet.engine.random_state import (agree_on_seed, capture_rng_state, gather_rng_states, restore_own_rng_state,
                                        restore_rng_state, seed_everything)
from drcnet.engine.schema import CONTRASTIVE_ENGINE_KEYS, OptionError
from drcnet.models.image_restoration_model import TrainingDiverged
from drcnet.registry import ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY, build, resolve

logger = logging.getLogger('basicsr')
STATE_KEYS = ('iter', 'epoch', 'params', 'optimizer', 'scheduler', 'rng')


# --- building from options (the edge: below here, objects take plain arguments) ---------------------
def build_contrastive(cfg: dict | None):
    if cfg is None:
        return None
    cfg = dict(cfg)
    skip = cfg.pop('skip_if_no_weights', False)
    if skip and cfg.get('vgg_weights') != 'random':
        from drcnet.losses.vgg_features import find_vgg19_weights
        try:
            find_vgg19_weights(cfg.get('vgg_weights'), download=False)
        except (FileNotFoundError, ValueError) as err:
            logger.warning(f'train.contrastive_opt: Intra-CR is off for this run ({err})')
            return None
    assert not set(cfg) & set(CONTRASTIVE_ENGINE_KEYS)
    return build(LOSS_REGISTRY, cfg, where='train.contrastive_opt')


class PerOutputLoss(nn.Module):
    """pixel_opt plus fft_opt on one output, the target resized bilinearly to the output's size first.

    Bridges train.fft_opt and smaller outputs (CCNet's 1/4 and 1/2 scales) to a model that calls one pixel loss
    per output with the full-size target; the logged l_pix is the sum of both terms.
    """

    def __init__(self, pixel: nn.Module | None, fft: nn.Module | None):
        super().__init__()
        self.pixel, self.fft = pixel, fft

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """pred (B, C, h, w), target (B, C, H, W) -> scalar."""
        if pred.shape[-2:] != target.shape[-2:]:  # as CCNet's authors: bilinear, align_corners False
            target = F.interpolate(target, size=pred.shape[-2:], mode='bilinear', align_corners=False)
        terms = [loss(pred, target) for loss in (self.pixel, self.fft) if loss is not None]
        return sum(terms[1:], terms[0])


def build_model(opts: dict, ctx: RunContext, net=None):
    train = opts['train']
    net = net if net is not None else build(ARCH_REGISTRY, opts['network_g'], where='network_g')
    pretrain = opts['path']['pretrain_network_g']
    if pretrain:
        load_network(net, pretrain, param_key=opts['path']['param_key_g'], strict=opts['path']['strict_load_g'])
    model_cls = resolve(MODEL_REGISTRY, opts['model_type'], where='model_type')
    pixel = build(LOSS_REGISTRY, train['pixel_opt'], where='train.pixel_opt') if train['pixel_opt'] else None
    fft = build(LOSS_REGISTRY, train['fft_opt'], where='train.fft_opt') if train['fft_opt'] else None
    pixel = PerOutputLoss(pixel, fft) if pixel is not None or fft is not None else None
    return model_cls(
        net_g=net, device=ctx.device, pixel_loss=pixel, contrastive_loss=build_contrastive(train['contrastive_opt']),
        optim_g=train['optim_g'], scheduler=train['scheduler'], warmup_iter=train['warmup_iter'],
        ema_decay=train['ema_decay'], grad_clip_norm=train['grad_clip_norm'] if train['use_grad_clip'] else None,
        mixed_precision=train['mixed_precision'], channels_last=train['channels_last'], ddp=ctx.distributed)


# --- checkpoints and resume ---------------------------------------------------------------------
def save_checkpoint(model, opts: dict, ctx: RunContext, current_iter: int, epoch: int, batch_in_epoch: int,
                    tag: str | None = None) -> None:
    """Rank 0 writes the weights and the training state, with every rank's random states (keyed by rank).

    Every rank must call it (the random states are gathered); only rank 0 writes.
    """
    rng = gather_rng_states(ctx)
    if ctx.is_main:
        paths, tag = ctx.paths, tag or str(current_iter)
        ema = model.ema.module if model.ema is not None else None
        save_network(model.net_g, paths['models'] / f'net_g_{tag}.pth', opts['network_g'], ema_net=ema)
        state = model.training_state(current_iter, epoch, extra={'batch_in_epoch': batch_in_epoch, 'rng': rng})
        atomic_save(state, paths['training_states'] / f'{current_iter}.state')
        logger.info(f'saved net_g_{tag}.pth and training state {current_iter}.state')
    barrier(ctx)


def find_resume_state(folder: Path) -> tuple[Path, dict] | None:
    """The newest training state in ``folder`` that loads; bad files are skipped with a warning."""
    if not folder.is_dir():
        return None
    candidates = []
    for path in folder.glob('*.state'):
        try:
            candidates.append((int(path.stem), path))
        except ValueError:
            logger.warning(f'auto_resume: ignoring {path} (not named <iteration>.state)')
    for _, path in sorted(candidates, reverse=True):
        try:
            state = load_file(path)
            missing = [k for k in STATE_KEYS if k not in state]
            if missing:
                raise CheckpointError(f'{path}: not a training state (missing {", ".join(missing)})')
            return path, state
        except CheckpointError as err:
            logger.warning(f'auto_resume: skipping unreadable training state {path}: {err}')
    return None


def progressive_phase(progressive: dict | None, current_iter: int) -> int | None:
    """Index of the progressive phase that iteration ``current_iter`` (0-based) belongs to."""
    if not progressive:
        return None
    for i, end in enumerate(progressive['iters']):
        if current_iter < end:
            return i
    return len(progressive['iters']) - 1


# --- validation ---------------------------------------------------------------------------------
def validate(model, val_loaders: dict, opts: dict, current_iter: int, tb) -> list:
    rng = capture_rng_state()  # validation must not change the training run's random stream
    try:
        return _validate(model, val_loaders, opts, current_iter, tb)
    finally:
        restore_rng_state(rng)


def _validate(model, val_loaders: dict, opts: dict, current_iter: int, tb) -> list:
    val = opts['val']
    rows = []
    for name, (cfg, loader) in val_loaders.items():
        save_dir = Path(opts['path']['experiments_root']) / opts['name'] / 'visualization' if val['save_img'] else None

        def restore_fn(lq):
            model.feed_data({'lq': lq})
            return model.test(tile=val['tile'], overlap=val['tile_overlap'], tta=val['tta'], use_ema=val['use_ema'])

        row = evaluate(restore_fn, loader, cfg['name'], val['metrics'], test_y_channel=cfg['test_y_channel'],
                       save_dir=save_dir, suffix=str(current_iter), pbar=False, with_input=True)
        rows.append(row)
        values = ', '.join(f'{k} {row[k]:.4f}' for k in val['metrics'] if k in row)
        inputs = ', '.join(f'{k} {row["input_" + k]:.4f}' for k in val['metrics'] if 'input_' + k in row)
        logger.info(f'validation {cfg["name"]} @ iter {current_iter} ({row["protocol"]}): {values} '
                    f'(input: {inputs})')
        if tb is not None:
            for k in val['metrics']:
                if k in row:
                    tb.add_scalar(f'metrics/{cfg["name"]}/{k}', row[k], current_iter)
    return rows


# --- the loop -----------------------------------------------------------------------------------
def train(opts: dict, ctx: RunContext, auto_resume: bool = False) -> dict:
    """Train as ``opts`` says; returns a summary (final iteration, last validation rows, paths)."""
    paths = experiment_paths(opts['path']['experiments_root'], opts['name'])
    ctx.paths = paths
    resume = None
    if opts['path']['resume_state']:
        path = Path(opts['path']['resume_state'])
        resume = (path, load_file(path))
    elif auto_resume:
        resume = find_resume_state(paths['training_states'])
    if ctx.is_main:
        for key in ('models', 'training_states'):
            paths[key].mkdir(parents=True, exist_ok=True)
    barrier(ctx)
    setup_logger(paths['root'] / f'train_{opts["name"]}_{time.strftime("%Y%m%d_%H%M%S")}.log', ctx.rank)
    logger.info(f'drcnet {drcnet.__version__}, torch {torch.__version__}, device {ctx.device}, '
                f'world size {ctx.world_size}\n{dump_options(opts)}')

    seed = agree_on_seed(opts['manual_seed'], ctx)
    if opts['manual_seed'] is None:
        logger.info(f'manual_seed not set: this run uses seed {seed} (set manual_seed: {seed} to repeat it)')
    seed_everything(seed + ctx.rank)  # each rank its own stream; the sampler's permutation uses the shared seed
    train_opts = opts['train']
    progressive = train_opts['progressive']
    phase_idx = progressive_phase(progressive, 0)

    def make_train_loader(idx):
        over = {}
        if idx is not None:
            over = {'gt_size': progressive['gt_size'][idx], 'batch_size_per_gpu': progressive['batch_size'][idx]}
        return build_loader(opts['datasets']['train'], 'datasets.train', rank=ctx.rank, world_size=ctx.world_size,
                            seed=seed, device=ctx.device, **over)

    train_set, train_loader = make_train_loader(phase_idx)
    val_loaders = {}
    for name, cfg in opts['datasets'].items():
        if name != 'train':
            val_loaders[name] = (cfg, build_loader(cfg, f'datasets.{name}', seed=seed, device=ctx.device)[1])
    accum = train_opts['accum_iter']
    total_iter = train_opts['total_iter']
    if len(train_loader) < accum:
        raise OptionError(f'datasets.train: {len(train_loader)} batch(es) per epoch, fewer than train.accum_iter '
                          f'({accum}); use more data, dataset_enlarge_ratio or a smaller batch')
    logger.info(f'training set: {len(train_set)} samples, {len(train_loader)} batches per epoch per process; '
                f'{total_iter} iterations of {accum} batch(es) x {ctx.world_size} process(es)')

    model = build_model(opts, ctx)
    start_iter, epoch, skip_batches = 0, 0, 0
    if resume is not None:
        path, state = resume
        model.resume_training(state)
        start_iter, epoch, skip_batches = state['iter'], state['epoch'], state.get('batch_in_epoch', 0)
        restore_own_rng_state(state['rng'], ctx)
        logger.info(f'resumed from {path}: iteration {start_iter}, epoch {epoch}')
        if progressive_phase(progressive, start_iter) != phase_idx:
            phase_idx = progressive_phase(progressive, start_iter)
            train_set, train_loader = make_train_loader(phase_idx)

    tb = None
    if opts['logger']['use_tb_logger'] and ctx.is_main:
        from torch.utils.tensorboard import SummaryWriter
        tb = SummaryWriter(log_dir=str(paths['tb_logger']))

    log_opts, val_opts = opts['logger'], opts['val']
    current_iter, last_rows, batch_in_epoch = start_iter, [], skip_batches
    t_start, iter_done = time.time(), 0
    data_time = iter_time = 0.0
    while current_iter < total_iter:
        if hasattr(train_loader.sampler, 'set_epoch'):
            train_loader.sampler.set_epoch(epoch)
        batch_iter = iter(train_loader)
        for _ in range(skip_batches):  # each sample's draws are seeded by its place in the epoch: skipping is exact
            next(batch_iter, None)
        batch_in_epoch = skip_batches
        skip_batches = 0
        t0 = time.time()
        while current_iter < total_iter:
            batches = []
            for _ in range(accum):
                data = next(batch_iter, None)
                if data is None:
                    break
                batches.append(data)
            if len(batches) < accum:
                break
            batch_in_epoch += accum
            t_data = time.time()
            data_time += t_data - t0
            try:
                losses = model.train_step(batches, current_iter)  # every rank raises together (flags agreed)
            except TrainingDiverged as err:
                raise TrainingDiverged(f'{err}; stopped without saving (last good checkpoint kept)') from None
            current_iter += 1
            iter_done += 1
            t0 = time.time()
            iter_time += t0 - t_data
            if current_iter % log_opts['print_freq'] == 0 or current_iter == total_iter:
                losses = average_across_ranks(ctx, losses)
                per_iter = (time.time() - t_start) / iter_done
                eta = format_eta(per_iter * (total_iter - current_iter))
                terms = ' '.join(f'{k}: {v:.4e}' for k, v in losses.items())
                logger.info(f'[epoch {epoch} iter {current_iter:,}/{total_iter:,}] lr {model.current_lr():.3e} '
                            f'{terms} | data {data_time / iter_done:.3f}s iter {iter_time / iter_done:.3f}s '
                            f'eta {eta}')
                if tb is not None:
                    for k, v in losses.items():
                        tb.add_scalar(f'losses/{k}', v, current_iter)
                    tb.add_scalar('lr', model.current_lr(), current_iter)
            if current_iter % int(log_opts['save_checkpoint_freq']) == 0 and current_iter < total_iter:
                save_checkpoint(model, opts, ctx, current_iter, epoch, batch_in_epoch)
            if val_loaders and current_iter % int(val_opts['val_freq']) == 0:
                if ctx.is_main:
                    last_rows = validate(model, val_loaders, opts, current_iter, tb)
                barrier(ctx)
            if progressive is not None and progressive_phase(progressive, current_iter) != phase_idx:
                phase_idx = progressive_phase(progressive, current_iter)
                logger.info(f'progressive training: gt_size {progressive["gt_size"][phase_idx]}, '
                            f'batch {progressive["batch_size"][phase_idx]} from iteration {current_iter}')
                train_set, train_loader = make_train_loader(phase_idx)
                break
        if current_iter < total_iter:
            epoch += 1

    check_replicas(ctx, model.net_g)
    save_checkpoint(model, opts, ctx, current_iter, epoch, batch_in_epoch, tag='latest')
    if ctx.is_main:
        if val_loaders and (not last_rows or current_iter % int(val_opts['val_freq']) != 0):
            last_rows = validate(model, val_loaders, opts, current_iter, tb)
    barrier(ctx)
    if tb is not None:
        tb.close()
    logger.info(f'training done: {current_iter} iterations in {format_eta(time.time() - t_start)}')
    return {'iter': current_iter, 'rows': last_rows, 'paths': paths, 'model': model}


def main(argv=None) -> int:
    args = build_parser('Train a DRCNet (or another registered network).').parse_args(argv)
    setup_logger(None)
    try:
        opts = parse_options(args, is_train=True)
        check_paths(opts, is_train=True)
    except OptionError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    ctx = init_context(args.launcher, opts['device'], opts['dist_params']['backend'],
                       opts['dist_params']['timeout_minutes'])
    try:
        train(opts, ctx, auto_resume=args.auto_resume)
    except TrainingDiverged as err:
        logger.error(str(err))
        return 1
    except (OptionError, CheckpointError, ValueError) as err:
        if args.debug:
            raise
        logger.error(f'{type(err).__name__}: {err}  (run with --debug for the traceback)')
        return 2
    finally:
        shutdown(ctx)
    return 0


if __name__ == '__main__':
    sys.exit(main())
