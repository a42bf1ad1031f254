"""Intra-CR / Extra-CR: the value against the formula, gradients, negatives, batching, options."""
from __future__ import annotations

import pytest
import torch
import yaml
from torch import nn

from conftest import photo_tensor
from drcnet.losses import ExtraCRLoss, IntraCRLoss
from drcnet.registry import LOSS_REGISTRY, build

PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket')


def photo_batch(count: int = 2, size=(28, 32), seed: int = 0):
    """gt from photographs, lq = gt + strong noise, pred = gt + mild noise (all (B, 3, H, W))."""
    gt = torch.cat([photo_tensor(name)[..., 100:100 + 3 * size[0]:3, 100:100 + 3 * size[1]:3]
                    for name in PHOTOS[:count]])
    g = torch.Generator().manual_seed(seed)
    lq = (gt + 0.25 * torch.randn(gt.shape, generator=g)).clamp(0, 1)
    pred = (gt + 0.05 * torch.randn(gt.shape, generator=g)).clamp(0, 1)
    return pred, gt, lq


def l1(a, b):
    return (a.double() - b.double()).abs().mean()


def reference(loss, preds, gt, negatives_per_image):
    """The regulariser from the extractor's features, each image set through the VGG on its own.

    ``negatives_per_image``: list of (negative image batch (B, 3, H, W), weight c_j).
    """
    g_gt = loss.vgg(gt)
    g_negs = [(loss.vgg(neg), c) for neg, c in negatives_per_image]
    total = 0.0
    for pred in preds:
        g_pred = loss.vgg(pred)
        for name, w in loss.layer_weights.items():
            d_ap = l1(g_pred[name], g_gt[name])
            d_an = sum(c * l1(g_pred[name], g[name]) for g, c in g_negs)
            total = total + w * d_ap / (d_an + loss.eps)
    return loss.alpha * total


@pytest.fixture(scope='module')
def intra():
    return IntraCRLoss(vgg_weights='random')


@pytest.fixture(scope='module')
def extra():
    return ExtraCRLoss(vgg_weights='random')


def test_zero_when_pred_is_gt(intra, extra):
    _, gt, lq = photo_batch(3)
    assert intra(gt, gt, lq).item() == 0.0
    assert extra(gt, gt, lq).item() == 0.0
    assert intra([gt, gt], gt, lq).item() == 0.0


def test_intra_matches_formula(intra):
    pred, gt, lq = photo_batch(2)
    stage1 = (pred + 0.03).clamp(0, 1)
    negatives = [(lam * lq + (1 - lam) * gt, c) for lam, c in zip((1.0, 0.95, 0.90), (1.0, 0.95, 0.90))]
    with torch.no_grad():
        single = intra(pred, gt, lq)
        both = intra([stage1, pred], gt, lq)
        assert single.item() > 0
        assert single.item() == pytest.approx(reference(intra, [pred], gt, negatives).item(), abs=1e-6, rel=1e-5)
        assert both.item() == pytest.approx(reference(intra, [stage1, pred], gt, negatives).item(),
                                            abs=1e-6, rel=1e-5)


def test_paper_defaults(intra):
    assert intra.alpha == 0.04
    assert intra.mixup == (1.0, 0.95, 0.90) and intra.neg_weights == (1.0, 0.95, 0.90)
    assert intra.layer_weights == {'relu1_1': 1 / 16, 'relu2_1': 1 / 8, 'relu3_1': 1 / 4}
    assert intra.vgg.use_input_norm is False
    assert len(intra.vgg.features) == 12  # truncated at relu3_1


def test_extra_matches_formula_with_other_images_as_negatives(extra):
    pred, gt, lq = photo_batch(4)
    lq = lq * torch.tensor([0.2, 0.4, 0.7, 1.0]).view(4, 1, 1, 1)  # which image is whose negative matters
    batch = gt.shape[0]

    def others(shift_sign):  # negative j of image b: the degraded input of image (b - j) mod B
        return [(lq[[(b - shift_sign * j) % batch for b in range(batch)]], c)
                for j, c in zip((1, 2, 3), (1.0, 0.95, 0.90))]

    with torch.no_grad():
        value = extra(pred, gt, lq)
        assert value.item() == pytest.approx(reference(extra, [pred], gt, others(1)).item(), abs=1e-6, rel=1e-5)
        assert abs(value.item() - reference(extra, [pred], gt, others(-1)).item()) > 1e-4 * value.item()
        # not the intra-class value: the negatives really are other images
        own = [(lq, c) for c in (1.0, 0.95, 0.90)]
        assert abs(value.item() - reference(extra, [pred], gt, own).item()) > 1e-4 * value.item()


def test_extra_small_batch_truncates_and_batch_of_one_fails(extra):
    pred, gt, lq = photo_batch(2)
    with torch.no_grad():
        value = extra(pred, gt, lq)
        assert value.item() == pytest.approx(reference(extra, [pred], gt, [(lq.flip(0), 1.0)]).item(),
                                             abs=1e-6, rel=1e-5)
    with pytest.raises(ValueError, match='at least 2 images.*OTHER images.*batch of 1'):
        extra(pred[:1], gt[:1], lq[:1])


def test_gradient_reaches_pred_only(intra, extra):
    pred, gt, lq = photo_batch(2)
    for loss in (intra, extra):
        p = pred.clone().requires_grad_()
        g, q = gt.clone().requires_grad_(), lq.clone().requires_grad_()
        loss([p * 0.9, p], g, q).backward()
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
        assert g.grad is None and q.grad is None
        assert all(w.grad is None and not w.requires_grad for w in loss.vgg.parameters())


