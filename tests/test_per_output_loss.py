"""Per-output losses: every image a network returns is supervised, against a bilinearly resized target when
smaller, with per-output weights from the options; the final image is the last one everywhere."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import photo_tensor
from drcnet.archs.outputs import as_output_list, final_image
from drcnet.engine.schema import OptionError, validate
from drcnet.inference.tiling import restore
from drcnet.losses.per_output import PerOutputLoss, resize_target, targets_for
from drcnet.models.image_restoration_model import ImageRestorationModel
from drcnet.registry import LOSS_REGISTRY, build


class ThreeScales(nn.Module):
    """A stand-in multi-scale network: [1/4, 1/2, full] images, the final last."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(3))

    def forward(self, x):
        full = x * self.gain.view(1, 3, 1, 1)
        return [F.avg_pool2d(full, 4), F.avg_pool2d(full, 2), full]


def test_final_image_is_the_last_output_or_the_tensor():
    a, b = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    assert final_image([a, b]) is b and final_image((a, b)) is b and final_image(a) is a
    assert as_output_list(a) == [a]
    with pytest.raises(TypeError, match='final last'):
        final_image([])
    net = ThreeScales()
    x = torch.rand(1, 3, 16, 20)
    assert torch.equal(restore(net, x), x)  # inference uses the full-size final image
    assert torch.allclose(restore(net, x, tta=True), x, atol=1e-6)  # a mean of 8 values <= 1 in float32


def test_targets_are_resized_as_multi_scale_training_does():
    gt = photo_tensor('astronaut')[..., 100:132, 200:248]
    t4, t2, t1 = targets_for([torch.zeros(1, 3, 8, 12), torch.zeros(1, 3, 16, 24), torch.zeros(1, 3, 32, 48)], gt)
    assert t1 is gt
    # MIMO-UNet / CCNet training: interpolate(gt, scale_factor=0.5 / 0.25, mode='bilinear'); the same points
    assert torch.equal(t2, F.interpolate(gt, scale_factor=0.5, mode='bilinear', align_corners=False))
    assert torch.equal(t4, F.interpolate(gt, scale_factor=0.25, mode='bilinear', align_corners=False))
    # at half size, bilinear with align_corners=False is the 2x2 mean (float32 sums of 4 terms ~1: 1e-6)
    assert torch.allclose(t2, F.avg_pool2d(gt, 2), atol=1e-6)
    assert resize_target(gt, (32, 48)) is gt


def test_each_output_is_weighted_and_a_wrong_number_of_weights_names_the_key():
    torch.manual_seed(0)
    preds = [torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16), torch.rand(2, 3, 32, 32)]
    gt = torch.rand(2, 3, 32, 32)
    targets = targets_for(preds, gt)
    l1 = nn.L1Loss()
    terms = [l1(p, t).item() for p, t in zip(preds, targets)]
    assert PerOutputLoss(l1)(preds, targets).item() == pytest.approx(sum(terms), rel=1e-6)
    weighted = PerOutputLoss(l1, [0.5, 0, 2], key='train.pixel_opt')(preds, targets).item()
    assert weighted == pytest.approx(0.5 * terms[0] + 2 * terms[2], rel=1e-6)
    with pytest.raises(ValueError, match=r'train.pixel_opt.output_weights: 2 weights given, but the network '
                                         r'returns 3 output'):
        PerOutputLoss(l1, [1, 1], key='train.pixel_opt')(preds, targets)
    with pytest.raises(ValueError, match='train.edge_opt.output_weights: expected a list of numbers >= 0'):
        PerOutputLoss(l1, [1, -1], key='train.edge_opt')


def test_the_model_supervises_every_scale_and_logs_each_term():
    torch.manual_seed(0)
    net = ThreeScales()
    model = ImageRestorationModel(
        net_g=net, device=torch.device('cpu'), optim_g={'type': 'SGD', 'lr': 0.1},
        output_losses={'l_pix': PerOutputLoss(nn.L1Loss(), [1, 0, 0], key='train.pixel_opt'),
                       'l_edge': build(LOSS_REGISTRY, {'type': 'EdgeLoss', 'loss_weight': 0.05})})
    x = torch.rand(2, 3, 32, 40)
    gt = x * torch.tensor([0.5, 1.0, 1.5]).view(1, 3, 1, 1)
    losses = model.train_step([{'lq': x, 'gt': gt}], 0)
    assert set(losses) == {'l_pix', 'l_edge'}
    # l_pix only on the 1/4 image, against the bilinear quarter of gt
    expected = (F.avg_pool2d(x, 4) - F.interpolate(gt, size=(8, 10), mode='bilinear', align_corners=False)).abs()
    assert losses['l_pix'] == pytest.approx(expected.mean().item(), rel=1e-5)
    assert model.output.shape == x.shape  # the final (last, full-size) image


def test_loss_blocks_validate_with_did_you_mean_and_weights(tmp_path):
    base = {'name': 'x', 'network_g': {'type': 'DRCNet', 'wf': 8, 'depth': 2},
            'datasets': {'train': {'type': 'SyntheticDegradationDataset', 'source': 'samples'}},
            'train': {'total_iter': 2, 'pixel_opt': {'type': 'CharbonnierLoss', 'output_weights': [1, 2]},
                      'edge_opt': {'type': 'EdgeLoss', 'loss_weight': 0.05}}}
    opts = validate(base)
    assert opts['train']['edge_opt']['loss_weight'] == 0.05 and opts['train']['fft_opt'] is None
    bad = {**base, 'train': {**base['train'], 'edge_otp': {'type': 'EdgeLoss'}}}
    with pytest.raises(OptionError, match="train.edge_otp: unknown option \\(did you mean 'edge_opt'\\?\\)"):
        validate(bad)
    bad = {**base, 'train': {**base['train'], 'edge_opt': {'type': 'EdgLoss'}}}
    with pytest.raises(OptionError, match="train.edge_opt.type: 'EdgLoss' is not a registered loss.*did you mean "
                                          "'EdgeLoss'"):
        validate(bad)
    bad = {**base, 'train': {**base['train'], 'edge_opt': {'type': 'EdgeLoss', 'output_weight': [1]}}}
    with pytest.raises(OptionError, match="train.edge_opt.output_weight: unknown option.*did you mean "
                                          "'output_weights'"):
        validate(bad)
    bad = {**base, 'train': {**base['train'], 'pixel_opt': {'type': 'L1Loss', 'output_weights': 2}}}
    with pytest.raises(OptionError, match='train.pixel_opt.output_weights: expected a list of numbers >= 0'):
        validate(bad)
