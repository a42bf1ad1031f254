"""Intra-class contrastive regularisation (Intra-CR, DRCNet section 3.3) and its Extra-CR ablation twin.

For a restored image X, its target J and its degraded input I, per VGG19 layer l:
``d_ap / (sum_j c_j * d_an_j + eps)`` with L1 distances (means) between VGG features, and the
regulariser ``alpha * sum_l w_l * term_l``, summed over the stage outputs. The pixel loss is not
included: it comes from ``train.pixel_opt``.
"""
from __future__ import annotations

import logging
import os
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from drcnet.losses.vgg_features import VGG19_LAYERS, VGGFeatureExtractor
from drcnet.registry import LOSS_REGISTRY

__all__ = ['ExtraCRLoss', 'IntraCRLoss']

logger = logging.getLogger('basicsr')

DEFAULT_MIXUP = (1.0, 0.95, 0.90)
DEFAULT_NEG_WEIGHTS = (1.0, 0.95, 0.90)
DEFAULT_LAYER_WEIGHTS = {'relu1_1': 1.0 / 16, 'relu2_1': 1.0 / 8, 'relu3_1': 1.0 / 4}

Images = Union[torch.Tensor, Sequence[torch.Tensor]]


def _number_list(value, name: str, where: str, low: float = 0.0, high: Optional[float] = None) -> Tuple[float, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise ValueError(f'{where}.{name}: expected a non-empty list of numbers, got {value!r}')
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise ValueError(f'{where}.{name}: {item!r} is not a number')
        if item < low or (high is not None and item > high):
            bound = f'[{low}, {high}]' if high is not None else f'>= {low}'
            raise ValueError(f'{where}.{name}: {item!r} is outside {bound}')
        out.append(float(item))
    return tuple(out)


def _l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # float32 so that the ratio is stable under bf16/fp16 autocast
    return (a.float() - b.float()).abs().mean()


class _ContrastiveRegulariser(nn.Module):
    """Shared machinery: options, the frozen extractor (kept out of the module tree) and the ratio."""

    def __init__(self, alpha: float, mixup: Optional[Sequence[float]], neg_weights: Sequence[float],
                 layer_weights: Mapping[str, float], eps: float, use_input_norm: bool,
                 vgg_weights: Optional[Union[str, os.PathLike]]):
        super().__init__()
        where = type(self).__name__
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
            raise ValueError(f'{where}.alpha: expected a number >= 0, got {alpha!r}')
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps <= 0:
            raise ValueError(f'{where}.eps: expected a number > 0, got {eps!r}')
        self.alpha = float(alpha)
        self.eps = float(eps)
        self.neg_weights = _number_list(neg_weights, 'neg_weights', where)
        if sum(self.neg_weights) <= 0:
            raise ValueError(f'{where}.neg_weights: at least one weight must be > 0, got {neg_weights!r}')
        self.mixup = None if mixup is None else _number_list(mixup, 'mixup', where, 0.0, 1.0)
        if self.mixup is not None and len(self.mixup) != len(self.neg_weights):
            raise ValueError(f'{where}.mixup and {where}.neg_weights must have the same length (one weight per '
                             f'negative), got {len(self.mixup)} and {len(self.neg_weights)}')
        if not isinstance(layer_weights, Mapping) or not layer_weights:
            raise ValueError(f'{where}.layer_weights: expected a non-empty mapping of VGG19 layer name to weight, '
                             f'got {layer_weights!r}')
        for name, weight in layer_weights.items():
            if name not in VGG19_LAYERS:
                raise ValueError(f'{where}.layer_weights: {name!r} is not a VGG19 layer; valid names: '
                                 f'{", ".join(VGG19_LAYERS)}')
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise ValueError(f'{where}.layer_weights.{name}: {weight!r} is not a number')
        self.layer_weights = {name: float(w) for name, w in layer_weights.items()}
        if not isinstance(use_input_norm, bool):
            raise ValueError(f'{where}.use_input_norm: expected true or false, got {use_input_norm!r}')
        extractor = VGGFeatureExtractor(layers=tuple(self.layer_weights), weights=vgg_weights,
                                        use_input_norm=use_input_norm)
        # Deliberately not a submodule: the frozen VGG never appears in parameters() or state_dict()
        # (clean checkpoints, never seen by an optimiser or DDP); _apply below moves it with the loss.
        object.__setattr__(self, 'vgg', extractor)

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self.vgg._apply(fn)
        return self

    def extra_repr(self) -> str:
        return (f'alpha={self.alpha}, mixup={self.mixup}, neg_weights={self.neg_weights}, '
                f'layer_weights={self.layer_weights}, eps={self.eps}, vgg={self.vgg.extra_repr()}')

    # -- negatives -------------------------------------------------------------------------------------------
    def _negatives(self, batch: int) -> List[Tuple[float, int, float]]:
        """(mixup lambda on the degraded input, batch shift of the image it comes from, weight c_j)."""
        raise NotImplementedError

    @staticmethod
    def _check_inputs(pred: Images, gt: torch.Tensor, lq: torch.Tensor, where: str) -> List[torch.Tensor]:
        preds = [pred] if torch.is_tensor(pred) else list(pred) if isinstance(pred, (list, tuple)) else None
        if not preds or not all(torch.is_tensor(p) for p in preds):
            raise ValueError(f'{where}: pred must be a tensor or a non-empty list of tensors (the stage outputs), '
                             f'got {type(pred).__name__}')
        if not torch.is_tensor(gt) or gt.dim() != 4 or gt.shape[1] != 3:
            raise ValueError(f'{where}: gt must be a (B, 3, H, W) tensor, got '
                             f'{tuple(gt.shape) if torch.is_tensor(gt) else type(gt).__name__}')
        if not torch.is_tensor(lq) or lq.shape != gt.shape:
            raise ValueError(f'{where}: lq must have the shape of gt {tuple(gt.shape)}, got '
                             f'{tuple(lq.shape) if torch.is_tensor(lq) else type(lq).__name__}')
        for i, p in enumerate(preds):
            if p.shape != gt.shape:
                raise ValueError(f'{where}: pred[{i}] has shape {tuple(p.shape)}, gt has {tuple(gt.shape)}')
        return preds

    def forward(self, pred: Images, gt: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
        """pred (B, 3, H, W) or a list of them (stage outputs), gt and lq (B, 3, H, W) -> scalar regulariser.

        The features of gt and every negative come from one batched pass without gradient, shared by
        all stages; the stage outputs go through the VGG together in one batched pass.
        """
        preds = self._check_inputs(pred, gt, lq, type(self).__name__)
        batch = gt.shape[0]
        negatives = self._negatives(batch)
        lambdas = sorted({lam for lam, _, _ in negatives}, reverse=True)
        with torch.no_grad():
            gt_d, lq_d = gt.detach(), lq.detach()
            mixed = [lq_d if lam == 1.0 else lam * lq_d + (1.0 - lam) * gt_d for lam in lambdas]
            fixed = self.vgg(torch.cat([gt_d] + mixed, dim=0))
        pred_feats = self.vgg(preds[0] if len(preds) == 1 else torch.cat(preds, dim=0))

        total = None
        for name, weight in self.layer_weights.items():
            target, *mixed_feats = fixed[name].split(batch, dim=0)
            by_lambda = dict(zip(lambdas, mixed_feats))
            neg_feats = [(c, by_lambda[lam] if shift == 0 else torch.roll(by_lambda[lam], shift, dims=0))
                         for lam, shift, c in negatives]
            for feat in pred_feats[name].split(batch, dim=0):
                d_ap = _l1(feat, target)
                d_an = sum(c * _l1(feat, neg) for c, neg in neg_feats)
                term = weight * d_ap / (d_an + self.eps)
                total = term if total is None else total + term
        return self.alpha * total


@LOSS_REGISTRY.register()
class IntraCRLoss(_ContrastiveRegulariser):
    """Intra-CR: negatives are mixups ``lambda_j * lq + (1 - lambda_j) * gt`` of the same image.

    ``loss(pred, gt, lq)`` returns ``alpha * sum_l w_l * d_ap / (sum_j c_j d_an_j + eps)`` (summed over
    stages when ``pred`` is a list); ``vgg_weights``: a path, None (search the usual places) or
    ``'random'`` (tests only).
    """

    def __init__(self, alpha: float = 0.04, mixup: Sequence[float] = DEFAULT_MIXUP,
                 neg_weights: Sequence[float] = DEFAULT_NEG_WEIGHTS,
                 layer_weights: Optional[Mapping[str, float]] = None, eps: float = 1e-7,
                 use_input_norm: bool = False, vgg_weights: Optional[Union[str, os.PathLike]] = None):
        if mixup is None:
            raise ValueError('IntraCRLoss.mixup: expected a list of mixup factors, one per negative, got None')
        super().__init__(alpha, mixup, neg_weights, dict(DEFAULT_LAYER_WEIGHTS if layer_weights is None
                                                          else layer_weights),
                         eps, use_input_norm, vgg_weights)

    def _negatives(self, batch: int) -> List[Tuple[float, int, float]]:
        return [(lam, 0, c) for lam, c in zip(self.mixup, self.neg_weights)]


@LOSS_REGISTRY.register()
class ExtraCRLoss(_ContrastiveRegulariser):
    """Extra-CR (ablation): negatives are the degraded inputs of OTHER images of the batch.

    Negative j of image b is ``lq[(b - j) % B]`` for j = 1..n, n = ``len(neg_weights)``, weighted by
    ``neg_weights[j-1]``; with fewer than n other images, n = B - 1 (the weights are truncated). With
    ``mixup`` given, negative j is that other image's mixup ``m_j * lq + (1 - m_j) * gt`` instead.
    A batch of one image has no other image: ValueError.
    """

    def __init__(self, alpha: float = 0.04, mixup: Optional[Sequence[float]] = None,
                 neg_weights: Sequence[float] = DEFAULT_NEG_WEIGHTS,
                 layer_weights: Optional[Mapping[str, float]] = None, eps: float = 1e-7,
                 use_input_norm: bool = False, vgg_weights: Optional[Union[str, os.PathLike]] = None):
        super().__init__(alpha, mixup, neg_weights, dict(DEFAULT_LAYER_WEIGHTS if layer_weights is None
                                                          else layer_weights),
                         eps, use_input_norm, vgg_weights)
        self._warned_batches = set()

    def _negatives(self, batch: int) -> List[Tuple[float, int, float]]:
        if batch < 2:
            raise ValueError(f'ExtraCRLoss: needs a batch of at least 2 images (its negatives are the degraded '
                             f'inputs of the OTHER images of the batch), got a batch of {batch}')
        count = min(len(self.neg_weights), batch - 1)
        if count < len(self.neg_weights) and batch not in self._warned_batches:
            self._warned_batches.add(batch)
            logger.warning('ExtraCRLoss: batch of %d gives %d negatives per image instead of %d '
                           '(neg_weights truncated)', batch, count, len(self.neg_weights))
        mixup = self.mixup if self.mixup is not None else (1.0,) * len(self.neg_weights)
        return [(mixup[j], j + 1, self.neg_weights[j]) for j in range(count)]
