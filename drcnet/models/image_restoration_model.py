"""ImageRestorationModel: trains and runs a multi-output restoration network (BasicSR style).

The model orchestrates; the network, losses, EMA, schedules, checkpoint files and tiling live in
their own modules. It takes plain objects and keyword arguments, never the options dict.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Mapping, Sequence

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from drcnet.engine.context import flags_by_rank
from drcnet.engine.ema import EMA
from drcnet.engine.optim import build_optimizer
from drcnet.engine.schedules import build_scheduler
from drcnet.archs.outputs import as_output_list, final_image
from drcnet.inference.tiling import restore
from drcnet.losses.per_output import PerOutputLoss, targets_for
from drcnet.registry import MODEL_REGISTRY

logger = logging.getLogger('basicsr')

class TrainingDiverged(RuntimeError):
    """A loss term became NaN or infinite."""


@MODEL_REGISTRY.register()
class ImageRestorationModel:
    """Every per-output loss on every image the network returns, plus the contrastive loss ``(preds, gt, lq)``.

    Args:
        net_g: the network; ``forward`` returns one tensor or a list of images, the final one last
            (``drcnet.archs.outputs``).
        device: where everything runs.
        pixel_loss: logged as ``l_pix``; a loss module ``(pred, target)`` (every output weighs 1) or a
            :class:`~drcnet.losses.per_output.PerOutputLoss` carrying per-output weights.
        output_losses: further per-output terms, log name -> loss as for ``pixel_loss`` (e.g. ``l_edge``).
            An output of another size than the target is compared with the target resized bilinearly.
        contrastive_loss: a built contrastive loss or None.
        optim_g: ``{'type': 'Adam', 'lr': ..., ...}`` (None: an inference-only model).
        scheduler, warmup_iter: see ``drcnet.engine.schedules``.
        ema_decay: > 0 keeps an EMA copy (saved as ``params_ema``).
        grad_clip_norm: clip the gradient norm to this value when not None.
        mixed_precision: 'none', 'bf16' (CPU or CUDA) or 'fp16' (CUDA, with a gradient scaler).
        channels_last: run the network in channels-last memory format.
        ddp: wrap the network in DistributedDataParallel (torchrun runs).
    """

    def __init__(self, net_g: nn.Module, device: torch.device, pixel_loss: nn.Module | None = None,
                 contrastive_loss: nn.Module | None = None, optim_g: dict | None = None,
                 scheduler: dict | None = None, warmup_iter: int = -1, ema_decay: float = 0.0,
                 grad_clip_norm: float | None = None, mixed_precision: str = 'none',
                 channels_last: bool = False, ddp: bool = False,
                 output_losses: Mapping[str, nn.Module] | None = None):
        self.device = torch.device(device)
        if mixed_precision == 'fp16' and self.device.type != 'cuda':
            raise ValueError("train.mixed_precision: 'fp16' needs CUDA; use 'bf16' on the CPU")
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net_g = net_g.to(self.device, memory_format=self.memory_format)
        self.ema = EMA(self.net_g, ema_decay) if ema_decay > 0 else None
        self.net_train = self.net_g
        self.distributed = ddp
        if ddp:
            ids = [self.device.index] if self.device.type == 'cuda' else None
            self.net_train = DistributedDataParallel(self.net_g, device_ids=ids)
        losses = {'l_pix': pixel_loss} if pixel_loss is not None else {}
        losses.update(output_losses or {})
        self.output_losses = {name: (loss if isinstance(loss, PerOutputLoss) else PerOutputLoss(loss, key=name))
                              .to(self.device) for name, loss in losses.items() if loss is not None}
        self.contrastive_loss = contrastive_loss.to(self.device) if contrastive_loss is not None else None
        self.grad_clip_norm = grad_clip_norm
        self.amp_dtype = {'none': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[mixed_precision]
        self.scaler = torch.amp.GradScaler('cuda') if mixed_precision == 'fp16' else None
        self.optimizer = self.scheduler = None
        if optim_g is not None:
            params = [p for p in self.net_g.parameters() if p.requires_grad]
            self.optimizer = build_optimizer(params, optim_g)
            self.scheduler = build_scheduler(self.optimizer, scheduler, warmup_iter)
        self.lq = self.gt = self.output = None

    # --- data --------------------------------------------------------------------------------
    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)

    def feed_data(self, data: dict) -> None:
        self.lq = self._to_device(data['lq'])
        self.gt = self._to_device(data['gt']) if 'gt' in data else None

    # --- training ----------------------------------------------------------------------------
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _loss_terms(self, preds: Sequence[torch.Tensor], gt: torch.Tensor, lq: torch.Tensor) -> dict:
        terms = {}
        preds = [p.float() for p in preds]
        if self.output_losses:
            targets = targets_for(preds, gt)
            for name, loss in self.output_losses.items():
                terms[name] = loss(preds, targets)
        if self.contrastive_loss is not None:
            terms['l_cr'] = self.contrastive_loss(preds, gt, lq)
        return terms

    def train_step(self, batches: Sequence[dict], current_iter: int) -> dict:
        """One optimiser step over ``batches`` (gradient accumulation); returns the mean loss terms."""
        self.net_train.train()
        self.optimizer.zero_grad(set_to_none=True)
        logged: dict = {}
        for i, data in enumerate(batches):
            self.feed_data(data)
            sync = i == len(batches) - 1 or not isinstance(self.net_train, DistributedDataParallel)
            with (contextlib.nullcontext() if sync else self.net_train.no_sync()):
                with self._autocast():
                    out = self.net_train(self.lq)
                preds = as_output_list(out)
                terms = self._loss_terms(preds, self.gt, self.lq)
                self._stop_if_diverged(terms, current_iter)
                for name, value in terms.items():
                    logged[name] = logged.get(name, 0.0) + value.item() / len(batches)
                total = sum(terms.values()) / len(batches)
                (self.scaler.scale(total) if self.scaler else total).backward()
        self.output = final_image(preds).detach()
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.net_g.parameters(), self.grad_clip_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.net_g)
        return logged

    def _stop_if_diverged(self, terms: dict, current_iter: int) -> None:
        """Raise TrainingDiverged when a loss term is NaN/inf here or, under DDP, on any rank.

        Under DDP every rank learns every rank's verdict before ``backward()``, so all of them stop at the
        same point instead of the healthy ones waiting for the stopped one in the gradient all-reduce.
        """
        names = list(terms)
        bad = [not bool(torch.isfinite(terms[n]).all()) for n in names]
        if not self.distributed:
            for name, value, is_bad in zip(names, terms.values(), bad):
                if is_bad:
                    raise TrainingDiverged(f'iteration {current_iter}: loss term {name} is {value.item()}')
            return
        by_rank = flags_by_rank(bad, self.device)
        culprits = [(n, [r for r, row in enumerate(by_rank) if row[i]]) for i, n in enumerate(names)]
        culprits = [(n, ranks) for n, ranks in culprits if ranks]
        if culprits:
            said = '; '.join(f'loss term {n} is not finite on rank {", ".join(map(str, ranks))}'
                             for n, ranks in culprits)
            raise TrainingDiverged(f'iteration {current_iter}: {said}')

    def optimize_parameters(self, current_iter: int) -> dict:
        """BasicSR's entry point: one step on the data given to ``feed_data``."""
        return self.train_step([{'lq': self.lq, 'gt': self.gt}], current_iter)

    def current_lr(self) -> float:
        return self.optimizer.param_groups[0]['lr']

    # --- inference ---------------------------------------------------------------------------
    def inference_net(self, use_ema: bool = True) -> nn.Module:
        net = self.ema.module if (use_ema and self.ema is not None) else self.net_g
        return net.eval()

    def test(self, tile: int | None = None, overlap: int = 32, tta: bool = False, use_ema: bool = True) -> torch.Tensor:
        """Restore the fed ``lq``; returns and keeps ``self.output`` (B, 3, H, W) in [0, 1]-ish range.

        Always float32 with autocast off, whatever ``mixed_precision`` training uses, so that validation
        during training scores exactly what ``test.py`` scores for the same weights.
        """
        net = self.inference_net(use_ema)
        with torch.autocast(self.device.type, enabled=False):
            self.output = restore(net, self.lq.float(), tile=tile, overlap=overlap, tta=tta).float()
        return self.output

    # --- state -------------------------------------------------------------------------------
    def training_state(self, current_iter: int, epoch: int, extra: dict | None = None) -> dict:
        """Everything a resume needs, as plain tensors and containers (loadable with weights_only)."""
        state = {'iter': current_iter, 'epoch': epoch,
                 'params': {k: v.detach().cpu() for k, v in self.net_g.state_dict().items()},
                 'optimizer': self.optimizer.state_dict(), 'scheduler': self.scheduler.state_dict()}
        if self.ema is not None:
            state['params_ema'] = {k: v.detach().cpu() for k, v in self.ema.module.state_dict().items()}
        if self.scaler is not None:
            state['scaler'] = self.scaler.state_dict()
        if extra:
            state.update(extra)
        return state

    def resume_training(self, state: dict) -> None:
        self.net_g.load_state_dict(state['params'])
        if self.ema is not None:
            if 'params_ema' not in state:
                raise ValueError('training state has no params_ema but train.ema_decay > 0')
            self.ema.module.load_state_dict(state['params_ema'])
        self.optimizer.load_state_dict(state['optimizer'])
        self.scheduler.load_state_dict(state['scheduler'])
        if self.scaler is not None and 'scaler' in state:
            self.scaler.load_state_dict(state['scaler'])
