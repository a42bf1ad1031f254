import torch
from torch.nn import functional as F

from drcnet.archs.drcnet_arch import DRCNet
from drcnet.inference.tiling import restore, tiled_forward
from drcnet.inference.tta import TRANSFORMS, forward_x8, inverse, transform
from tests.conftest import photo_tensor
from tolerance import assert_same_up_to_rounding, network_terms, rounding_gap


def dihedral_pairs():
    """The eight (forward, backward) maps written independently of tta.py: transposes and flips."""
    def t(x):
        return x.transpose(-2, -1)

    def fh(x):
        return x.flip(-1)

    def fv(x):
        return x.flip(-2)

    return [
        (lambda x: x, lambda y: y),
        (fh, fh),
        (fv, fv),
        (lambda x: fv(fh(x)), lambda y: fh(fv(y))),
        (t, t),
        (lambda x: fh(t(x)), lambda y: t(fh(y))),
        (lambda x: fv(t(x)), lambda y: t(fv(y))),
        (lambda x: fv(fh(t(x))), lambda y: t(fh(fv(y)))),
    ]


def test_transforms_are_the_eight_distinct_symmetries_and_invert():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    seen = set()
    for k, flip in TRANSFORMS:
        y = transform(x, k, flip)
        seen.add((tuple(y.shape), tuple(y.flatten().tolist())))
        assert torch.equal(inverse(y, k, flip), x)
    assert len(seen) == 8
    independent = {(tuple(f(x).shape), tuple(f(x).flatten().tolist())) for f, _ in dihedral_pairs()}
    assert seen == independent


def test_x8_of_drcnet_differs_from_plain_and_is_the_mean_of_eight_passes():
    img = photo_tensor('astronaut')[..., 100:140, 180:236]  # non-square 40x56
    torch.manual_seed(0)
    net = DRCNet(wf=8, depth=2).eval()

    def fn(x):
        return net(x)[-1]

    with torch.inference_mode():
        plain = fn(img)
        tta = forward_x8(fn, img)
        manual = torch.stack([back(fn(fwd(img))) for fwd, back in dihedral_pairs()]).mean(0)
    assert tta.shape == img.shape
    # the same eight passes on views of other strides (convolutions may sum in another order), then a mean of 8
    terms = network_terms(net, 40 * 56) + 8
    assert (tta - plain).abs().max() > 100 * rounding_gap(terms, tta, plain)
    assert_same_up_to_rounding(tta, manual, terms)
    assert_same_up_to_rounding(restore(net, img, tta=True), tta, terms)


def test_x8_with_tiling_averages_eight_tiled_passes():
    img = photo_tensor('coffee')[..., :72, :100]
    weight = torch.randn(3, 3, 3, 3, generator=torch.Generator().manual_seed(1)) * 0.2

    def fn(x):  # orientation-dependent, so the ensemble changes the result
        return x + F.conv2d(x, weight, padding=1) + torch.linspace(0, 0.1, x.shape[-1])

    out = restore(fn, img, tile=48, overlap=16, tta=True)
    manual = torch.stack([tiled_forward(lambda x, f=fwd, b=back: b(fn(f(x))), img, 48, 16)
                          for fwd, back in dihedral_pairs()]).mean(0)
    # a 3x3 convolution of 3 channels, the mean of 8 passes and the blend of at most 4 tiles, in either order
    terms = 27 + 8 + 4
    assert (out - restore(fn, img, tile=48, overlap=16)).abs().max() > 100 * rounding_gap(terms, out, manual)
    assert_same_up_to_rounding(out, manual, terms)