def test_single_negative_mixup_one_is_lq_itself():
    loss = IntraCRLoss(mixup=(1.0,), neg_weights=(1.0,), vgg_weights='random')
    pred, gt, lq = photo_batch(2)
    seen = []
    loss.vgg.register_forward_pre_hook(lambda m, args: seen.append((args[0].clone(), torch.is_grad_enabled())))
    with torch.no_grad():
        value = loss(pred, gt, lq)
    fixed, pred_pass = seen
    assert torch.equal(fixed[0], torch.cat([gt, lq]))  # targets, then lq as the only negative
    assert torch.equal(pred_pass[0], pred)
    assert value.item() == pytest.approx(reference(loss, [pred], gt, [(lq, 1.0)]).item(), abs=1e-6, rel=1e-5)


def test_mixup_puts_lambda_on_the_degraded_input():
    loss = IntraCRLoss(mixup=(0.7, 0.2), neg_weights=(1.0, 0.5), vgg_weights='random')
    pred, gt, lq = photo_batch(2)
    seen = []
    loss.vgg.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    with torch.no_grad():
        loss(pred, gt, lq)
    target, neg_07, neg_02 = seen[0].split(2)
    assert torch.equal(target, gt)
    torch.testing.assert_close(neg_07, 0.7 * lq + 0.3 * gt, rtol=0, atol=1e-6)
    torch.testing.assert_close(neg_02, 0.2 * lq + 0.8 * gt, rtol=0, atol=1e-6)


def test_targets_once_and_stages_in_one_pass(intra):
    pred, gt, lq = photo_batch(2)
    calls = []
    handle = intra.vgg.register_forward_pre_hook(
        lambda m, args: calls.append((args[0].shape[0], torch.is_grad_enabled())))
    try:
        intra([pred.clone().requires_grad_(), pred.clone().requires_grad_()], gt, lq).backward()
    finally:
        handle.remove()
    # one no-grad pass of gt + 3 negatives, one pass with gradient of both stages
    assert calls == [(4 * 2, False), (2 * 2, True)]


class Holder(nn.Module):
    """A model-like owner of the loss and a trainable layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.cri = IntraCRLoss(vgg_weights='random')


def test_vgg_stays_out_of_checkpoints_and_moves_with_owner():
    holder = Holder()
    assert set(holder.state_dict()) == {'conv.weight', 'conv.bias'}
    assert {n for n, _ in holder.named_parameters()} == {'conv.weight', 'conv.bias'}
    holder.load_state_dict(Holder().state_dict(), strict=True)
    holder.train()
    assert holder.cri.training and not holder.cri.vgg.training
    holder.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in holder.cri.vgg.parameters())
    pred, gt, lq = (t.double() for t in photo_batch(2))
    out = holder.cri(holder.conv(pred), gt, lq)
    out.backward()
    assert holder.conv.weight.grad is not None
    assert all(not p.requires_grad for p in holder.cri.vgg.parameters())


def test_autocast_bfloat16(intra):
    pred, gt, lq = photo_batch(2)
    with torch.no_grad():
        exact = intra([pred, pred], gt, lq).item()
    p = pred.clone().requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        value = intra([p, p], gt, lq)
        zero = intra(gt, gt, lq)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert value.item() == pytest.approx(exact, rel=0.05)
    assert zero.item() == 0.0
    value.backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_builds_from_yaml():
    cfg = yaml.safe_load("""
        type: IntraCRLoss
        alpha: 0.05
        mixup: [1.0, 0.8]
        neg_weights: [1.0, 0.5]
        layer_weights: {relu1_1: 0.5, relu2_2: 1.0}
        vgg_weights: random
    """)
    loss = build(LOSS_REGISTRY, cfg, where='train.contrastive_opt')
    assert isinstance(loss, IntraCRLoss) and cfg['type'] == 'IntraCRLoss'
    assert loss.alpha == 0.05 and loss.mixup == (1.0, 0.8) and loss.vgg.layers == ['relu1_1', 'relu2_2']
    assert len(loss.vgg.features) == 9  # up to relu2_2
    with pytest.raises(ValueError, match='train.contrastive_opt.mix_up.*did you mean .mixup.'):
        build(LOSS_REGISTRY, {'type': 'ExtraCRLoss', 'mix_up': [1.0]}, where='train.contrastive_opt')


@pytest.mark.parametrize('kwargs, message', [
    (dict(mixup=(1.0, 0.9), neg_weights=(1.0,)), 'IntraCRLoss.mixup and IntraCRLoss.neg_weights must have the same'),
    (dict(mixup=(1.5, 0.9, 0.8)), r'IntraCRLoss.mixup: 1.5 is outside \[0.0, 1.0\]'),
    (dict(alpha=-1), 'IntraCRLoss.alpha'),
    (dict(eps=0), 'IntraCRLoss.eps'),
    (dict(neg_weights=(0, 0, 0)), 'IntraCRLoss.neg_weights: at least one'),
    (dict(layer_weights={'relu9_1': 1.0}), "IntraCRLoss.layer_weights: 'relu9_1' is not a VGG19 layer; valid names: "
                                           "conv1_1, relu1_1"),
    (dict(mixup='1.0'), 'IntraCRLoss.mixup: expected a non-empty list'),
])
def test_bad_options_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IntraCRLoss(vgg_weights='random', **kwargs)


def test_bad_inputs_are_clear_errors(intra):
    pred, gt, lq = photo_batch(2)
    with pytest.raises(ValueError, match=r'pred\[1\] has shape'):
        intra([pred, pred[:, :, :10]], gt, lq)
    with pytest.raises(ValueError, match='lq must have the shape of gt'):
        intra(pred, gt, lq[:1])
