"""DGUNet and DGUNet+: the release's state-dict lists and parameter counts, checkpoints, the output order, any
input size, the unused concat12, and the merge block's projection in float32 (a solve, not an inverse)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from drcnet.archs.dgunet_arch import DGUNet, DGUNetPlus, MergeBlock, subspace_projection
from drcnet.engine.checkpoint import load_network
from drcnet.models.image_restoration_model import ImageRestorationModel

SPEC = Path(__file__).parent / 'fixtures' / 'peer_state_dicts'  # copies of the spec's lists (PEERS.md 1.8)
TINY_PLUS = {'n_feat': 8, 'scale_unetfeats': 4}
TINY = {'n_feat': 8, 'scale_unetfeats': 4, 'scale_orsnetfeats': 4}

# (class, task, list file, PReLU entries beyond one per group the release shares): the release builds one
# PReLU for all CABs (DGUNet+: 7 entries; DGUNet: shallow_feat1 and 7, its middle stage has its own) and one
# for all phi/phit (DGUNet+: 14; DGUNet: 6). Counting unique tensors, its totals count each group once; ours
# gives every module its own slope, so it has these many more one-element parameters.
CONFIGS = [
    (DGUNetPlus, 'deblur', 'DGUNet_plus_Deblurring.txt', 6 + 13),
    (DGUNetPlus, 'derain', 'DGUNet_plus_Deraining.txt', 6 + 13),
    (DGUNetPlus, 'denoise', 'DGUNet_plus_Denoising.txt', 6 + 13),
    (DGUNet, 'deblur', 'DGUNet_Deblurring.txt', 1 + 5),
    (DGUNet, 'denoise', 'DGUNet_Deblurring.txt', 1 + 5),  # the release's denoising file is the same class
    (DGUNet, 'derain', 'DGUNet_Deraining.txt', 1 + 5),
]
PEERS_COUNTS = {('DGUNetPlus', 'deblur'): 69_572_915, ('DGUNetPlus', 'derain'): 12_176_107,
                ('DGUNetPlus', 'denoise'): 48_361_987, ('DGUNet', 'deblur'): 17_331_512,
                ('DGUNet', 'denoise'): 17_331_512, ('DGUNet', 'derain'): 3_661_912}


def release_list(name: str):
    lines = (SPEC / name).read_text().splitlines()
    header = re.search(r'(\d+) state_dict entries, (\d+) parameters', lines[0])
    entries = [(k, tuple(int(d) for d in re.findall(r'\d+', shape))) for k, shape in
               (line.split('\t') for line in lines[1:])]
    assert len(entries) == int(header.group(1))
    return entries, int(header.group(2))


@pytest.mark.parametrize('cls, task, listing, shared', CONFIGS, ids=[f'{c[0].__name__}-{c[1]}' for c in CONFIGS])
def test_state_dict_and_parameter_count_equal_the_release(cls, task, listing, shared):
    net = cls(task=task)
    entries, release_params = release_list(listing)
    assert [(k, tuple(v.shape)) for k, v in net.state_dict().items()] == entries  # names, shapes and order
    ours = sum(p.numel() for p in net.parameters())
    assert release_params == PEERS_COUNTS[(cls.__name__, task)]
    assert ours == release_params + shared
    assert ours == sum(torch.Size(shape).numel() for _, shape in entries)  # every listed tensor is a parameter


def test_a_release_checkpoint_loads_strictly_with_its_shared_prelu_under_every_name(tmp_path):
    torch.manual_seed(0)
    entries, _ = release_list('DGUNet_Deraining.txt')
    prelu = torch.tensor([0.3])
    state = {f'module.{k}': (prelu.clone() if k.endswith('body.1.weight') else torch.randn(shape))
             for k, shape in entries}
    path = tmp_path / 'model_best.pth'  # the release's format, saved from DataParallel
    torch.save({'epoch': 250, 'state_dict': state, 'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-6}]}},
               path)
    net = DGUNet(task='derain')
    report = load_network(net, path, param_key='auto', strict=True)
    assert report['param_key'] == 'state_dict' and report['loaded'] == len(entries)
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[f'module.{key}']), key


@pytest.mark.parametrize('cls, kwargs', [(DGUNetPlus, TINY_PLUS), (DGUNet, TINY)], ids=['DGUNetPlus', 'DGUNet'])
def test_seven_outputs_final_last_and_the_last_stage_adds_the_input(cls, kwargs):
    torch.manual_seed(0)
    net = cls(**kwargs).eval()
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        outs = net(x)
        assert len(outs) == 7 and all(o.shape == x.shape for o in outs)
        torch.nn.init.zeros_(net.tail.weight)
        zeroed = net(x)
    # with a zero tail the final image is exactly the network input (the release adds y, not x7_img) ...
    assert torch.equal(zeroed[-1], x)
    # ... and the stage images do not depend on the tail
    assert all(torch.equal(a, b) for a, b in zip(outs[:-1], zeroed[:-1]))
    assert not torch.equal(outs[-2], x)


@pytest.mark.parametrize('cls, kwargs', [(DGUNetPlus, TINY_PLUS), (DGUNet, TINY)], ids=['DGUNetPlus', 'DGUNet'])
def test_any_size_is_reflect_padded_to_eight_and_cropped_back(cls, kwargs):
    torch.manual_seed(0)
    net = cls(**kwargs).eval()
    x = torch.rand(1, 3, 19, 21)
    padded = torch.nn.functional.pad(x, (0, 3, 0, 5), mode='reflect')
    with torch.no_grad():
        outs, full = net(x), net(padded)
    assert all(o.shape == x.shape for o in outs)
    assert all(torch.equal(o, f[..., :19, :21]) for o, f in zip(outs, full))  # the same computation, cropped
    with torch.no_grad():
        assert net(torch.rand(1, 3, 3, 5))[-1].shape == (1, 3, 3, 5)  # too small to reflect: replicated


def test_dgunet_shares_its_middle_stage_and_keeps_concat12_frozen_and_unused():
    torch.manual_seed(0)
    net = DGUNet(**TINY).eval()
    assert [n for n, p in net.named_parameters() if not p.requires_grad] == ['basic.concat12.weight']
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        before = net(x)[-1]
        net.basic.concat12.weight.normal_()
        assert torch.equal(net(x)[-1], before)
    model = ImageRestorationModel(net, torch.device('cpu'), pixel_loss=torch.nn.L1Loss(),
                                  optim_g={'type': 'Adam', 'lr': 1e-3})
    optimised = {id(p) for group in model.optimizer.param_groups for p in group['params']}
    assert id(net.basic.concat12.weight) not in optimised and len(optimised) == sum(
        1 for p in net.parameters() if p.requires_grad)


def test_task_and_width_errors_name_the_argument():
    with pytest.raises(ValueError, match="DGUNetPlus.task: 'deraining' is not one of deblur, derain, denoise"):
        DGUNetPlus(task='deraining')
    with pytest.raises(ValueError, match='DGUNet.n_feat: expected a positive integer'):
        DGUNet(n_feat=0)
    with pytest.raises(ValueError, match='must be even'):
        DGUNetPlus(n_feat=8, scale_unetfeats=3)


# --- the merge block's projection ----------------------------------------------------------------------------
def basis_and_features(seed: int, n: int = 24 * 20, k: int = 16, c: int = 5):
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(2, k, n, generator=g)
    basis = basis / (1e-6 + basis.abs().sum(dim=2, keepdim=True))  # as the merge block normalises its rows
    return basis, torch.randn(2, c, n, generator=g)


def projection_oracle(basis: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """The release's formula ``V (V^T V)^-1 V^T f`` with an explicit inverse, in float64."""
    v_t, f = basis.double(), feats.double()
    p = torch.inverse(v_t @ v_t.transpose(1, 2)) @ v_t
    return (v_t.transpose(1, 2) @ (p @ f.transpose(1, 2))).transpose(1, 2)


