"""DGUNet and DGUNet+ (Mou, Wang, Zhang, "Deep Generalized Unfolding Networks for Image Restoration", CVPR 2022).

Seven stages, each one step of proximal gradient descent unfolded: a gradient-descent module (GDM) with a
learned degradation ``phi`` and its transpose ``phit``, then a proximal U-Net whose encoder takes the previous
stage's features (cross-stage feature fusion, CSFF) and whose merge block projects the previous stage's
features onto a learned spatial subspace. ``DGUNetPlus`` gives each stage its own weights; ``DGUNet`` applies one
middle stage five times. Attribute names keep the authors' release's spelling (``phi_0``, ``stage1_encoder``,
``sam12``, ``merge12``, ``basic``, ...) so that its checkpoints load with ``strict=True``.

Outputs follow the framework's convention (``drcnet.archs.outputs``): ``[s1, ..., s6, final]``, the final
restoration last. The release returns them the other way round (final first); only the order differs, so its
checkpoints load and restore the same images.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from drcnet.registry import ARCH_REGISTRY

__all__ = ['DGUNet', 'DGUNetPlus', 'DGUNET_TASKS', 'DGUNET_PLUS_TASKS']

# The release's per-task class defaults (its train and test scripts call the class with no arguments).
DGUNET_PLUS_TASKS = {
    'deblur': {'n_feat': 96, 'scale_unetfeats': 48},
    'derain': {'n_feat': 40, 'scale_unetfeats': 20},
    'denoise': {'n_feat': 80, 'scale_unetfeats': 40},
}
DGUNET_TASKS = {
    'deblur': {'n_feat': 80, 'scale_unetfeats': 48, 'scale_orsnetfeats': 32},
    'denoise': {'n_feat': 80, 'scale_unetfeats': 48, 'scale_orsnetfeats': 32},  # the same file as deblur
    'derain': {'n_feat': 40, 'scale_unetfeats': 20, 'scale_orsnetfeats': 16},
}
GDM_FEAT = 64       # hidden width of phi / phit, the same for every task
MERGE_BASIS = 16    # dimension of the merge block's spatial subspace
STAGES = 7
PAD_TO = 8          # three 2x down-samplings
RELU_SLOPE = 0.2
CSFF_SLOPE = 0.1


def conv3(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)


def conv1(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, bias=bias)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: global average, 1x1 n -> n/4, ReLU, 1x1 n/4 -> n, sigmoid; rescales channels."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.conv_du = nn.Sequential(conv1(channels, channels // reduction, bias=False), nn.ReLU(inplace=True),
                                     conv1(channels // reduction, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(x.mean(dim=(2, 3), keepdim=True))


class CAB(nn.Module):
    """Channel attention block: conv, PReLU, conv, channel attention, plus the input.

    The release shares one PReLU among all CABs of a network; here each block has its own (same key names).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.CA = ChannelAttention(channels)  # release names: CA, body
        self.body = nn.Sequential(conv3(channels, channels, bias=False), nn.PReLU(),
                                  conv3(channels, channels, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.CA(self.body(x)) + x


def shallow_features(channels: int) -> nn.Sequential:
    """Image to features: conv 3 -> n (no bias), then a CAB."""
    return nn.Sequential(conv3(3, channels, bias=False), CAB(channels))


class ResBlock(nn.Module):
    """The learned degradation operator ``phi`` (or its transpose ``phit``): conv 3 -> 64, PReLU, conv 64 -> 3,
    plus the input.

    The release's default PReLU argument is built once, so every phi/phit of the process shares one slope;
    here each operator has its own (same key names).
    """

    def __init__(self, hidden: int = GDM_FEAT):
        super().__init__()
        self.body = nn.Sequential(conv3(3, hidden), nn.PReLU(), conv3(hidden, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


def gradient_step(prev: torch.Tensor, y: torch.Tensor, phi: nn.Module, phit: nn.Module,
                  step: torch.Tensor) -> torch.Tensor:
    """GDM: ``prev - r * phit(phi(prev) - y)``, one gradient step on ``||phi(x) - y||^2 / 2``."""
    return prev - step * phit(phi(prev) - y)


class UNetConvBlock(nn.Module):
    """Conv, half-instance norm, LeakyReLU, conv, LeakyReLU, plus a 1x1 identity path; optional CSFF and 2x down.

    CSFF (``csff=True``) fuses the previous stage's encoder feature ``enc`` and decoder feature ``dec``:
    ``s = lrelu(csff_enc(enc) + csff_dec(dec))``, ``out = out * sigmoid(phi(s)) + gamma(s) + out``.
    """

    def __init__(self, cin: int, cout: int, downsample: bool, hin: bool, csff: bool = False):
        super().__init__()
        # release names: identity, conv_1, conv_2, csff_enc, csff_dec, phi, gamma, norm, downsample
        self.identity = conv1(cin, cout)
        self.conv_1 = conv3(cin, cout)
        self.conv_2 = conv3(cout, cout)
        self.act = nn.LeakyReLU(RELU_SLOPE)
        self.csff = csff
        if csff:
            self.csff_enc = conv3(cout, cout)
            self.csff_dec = conv3(cin, cout)
            self.phi = conv3(cout, cout)
            self.gamma = conv3(cout, cout)
        self.hin = hin
        if hin:
            self.norm = nn.InstanceNorm2d(cout // 2, affine=True)
        if downsample:
            self.downsample = nn.Conv2d(cout, cout, 4, stride=2, padding=1, bias=False)
        else:
            self.downsample = None

    def forward(self, x: torch.Tensor, enc: torch.Tensor | None = None, dec: torch.Tensor | None = None):
        """(B, cin, H, W) -> (B, cout, H, W), or (down-sampled (B, cout, H/2, W/2), skip) with ``downsample``."""
        out = self.conv_1(x)
        if self.hin:
            half = out.shape[1] // 2
            out = torch.cat([self.norm(out[:, :half]), out[:, half:]], dim=1)
        out = self.act(out)
        out = self.act(self.conv_2(out))
        out = out + self.identity(x)
        if self.csff and enc is not None and dec is not None:
            s = F.leaky_relu(self.csff_enc(enc) + self.csff_dec(dec), CSFF_SLOPE)
            out = out * torch.sigmoid(self.phi(s)) + self.gamma(s) + out
        if self.downsample is not None:
            return self.downsample(out), out
        return out


def unet_widths(n_feat: int, scale_unetfeats: int) -> list:
    return [n_feat + scale_unetfeats * i for i in range(4)]


class Encoder(nn.Module):
    """Four levels: three blocks that halve the size (widths w0 -> w1 -> w2 -> w3), one at H/8 (w3 -> w3)."""

    def __init__(self, n_feat: int, scale_unetfeats: int, csff: bool):
        super().__init__()
        w = unet_widths(n_feat, scale_unetfeats)
        blocks = [UNetConvBlock(w[i], w[i + 1], downsample=True, hin=True, csff=csff) for i in range(3)]
        blocks.append(UNetConvBlock(w[3], w[3], downsample=False, hin=True))
        self.body = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, encs: list | None = None, decs: list | None = None) -> list:
        """(B, w0, H, W) -> [skip (w1, H), skip (w2, H/2), skip (w3, H/4), bottleneck (w3, H/8)].

        ``encs`` / ``decs``: the previous stage's encoder outputs and decoder outputs, for CSFF.
        """
        feats = []
        for i, block in enumerate(self.body[:-1]):
            enc = encs[i] if encs is not None else None
            dec = decs[-i - 1] if decs is not None else None
            x, skip = block(x, enc, dec)
            feats.append(skip)
        feats.append(self.body[-1](x))
        return feats


class UNetUpBlock(nn.Module):
    """2x transposed convolution, concatenation with the (converted) skip, then a plain UNetConvBlock."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv_block = UNetConvBlock(2 * cout, cout, downsample=False, hin=False)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv_block(torch.cat([self.up(x), skip], dim=1))


class Decoder(nn.Module):
    """Three up blocks (w3 -> w2 -> w1 -> w0); each encoder skip passes a 3x3 conv to the up block's width."""

    def __init__(self, n_feat: int, scale_unetfeats: int):
        super().__init__()
        w = unet_widths(n_feat, scale_unetfeats)
        self.body = nn.ModuleList(UNetUpBlock(w[3 - i], w[2 - i]) for i in range(3))
        self.skip_conv = nn.ModuleList(conv3(w[3 - i], w[2 - i]) for i in range(3))

    def forward(self, feats: list) -> list:
        """Encoder outputs -> [(B, w2, H/4), (B, w1, H/2), (B, w0, H)]."""
        x = feats[-1]
        outs = []
        for i, (up, skip_conv) in enumerate(zip(self.body, self.skip_conv)):
            x = up(x, skip_conv(feats[-i - 2]))
            outs.append(x)
        return outs


class SAM(nn.Module):
    """Supervised attention module, 1x1 form: ``feat = conv1(x) + x``, ``img = conv2(x) + x_img``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = conv1(channels, channels, bias=False)
        self.conv2 = conv1(channels, 3, bias=False)

    def forward(self, x: torch.Tensor, x_img: torch.Tensor):
        """(B, n, H, W), (B, 3, H, W) -> features (B, n, H, W), image (B, 3, H, W)."""
        return self.conv1(x) + x, self.conv2(x) + x_img


def subspace_projection(basis: torch.Tensor, feats: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
    """Project each channel of ``feats`` (B, C, N) onto the span of the rows of ``basis`` (B, K, N).

    Returns ``V (V^T V)^-1 V^T f`` per channel, with ``V = basis^T``, as (B, C, N), computed by a linear solve in
    float32 with autocast off. The Gram matrix gets ``ridge`` times its mean diagonal added, which keeps a
    singular Gram (e.g. a flat image) finite and changes a well-conditioned result by about ``ridge * cond``.
    """
    with torch.autocast(basis.device.type, enabled=False):
        v_t = basis.float()
        f = feats.float()
        gram = v_t @ v_t.transpose(1, 2)                                        # (B, K, K)
        scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        coeffs = torch.linalg.solve(gram + ridge * scale[:, None, None] * eye, v_t @ f.transpose(1, 2))  # (B, K, C)
        return (v_t.transpose(1, 2) @ coeffs).transpose(1, 2)                    # (B, C, N)


class MergeBlock(nn.Module):
    """Merges the previous stage's SAM features ``bridge`` into the current features ``x``.

    A 3x3 conv on ``[x, bridge]`` gives 16 spatial basis vectors (each normalised to unit L1 norm over the
    pixels); every channel of ``bridge`` is replaced by its projection onto their span, and a 3x3 conv on
    ``[x, projected bridge]`` is added to ``x``. The release inverts the 16x16 Gram matrix (``torch.inverse``,
    which fails in fp16/bf16); here a ridge-stabilised solve in float32 (:func:`subspace_projection`).
    """

    def __init__(self, channels: int, basis: int = MERGE_BASIS):
        super().__init__()
        self.conv_block = conv3(2 * channels, channels)  # release names: conv_block, subnet
        self.subnet = conv3(2 * channels, basis)

    def forward(self, x: torch.Tensor, bridge: torch.Tensor) -> torch.Tensor:
        """(B, n, H, W), (B, n, H, W) -> (B, n, H, W)."""
        b, c, h, w = bridge.shape
        basis = self.subnet(torch.cat([x, bridge], dim=1)).flatten(2).float()
        basis = basis / (1e-6 + basis.abs().sum(dim=2, keepdim=True))
        projected = subspace_projection(basis, bridge.flatten(2)).view(b, c, h, w).to(x.dtype)
        return self.conv_block(torch.cat([x, projected], dim=1)) + x


def _task_config(table: dict, task: str, given: dict, cls: str) -> dict:
    if task not in table:
        raise ValueError(f"{cls}.task: {task!r} is not one of {', '.join(table)}")
    config = dict(table[task])
    config.update({k: v for k, v in given.items() if v is not None})
    for key, value in config.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'{cls}.{key}: expected a positive integer, got {value!r}')
    w = unet_widths(config['n_feat'], config['scale_unetfeats'])
    if any(width % 2 for width in w[1:]) or config['n_feat'] < 4:
        raise ValueError(f'{cls}: the U-Net widths {w} must be even after the first (half-instance norm) and '
                         f'n_feat >= 4 (channel attention divides it by 4); got n_feat {config["n_feat"]}, '
                         f'scale_unetfeats {config["scale_unetfeats"]}')
    return config


def _pad_to_multiple(x: torch.Tensor, multiple: int, minimum: int) -> torch.Tensor:
    """Pad the bottom and right of ``x`` to a multiple of ``multiple`` and at least ``minimum``: reflect, or
    replicate where a side is too short to reflect."""
    h, w = x.shape[-2:]
    pad_h, pad_w = max((-h) % multiple, minimum - h), max((-w) % multiple, minimum - w)
    if pad_h == 0 and pad_w == 0:
        return x
    mode = 'reflect' if pad_h < h and pad_w < w else 'replicate'
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def _run_padded(forward, x: torch.Tensor) -> list:
    """Reflect-pad ``x`` (B, 3, H, W) to a multiple of 8 (at least 16, so that the instance norm at H/8 sees
    more than one pixel), run ``forward``, crop every output back to H x W."""
    h, w = x.shape[-2:]
    outs = forward(_pad_to_multiple(x, PAD_TO, 2 * PAD_TO))
    return [o[..., :h, :w] for o in outs]


@ARCH_REGISTRY.register()
class DGUNetPlus(nn.Module):
    """DGUNet+: seven unfolded stages with independent weights.

    Args:
        task: 'deblur', 'derain' or 'denoise': the release's widths for that task (PEERS.md 1.3).
        n_feat, scale_unetfeats: override the task's feature width and the U-Net's width step.
    """

    def __init__(self, task: str = 'deblur', n_feat: int | None = None, scale_unetfeats: int | None = None):
        super().__init__()
        cfg = _task_config(DGUNET_PLUS_TASKS, task, {'n_feat': n_feat, 'scale_unetfeats': scale_unetfeats},
                           'DGUNetPlus')
        n, s = cfg['n_feat'], cfg['scale_unetfeats']
        self.task = task
        # release names r0..r6 (step sizes), shallow_feat1..7, phi_k / phit_k, stage{k}_encoder / _decoder,
        # sam{k}{k+1}, merge{k}{k+1}, tail; registered in the release's order
        for k in range(STAGES):
            self.register_parameter(f'r{k}', nn.Parameter(torch.tensor([0.5])))
        for k in range(1, STAGES + 1):
            self.add_module(f'shallow_feat{k}', shallow_features(n))
        for k in range(STAGES):
            self.add_module(f'phi_{k}', ResBlock())
            self.add_module(f'phit_{k}', ResBlock())
        for k in range(1, STAGES):
            self.add_module(f'stage{k}_encoder', Encoder(n, s, csff=k > 1))
            self.add_module(f'stage{k}_decoder', Decoder(n, s))
        for k in range(1, STAGES):
            self.add_module(f'sam{k}{k + 1}', SAM(n))
            self.add_module(f'merge{k}{k + 1}', MergeBlock(n))
        self.tail = conv3(n, 3, bias=False)

    def _stages(self, y: torch.Tensor) -> list:
        images, img = [], y
        encs = decs = samfeats = None
        for k in range(1, STAGES):
            x_img = gradient_step(img, y, getattr(self, f'phi_{k - 1}'), getattr(self, f'phit_{k - 1}'),
                                  getattr(self, f'r{k - 1}'))
            feat = getattr(self, f'shallow_feat{k}')(x_img)
            if k > 1:
                feat = getattr(self, f'merge{k - 1}{k}')(feat, samfeats)
            encs = getattr(self, f'stage{k}_encoder')(feat, encs, decs)
            decs = getattr(self, f'stage{k}_decoder')(encs)
            samfeats, img = getattr(self, f'sam{k}{k + 1}')(decs[-1], x_img)
            images.append(img)
        x_img = gradient_step(img, y, self.phi_6, self.phit_6, self.r6)
        feat = self.merge67(self.shallow_feat7(x_img), samfeats)
        images.append(self.tail(feat) + y)  # the last stage adds the network input, not x_img
        return images

    def forward(self, x: torch.Tensor) -> list:
        """(B, 3, H, W), any H and W -> [s1, ..., s6, final], each (B, 3, H, W)."""
        return _run_padded(self._stages, x)


class DGUNetStage(nn.Module):
    """DGUNet's middle stage, applied five times with the same weights (release name ``basic``).

    ``concat12`` exists in the release but is never used; it is kept, frozen, so that its checkpoints load.
    """

    def __init__(self, n_feat: int, scale_unetfeats: int):
        super().__init__()
        self.r1 = nn.Parameter(torch.tensor([0.5]))
        self.phi_1 = ResBlock()
        self.phit_1 = ResBlock()
        self.shallow_feat2 = shallow_features(n_feat)
        self.stage2_encoder = Encoder(n_feat, scale_unetfeats, csff=True)
        self.stage2_decoder = Decoder(n_feat, scale_unetfeats)
        self.sam23 = SAM(n_feat)
        self.concat12 = conv3(2 * n_feat, n_feat, bias=False)
        self.concat12.weight.requires_grad_(False)
        self.merge12 = MergeBlock(n_feat)

    def forward(self, img: torch.Tensor, y: torch.Tensor, samfeats: torch.Tensor, encs: list, decs: list):
        """One stage: previous image, network input, previous SAM features and U-Net features -> the same, next."""
        x_img = gradient_step(img, y, self.phi_1, self.phit_1, self.r1)
        feat = self.merge12(self.shallow_feat2(x_img), samfeats)
        encs = self.stage2_encoder(feat, encs, decs)
        decs = self.stage2_decoder(encs)
        samfeats, img = self.sam23(decs[-1], x_img)
        return img, samfeats, encs, decs


@ARCH_REGISTRY.register()
class DGUNet(nn.Module):
    """DGUNet: stage 1, one shared middle stage run five times, and a last stage with a wider tail.

    Args:
        task: 'deblur', 'denoise' (the same network) or 'derain': the release's widths (PEERS.md 1.3).
        n_feat, scale_unetfeats, scale_orsnetfeats: override the task's values; the last stage's
            tail is ``n_feat + scale_orsnetfeats`` wide.
    """

    def __init__(self, task: str = 'deblur', n_feat: int | None = None, scale_unetfeats: int | None = None,
                 scale_orsnetfeats: int | None = None):
        super().__init__()
        cfg = _task_config(DGUNET_TASKS, task, {'n_feat': n_feat, 'scale_unetfeats': scale_unetfeats,
                                                'scale_orsnetfeats': scale_orsnetfeats}, 'DGUNet')
        n, s, o = cfg['n_feat'], cfg['scale_unetfeats'], cfg['scale_orsnetfeats']
        self.task = task
        # release names and order: r0, r6, basic, shallow_feat1, shallow_feat7, stage1_*, sam12, phi_0, phit_0,
        # phi_6, phit_6, concat67, tail
        self.r0 = nn.Parameter(torch.tensor([0.5]))
        self.r6 = nn.Parameter(torch.tensor([0.5]))
        self.basic = DGUNetStage(n, s)
        self.shallow_feat1 = shallow_features(n)
        self.shallow_feat7 = shallow_features(n)
        self.stage1_encoder = Encoder(n, s, csff=False)
        self.stage1_decoder = Decoder(n, s)
        self.sam12 = SAM(n)
        self.phi_0, self.phit_0 = ResBlock(), ResBlock()
        self.phi_6, self.phit_6 = ResBlock(), ResBlock()
        self.concat67 = conv3(2 * n, n + o, bias=False)
        self.tail = conv3(n + o, 3, bias=False)

    def _stages(self, y: torch.Tensor) -> list:
        x_img = gradient_step(y, y, self.phi_0, self.phit_0, self.r0)
        encs = self.stage1_encoder(self.shallow_feat1(x_img))
        decs = self.stage1_decoder(encs)
        samfeats, img = self.sam12(decs[-1], x_img)
        images = [img]
        for _ in range(STAGES - 2):
            img, samfeats, encs, decs = self.basic(img, y, samfeats, encs, decs)
            images.append(img)
        x_img = gradient_step(img, y, self.phi_6, self.phit_6, self.r6)
        feat = self.concat67(torch.cat([self.shallow_feat7(x_img), samfeats], dim=1))
        images.append(self.tail(feat) + y)
        return images

    def forward(self, x: torch.Tensor) -> list:
        """(B, 3, H, W), any H and W -> [s1, ..., s6, final], each (B, 3, H, W)."""
        return _run_padded(self._stages, x)
