import copy
from pathlib import Path

import pytest
import torch

from drcnet.archs.dfr_block import BLOCKS, AdaptiveFeatureNorm
from drcnet.archs.drcnet_arch import DRCNet
from drcnet.registry import ARCH_REGISTRY, build
from tolerance import U32, assert_same_up_to_rounding, network_terms, rounding_gap

KEYS_FILE = Path(__file__).parent / 'release_state_dict_keys.txt'


def release_keys():
    keys = {}
    for line in KEYS_FILE.read_text().splitlines():
        name, shape = line.split(' ', 1)
        keys[name] = tuple(int(v) for v in shape.strip('()').split(',') if v.strip())
    return keys


def force_mixed_masks(net: DRCNet, gain: float = 60.0, bias: float = 0.3) -> None:
    """Make M_sr depend on the channel mean so masks hold both regions; give the norms an offset."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, AdaptiveFeatureNorm):
                module.sa.conv1.weight.zero_()
                module.sa.conv1.weight[0, 0, 3, 3] = gain
                module.rn.bn_norm.bias.fill_(bias)


def mask_fractions(net: DRCNet, x: torch.Tensor) -> list:
    fractions = []

    def hook(module, inputs, output):
        fractions.append((output[0] >= module_thresholds[module]).float().mean().item())

    module_thresholds, handles = {}, []
    for module in net.modules():
        if isinstance(module, AdaptiveFeatureNorm):
            module_thresholds[module.sa] = module.threshold
            handles.append(module.sa.register_forward_hook(hook))
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return fractions


def test_paper_network_matches_release_state_dict_and_size():
    net = DRCNet(wf=64, depth=4)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert ours == release_keys()
    n_params = sum(p.numel() for p in net.parameters())
    assert 18.9e6 <= n_params <= 19.0e6


@pytest.mark.parametrize('shape', [(1, 3, 37, 53), (2, 3, 128, 96), (1, 3, 8, 8), (1, 3, 5, 3)])
def test_any_input_size_returns_two_outputs_of_that_size(shape):
    torch.manual_seed(0)
    net = DRCNet(wf=64, depth=4).eval()
    with torch.no_grad():
        outs = net(torch.rand(shape))
    assert len(outs) == 2
    for out in outs:
        assert out.shape == shape
        assert torch.isfinite(out).all()


@pytest.mark.parametrize('value', [0.0, 1.0, 0.5])
def test_constant_images_give_finite_outputs(value):
    torch.manual_seed(0)
    net = DRCNet(wf=16, depth=4)
    force_mixed_masks(net)
    for mode in (net.train(), net.eval()):
        outs = mode(torch.full((2, 3, 24, 40), value))
        assert all(torch.isfinite(o).all() for o in outs)


def test_batch_restores_as_images_one_by_one_by_default(photo):
    torch.manual_seed(0)
    net = DRCNet(wf=16, depth=4).eval()
    force_mixed_masks(net)
    x = torch.cat([photo('chelsea', (64, 80)), photo('coffee', (64, 80)), photo('astronaut', (64, 80))])
    fractions = mask_fractions(net, x)
    assert any(0.0 < f < 1.0 for f in fractions), fractions  # the two-region path is exercised
    with torch.no_grad():
        together = net(x)[-1]
        alone = torch.cat([net(x[i:i + 1])[-1] for i in range(3)])
    # convolutions of a batch and of one image may block their sums differently; statistics per image
    assert_same_up_to_rounding(together, alone, network_terms(net, 64 * 80))


def test_batch_region_stats_couple_the_images_of_a_batch(photo):
    torch.manual_seed(0)
    net = DRCNet(wf=16, depth=4, region_stats='batch').eval()
    force_mixed_masks(net)
    x = torch.cat([photo('chelsea', (64, 80)), photo('coffee', (64, 80)), photo('astronaut', (64, 80))])
    with torch.no_grad():
        together = net(x)[-1]
        alone = torch.cat([net(x[i:i + 1])[-1] for i in range(3)])
        # a batch of one is the same computation in both modes
        sample_net = DRCNet(wf=16, depth=4, region_stats='sample').eval()
        sample_net.load_state_dict(net.state_dict())
        one_sample, one_batch = sample_net(x[:1])[-1], net(x[:1])[-1]
    # the statistics reduce over (0, 2, 3) or (2, 3), the same 64 x 80 pixels in another order
    terms = network_terms(net, 64 * 80)
    assert_same_up_to_rounding(one_sample, one_batch, terms)
    # coupling, measured in float64 where rounding (2**-53 per term, terms as below) stays below 1e-11: the
    # other images of the batch move a restoration by 1e-3 (float32's worst-case bound here is 5e-3)
    net64 = copy.deepcopy(net).double()
    with torch.no_grad():
        together64 = net64(x.double())[-1]
        alone64 = torch.cat([net64(x[i:i + 1].double())[-1] for i in range(3)])
    float64_gap = 2 * (network_terms(net, 3 * 64 * 80) + 32) * 2.0 ** -53 * together64.abs().max().item()
    assert (together64 - alone64).abs().max() > 1e6 * float64_gap


def test_backward_reaches_every_parameter_with_finite_gradients(photo):
    torch.manual_seed(0)
    net = DRCNet(wf=16, depth=4)
    force_mixed_masks(net)
    x = photo('chelsea', (45, 61))
    outs = net(x)
    loss = sum((o - x).abs().mean() for o in outs)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert sum(float(p.grad.abs().sum() > 0) for p in net.parameters()) == len(list(net.parameters()))


def test_cpu_results_are_deterministic_for_a_seed():
    def run():
        torch.manual_seed(123)
        net = DRCNet(wf=16, depth=3)
        x = torch.rand(2, 3, 33, 47)
        out = net(x)[-1]
        out.mean().backward()
        return out.detach(), net.conv_01.weight.grad.clone()

    (a, ga), (b, gb) = run(), run()
    assert torch.equal(a, b)
    assert torch.equal(ga, gb)


def test_built_from_options_through_the_registry():
    cfg = {'type': 'DRCNet', 'wf': 32}
    net = build(ARCH_REGISTRY, cfg, where='network_g')
    assert isinstance(net, DRCNet)
    assert net.conv_01.out_channels == 32
    assert cfg == {'type': 'DRCNet', 'wf': 32}  # the options are not mutated


def test_unknown_keyword_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"network_g\.wff.*did you mean 'wf'"):
        build(ARCH_REGISTRY, {'type': 'DRCNet', 'wff': 32}, where='network_g')
    with pytest.raises(ValueError, match=r"'DRCNett'.*did you mean 'DRCNet'"):
        build(ARCH_REGISTRY, {'type': 'DRCNett'}, where='network_g')


@pytest.mark.parametrize('kwargs, match', [
    ({'block': 'dfrr'}, "block: 'dfrr' is not one of dfr, base"),
    ({'region_stats': 'global'}, "region_stats: 'global'"),
    ({'sf_levels': [0, 7]}, r'sf_levels: \[7\]'),
])
def test_bad_values_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DRCNet(wf=8, depth=4, **kwargs)


@pytest.mark.parametrize('block', BLOCKS)
def test_ablation_blocks_build_and_run(block):
    torch.manual_seed(0)
    net = DRCNet(wf=8, depth=3, block=block)
    x = torch.rand(1, 3, 21, 30)
    outs = net(x)
    assert [o.shape for o in outs] == [x.shape, x.shape]
    sum(o.mean() for o in outs).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_ablation_rows_differ_in_the_branches_they_own():
    counts = {b: sum(p.numel() for p in DRCNet(wf=64, depth=4, block=b).parameters()) for b in BLOCKS}
    assert counts['sf'] < counts['sf_identity'] < counts['sf_ea'] < counts['dfr']
    assert counts['dfr'] - counts['sf_ea'] == counts['sf_identity'] - counts['sf']  # the identity convs


@pytest.mark.parametrize('sf_levels', [None, [0, 1, 2, 3], [2, 3], [3]])
def test_release_keys_load_strictly_for_any_sf_levels(sf_levels):
    # the release builds the spatial filter's modules on every level (its GoPro checkpoints use levels 2-3
    # and carry all 196 keys); only the levels in sf_levels apply them
    net = DRCNet(wf=64, depth=4, sf_levels=sf_levels)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == release_keys()
    g = torch.Generator().manual_seed(0)
    release = {k: torch.randn(shape, generator=g) for k, shape in release_keys().items()}
    net.load_state_dict(release, strict=True)
    used = [b.use_norm for b in net.down_path_1] + [b.use_norm for b in net.down_path_2]
    assert used == [i in (sf_levels if sf_levels is not None else range(4)) for i in range(4)] * 2


def test_unused_spatial_filters_are_frozen_and_the_rest_trains(photo):
    torch.manual_seed(0)
    net = DRCNet(wf=8, depth=4, sf_levels=[2, 3])
    x = photo('chelsea', (32, 40))
    sum((o - x).abs().mean() for o in net(x)).backward()
    for name, p in net.named_parameters():
        level = int(name.split('.')[1]) if name.startswith('down_path') else None
        if '.norm.' in name and level in (0, 1):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.requires_grad and p.grad is not None, name


def test_sf_levels_change_the_restoration():
    torch.manual_seed(0)
    every, some = DRCNet(wf=8, depth=3), DRCNet(wf=8, depth=3, sf_levels=[2])
    force_mixed_masks(every)
    some.load_state_dict(every.state_dict())
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = every(x)[-1], some(x)[-1]
    assert (a - b).abs().max() > 10 * rounding_gap(network_terms(every, 24 * 24), a, b)


def test_grey_images_with_one_channel():
    torch.manual_seed(0)
    net = DRCNet(wf=8, depth=3, in_chans=1)
    x = torch.rand(2, 1, 21, 30, generator=torch.Generator().manual_seed(1))
    outs = net(x)
    assert [tuple(o.shape) for o in outs] == [(2, 1, 21, 30)] * 2
    with pytest.raises(ValueError, match='in_chans must be >= 1, got 0'):
        DRCNet(wf=8, depth=3, in_chans=0)


# --- the network against its definition (tests/reference.py) ----------------------------------------
import reference  # noqa: E402


def mixed_net(region_stats='sample'):
    torch.manual_seed(0)
    net = DRCNet(wf=8, depth=3, region_stats=region_stats, ea_lambda=1e-4)
    force_mixed_masks(net)
    return net


@pytest.mark.parametrize('region_stats', ['sample', 'batch'])
def test_network_equals_its_definition(region_stats, photo):
    net = mixed_net(region_stats)
    x = torch.cat([photo('chelsea', (45, 61)), photo('rocket', (45, 61))])
    fractions = mask_fractions(net.eval(), x)
    assert any(0.0 < f < 1.0 for f in fractions), fractions
    with torch.no_grad():
        outs = net(x)
        truth = reference.drcnet(copy.deepcopy(net).double(), x.double())
    # every output pixel depends on a chain of about 40 convolutions (up to 32 x 9 terms each) and 12 sets
    # of statistics over up to 2 x 48 x 64 pixels: float32 rounding of 1e-5 relative is the order to expect
    for out, ref in zip(outs, truth):
        assert out.is_contiguous() and out.shape == x.shape
        err = (out.double() - ref).abs().max().item()
        assert err <= (2 * 48 * 64 + 40 * 288) * U32 * ref.abs().max().item(), err


def test_training_gradients_equal_the_definition(photo):
    net = mixed_net()
    x = photo('coffee', (40, 48))
    net64 = copy.deepcopy(net).double()
    loss = sum((o - x).abs().mean() for o in net(x))
    loss64 = sum((o - x.double()).abs().mean() for o in reference.drcnet(net64, x.double()))
    grads = torch.autograd.grad(loss, list(net.parameters()))
    grads64 = torch.autograd.grad(loss64, list(net64.parameters()))
    for (name, _), a, b in zip(net.named_parameters(), grads, grads64):
        # as above, and the backward pass doubles the chain; an L1 loss whose sign flips at a pixel within
        # rounding of its target would add a jump, which these photographs do not have
        assert (a.double() - b).abs().max() <= 2 * (40 * 48 + 40 * 288) * U32 * b.abs().max() + 1e-9, name


def test_torch_compile_gives_the_same_restoration(photo):
    net = mixed_net().eval()
    x = photo('rocket', (40, 48))
    with torch.no_grad():
        eager = net(x)[-1]
        torch._dynamo.reset()
        compiled = torch.compile(net, backend='aot_eager', dynamic=True)(x)[-1]
    # the traced graph runs the same operations, possibly decomposed into others that reduce in another order
    assert_same_up_to_rounding(compiled, eager, network_terms(net, 40 * 48))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_mixed_precision_restores_and_trains_close_to_float32(dtype, photo):
    # a whole 512 x 512 photograph, 262,144 pixels: in float16 the region sums of squares of unit-variance features
    # pass 65,504 from about 256 x 256; they used to overflow and turn the restoration into NaN. The network is
    # narrow: float16 convolutions are slow on CPUs without float16 instructions
    torch.manual_seed(0)
    net = DRCNet(wf=4, depth=2)
    force_mixed_masks(net)
    x = photo('astronaut', (512, 512))
    assert any(0.0 < f < 1.0 for f in mask_fractions(net, x))  # both regions of the spatial filter
    with torch.no_grad():
        full = net(x)[-1]
        with torch.autocast('cpu', dtype=dtype):
            low = net(x)[-1]
    assert torch.isfinite(low).all()
    # every layer rounds its output to the format (2**-11 relative in float16, 2**-8 in bfloat16); about 20 layers
    # of unit-size maps give an RMS error of a few times sqrt(20) of those units
    rms = (low.float() - full).square().mean().sqrt().item()
    assert rms <= 8 * 20 ** 0.5 * torch.finfo(dtype).eps, rms

    def step(autocast):
        net.zero_grad()
        with torch.autocast('cpu', dtype=dtype, enabled=autocast):
            loss = sum((o.float() - x).abs().mean() for o in net(x))
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in net.parameters()])

    (loss32, grads32), (loss16, grads16) = step(False), step(True)
    assert torch.isfinite(grads16).all()
    assert abs(loss16 - loss32) <= 8 * 20 ** 0.5 * torch.finfo(dtype).eps * loss32
    assert torch.nn.functional.cosine_similarity(grads16, grads32, dim=0) > 0.99