def test_the_ridge_solve_gives_the_inverses_result_on_a_well_conditioned_gram():
    basis, feats = basis_and_features(0)
    gram = (basis.double() @ basis.double().transpose(1, 2))
    cond = torch.linalg.cond(gram).max().item()
    assert cond < 100  # random bases are well conditioned
    ours = subspace_projection(basis, feats).double()
    oracle = projection_oracle(basis, feats)
    # float32 solve: relative error ~ cond * 16 * eps32; the ridge shifts it by ~ cond * 1e-6
    tol = cond * (16 * torch.finfo(torch.float32).eps + 1e-6) * oracle.abs().max().item()
    assert (ours - oracle).abs().max().item() < tol
    # the float32 explicit inverse agrees as closely: the solve is a drop-in replacement
    v_t = basis
    inverse32 = (v_t.transpose(1, 2) @ (torch.inverse(v_t @ v_t.transpose(1, 2)) @ v_t @ feats.transpose(1, 2)))
    assert (inverse32.transpose(1, 2).double() - oracle).abs().max().item() < tol
    # a projection: applying it twice changes nothing; the basis vectors themselves are kept
    twice = subspace_projection(basis, ours.float()).double()
    assert (twice - ours).abs().max().item() < tol
    kept = subspace_projection(basis, basis[:, :3]).double()
    scale = basis.abs().max().item() / oracle.abs().max().item()  # the same relative error, on smaller values
    assert (kept - basis[:, :3].double()).abs().max().item() < tol * scale


def test_the_inverse_fails_in_low_precision_and_on_a_singular_gram_where_the_solve_does_not():
    with pytest.raises(RuntimeError):
        torch.inverse(torch.eye(16, dtype=torch.bfloat16))
    # 16 identical flat rows (what a flat region gives): the Gram has rank 1
    n = 12 * 12
    basis = torch.full((1, 16, n), 1.0 / n)
    feats = torch.randn(1, 4, n, generator=torch.Generator().manual_seed(1))
    gram = basis @ basis.transpose(1, 2)
    try:
        inverted = torch.inverse(gram)
        assert not torch.isfinite(inverted).all() or inverted.abs().max() > 1e6
    except RuntimeError:  # LAPACK may also refuse the singular matrix outright
        pass
    out = subspace_projection(basis, feats)
    # the span is the constant vector: each channel becomes its mean (the ridge of 1e-6 relative shrinks it by
    # about 1e-6 / 16; float32 sums of 144 terms)
    assert torch.allclose(out, feats.mean(dim=2, keepdim=True).expand_as(feats), atol=1e-5)


def test_the_merge_block_runs_in_float32_under_bf16_autocast():
    torch.manual_seed(0)
    merge = MergeBlock(8).eval()
    x, b = torch.rand(2, 1, 8, 12, 12).unbind(0)
    with torch.no_grad():
        reference = merge(x, b)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = merge(x, b)
    assert torch.isfinite(low).all()
    # only the two 3x3 convolutions run in bf16 (8-bit mantissa, 144-term sums): errors of a few 1e-2 at most
    assert (low.float() - reference).abs().max() < 0.05
