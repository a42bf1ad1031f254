"""The DFR operations and DRCNet's forward pass written step by step from DRCNET.md: the tests' oracle.

Nothing here is fast or clever. Each function takes the parameters of a module of ``drcnet.archs``
and recomputes what the module should output, in the order the paper describes it, so that the
closed forms there can be held against the definition (in float64 where rounding matters).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

IN_EPS = 1e-5


def energy_attention(x: torch.Tensor, delta: float) -> torch.Tensor:
    """DRCNET.md 2.2: d = (x - mean)^2, v = sum(d) / (HW - 1), x * sigmoid(d / (4 (v + delta)) + 0.5)."""
    n = max(x.shape[-2] * x.shape[-1] - 1, 1)
    d = (x - x.mean(dim=(-2, -1), keepdim=True)).square()
    v = d.sum(dim=(-2, -1), keepdim=True) / n
    return x * torch.sigmoid(d / (4 * (v + delta)) + 0.5)


def instance_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per image and channel over H x W, biased variance, then the affine map (also on 1x1 maps)."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    var = (x - mean).square().mean(dim=(-2, -1), keepdim=True)
    return (x - mean) / torch.sqrt(var + IN_EPS) * weight[:, None, None] + bias[:, None, None]


def region_norm(x: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                region_stats: str = 'sample') -> torch.Tensor:
    """DRCNET.md 2.1 step 4: for the region and its complement, fill the outside with the region's mean,
    instance-normalise, multiply by sqrt(area / positions); add the two."""
    dims = (0, 2, 3) if region_stats == 'batch' else (2, 3)
    positions = x.shape[2] * x.shape[3] * (x.shape[0] if region_stats == 'batch' else 1)
    out = 0
    for region in (mask, 1 - mask):
        area = region.sum(dim=dims, keepdim=True)
        area = torch.where(area == 0, torch.ones_like(area), area)
        mean = (x * region).sum(dim=dims, keepdim=True) / area
        filled = x * region + (1 - region) * mean
        out = out + instance_norm(filled, weight, bias) * torch.sqrt(area / positions)
    return out


def adaptive_feature_norm(norm, x: torch.Tensor) -> torch.Tensor:
    """DRCNET.md 2.1 with the parameters of an ``AdaptiveFeatureNorm`` ``norm``."""
    stats = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
    response = torch.sigmoid(norm.sa.conv1(stats))
    gamma, beta = norm.sa.gamma_conv(response), norm.sa.beta_conv(response)
    mask = (response >= norm.threshold).to(x.dtype)
    rn = norm.rn
    return region_norm(x, mask, rn.bn_norm.weight, rn.bn_norm.bias, rn.region_stats) * (1 + gamma) + beta


def dfr_block(block, x: torch.Tensor, enc: torch.Tensor | None = None, dec: torch.Tensor | None = None):
    """A ``DFRBlock``'s forward from its parameters: (down-sampled or None, skip)."""
    out = None
    if block.has_spatial:
        spatial = block.conv_1(x)
        if block.use_norm:
            half = spatial.shape[1] // 2
            spatial = torch.cat([adaptive_feature_norm(block.norm, spatial[:, :half]), spatial[:, half:]], dim=1)
        out = F.leaky_relu(spatial, block.relu_slope)
    if block.has_attention:
        attention = F.leaky_relu(energy_attention(block.conv_2(x), block.ea_lambda), block.relu_slope)
        out = attention if out is None else out * attention
    if block.has_identity:
        out = out + block.identity(x)
    if block.use_csff and enc is not None:
        out = out + block.csff_enc(enc) + block.csff_dec(dec)
    return (block.downsample(out) if block.has_downsample else None), out


def drcnet(net, x: torch.Tensor) -> list:
    """A ``DRCNet``'s forward from its parameters (DRCNET.md 1): [stage-1 image, stage-2 image]."""
    h, w = x.shape[-2:]
    multiple = 2 ** (net.depth - 1)
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    mode = 'reflect' if pad_h < h and pad_w < w else 'replicate'
    image = F.pad(x, (0, pad_w, 0, pad_h), mode=mode) if pad_h or pad_w else x

    def encode(blocks, feat, encs=None, decs=None):
        skips = []
        for i, block in enumerate(blocks):
            down, skip = dfr_block(block, feat, *((encs[i], decs[i]) if encs and i < len(decs) else ()))
            skips.append(skip)
            feat = skip if down is None else down
        return feat, skips

    def decode(ups, skip_convs, feat, skips):
        outs = []
        for k, (up, skip_conv) in enumerate(zip(ups, skip_convs)):
            cat = torch.cat([up.up(feat), skip_conv(skips[-k - 2])], dim=1)
            block = up.conv_block
            y = F.leaky_relu(block.conv_1(cat), block.relu_slope)
            feat = F.leaky_relu(block.conv_2(y), block.relu_slope) + block.identity(cat)
            outs.append(feat)
        return feat, outs[::-1]

    feat, encs = encode(net.down_path_1, net.conv_01(image))
    feat, decs = decode(net.up_path_1, net.skip_conv_1, feat, encs)
    sam = net.sam12
    stage1 = sam.conv2(feat) + image
    gated = sam.conv1(feat) * torch.sigmoid(sam.conv3(stage1)) + feat
    feat = net.cat12(torch.cat([net.conv_02(image), gated], dim=1))
    feat, encs2 = encode(net.down_path_2, feat, encs, decs)
    feat, _ = decode(net.up_path_2, net.skip_conv_2, feat, encs2)
    stage2 = net.last(feat) + image
    return [stage1[..., :h, :w], stage2[..., :h, :w]]
