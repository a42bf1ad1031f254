"""Every component drcnet registers builds from options at tiny sizes and works on odd-sized input."""
import importlib
import inspect

import pytest
import torch

import drcnet
from drcnet.archs.outputs import as_output_list, final_image
from drcnet.data.image_io import write_image
from drcnet.data.samples import load_sample
from drcnet.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY, build


def ours(registry):
    return sorted(name for name, obj in registry if obj.__module__.startswith('drcnet.'))


def test_the_registries_hold_our_components():
    assert ours(ARCH_REGISTRY) == ['CCNet', 'DGUNet', 'DGUNetPlus', 'DRCNet']
    assert ours(LOSS_REGISTRY) == ['CharbonnierLoss', 'EdgeLoss', 'ExtraCRLoss', 'FFTLoss', 'IntraCRLoss', 'PSNRLoss']
    assert ours(DATASET_REGISTRY) == ['PairedRestorationDataset', 'SyntheticDegradationDataset']
    assert ours(MODEL_REGISTRY) == ['ImageRestorationModel']
    assert drcnet.DRCNet is ARCH_REGISTRY.get('DRCNet')


TINY_ARCH = {'DRCNet': {'wf': 8, 'depth': 3},
             'DGUNet': {'n_feat': 8, 'scale_unetfeats': 4, 'scale_orsnetfeats': 4},
             'DGUNetPlus': {'n_feat': 8, 'scale_unetfeats': 4},
             'CCNet': {'base_channel': 4, 'num_res': 1}}
# Parameters a network keeps only so that the authors' checkpoints load: frozen, never used.
FROZEN = {'DGUNet': {'basic.concat12.weight'}}
AUTOCAST = {'fp32': None, 'bf16': torch.bfloat16}


@pytest.mark.parametrize('name', ours(ARCH_REGISTRY))
def test_arch_forward_backward_on_an_odd_input(name):
    torch.manual_seed(0)
    net = build(ARCH_REGISTRY, {'type': name, **TINY_ARCH[name]})
    x = torch.rand(2, 3, 27, 41)
    outs = as_output_list(net(x))
    assert outs[-1].shape == x.shape  # the restoration is the last output; earlier ones may be smaller scales
    for out in outs:
        assert out.shape[:2] == x.shape[:2] and out.shape[-2] <= x.shape[-2] and out.shape[-1] <= x.shape[-1]
        assert torch.isfinite(out).all()
    sum(o.square().mean() for o in outs).backward()
    assert {n for n, p in net.named_parameters() if not p.requires_grad} == FROZEN.get(name, set())
    for pname, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        else:
            assert p.grad is None, pname


@pytest.mark.parametrize('name', ours(ARCH_REGISTRY))
def test_arch_runs_under_bf16_autocast_on_the_cpu(name):
    torch.manual_seed(0)
    net = build(ARCH_REGISTRY, {'type': name, **TINY_ARCH[name]})
    x = torch.rand(1, 3, 13, 11)  # small: bf16 convolutions are slow on CPUs without bf16 instructions
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = as_output_list(net(x))
        final_image(outs).float().square().mean().backward()
    with torch.no_grad():
        reference = final_image(net(x))
    assert final_image(outs).shape == x.shape and all(torch.isfinite(o).all() for o in outs)
    # bf16 keeps 8 significant bits (relative step 2^-8 = 0.4%); through tens of layers the final images of
    # these small untrained networks stay within a few tenths of the float32 one, far from a broken result (~1)
    assert (final_image(outs).float() - reference).abs().mean() < 0.1
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters())


TINY_LOSS = {'IntraCRLoss': {'vgg_weights': 'random'}, 'ExtraCRLoss': {'vgg_weights': 'random'}, 'PSNRLoss': {},
             'CharbonnierLoss': {}, 'EdgeLoss': {}, 'FFTLoss': {}}


@pytest.mark.parametrize('precision', AUTOCAST)
@pytest.mark.parametrize('name', ours(LOSS_REGISTRY))
def test_loss_gives_a_finite_gradient_to_the_prediction(name, precision):
    torch.manual_seed(0)
    loss_fn = build(LOSS_REGISTRY, {'type': name, **TINY_LOSS[name]})
    gt, lq = torch.rand(2, 3, 27, 41), torch.rand(2, 3, 27, 41)
    pred = (gt + 0.1 * torch.randn_like(gt)).requires_grad_()
    params = inspect.signature(loss_fn.forward).parameters
    with torch.autocast('cpu', dtype=AUTOCAST[precision] or torch.bfloat16, enabled=AUTOCAST[precision] is not None):
        value = loss_fn(pred, gt, lq) if len(params) >= 3 else loss_fn(pred, gt)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def _paired_folder(tmp_path):
    for name in ('chelsea', 'coffee'):
        img = load_sample(name)[:45, :61]
        write_image(tmp_path / 'gt' / f'{name}.png', img)
        write_image(tmp_path / 'lq' / f'{name}.png', img * 0.5)
    return {'dataroot_gt': str(tmp_path / 'gt'), 'dataroot_lq': str(tmp_path / 'lq')}


@pytest.mark.parametrize('name', ours(DATASET_REGISTRY))
@pytest.mark.parametrize('phase', ['train', 'val'])
def test_dataset_items(name, phase, tmp_path):
    cfg = _paired_folder(tmp_path) if name == 'PairedRestorationDataset' else {'source': 'samples',
                                                                               'samples': ['chelsea']}
    if phase == 'train':
        cfg['gt_size'] = 24
    ds = build(DATASET_REGISTRY, {'type': name, **cfg}, phase=phase)
    item = ds[0]
    assert item['lq'].shape == item['gt'].shape and item['lq'].shape[0] == 3
    if phase == 'train':
        assert item['gt'].shape[1:] == (24, 24)
    for key in ('lq', 'gt'):
        assert item[key].dtype == torch.float32 and 0 <= item[key].min() and item[key].max() <= 1
    assert isinstance(item['lq_path'], str) and isinstance(item['gt_path'], str)


@pytest.mark.parametrize('name', ours(MODEL_REGISTRY))
def test_model_trains_one_step_and_restores(name):
    torch.manual_seed(0)
    cls = MODEL_REGISTRY.get(name)
    net = build(ARCH_REGISTRY, {'type': 'DRCNet', 'wf': 8, 'depth': 2})
    model = cls(net_g=net, device=torch.device('cpu'), pixel_loss=build(LOSS_REGISTRY, {'type': 'L1Loss'}),
                contrastive_loss=build(LOSS_REGISTRY, {'type': 'IntraCRLoss', 'vgg_weights': 'random'}),
                optim_g={'type': 'Adam', 'lr': 1e-3}, ema_decay=0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    batch = {'lq': torch.rand(2, 3, 27, 41), 'gt': torch.rand(2, 3, 27, 41)}
    losses = model.train_step([batch], 0)
    assert set(losses) == {'l_pix', 'l_cr'} and all(v > 0 for v in losses.values())
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not any(k.startswith('vgg') or 'features' in k for k in net.state_dict())
    model.feed_data({'lq': batch['lq']})
    assert model.test().shape == batch['lq'].shape
