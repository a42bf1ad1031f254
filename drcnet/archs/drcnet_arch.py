"""DRCNet: a two-stage U-Net with DFR encoder blocks, SAM between stages and cross-stage fusion.

Module names follow the authors' release (``down_path_1``, ``skip_conv_1``, ``sam12``, ``cat12``,
``last``...), so its checkpoints load with ``strict=True``.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from drcnet.archs.dfr_block import BLOCKS, REGION_STATS, DFRBlock
from drcnet.registry import ARCH_REGISTRY


class ResidualConvBlock(nn.Module):
    """Decoder block: two 3x3 conv + LeakyReLU with a 1x1 projection of the input added."""

    def __init__(self, in_ch: int, out_ch: int, relu_slope: float = 0.2):
        super().__init__()
        self.relu_slope = relu_slope
        self.identity = nn.Conv2d(in_ch, out_ch, 1)
        self.conv_1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv_2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W)."""
        out = F.leaky_relu(self.conv_1(x), self.relu_slope)
        out = F.leaky_relu(self.conv_2(out), self.relu_slope)
        return out + self.identity(x)


class UpBlock(nn.Module):
    """Decoder level: 2x transposed-conv up-sampling, concatenation with the skip, residual block."""

    def __init__(self, in_ch: int, out_ch: int, relu_slope: float = 0.2):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2)
        self.conv_block = ResidualConvBlock(in_ch, out_ch, relu_slope)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """x (B, C_in, H/2, W/2), skip (B, C_out, H, W) -> (B, C_out, H, W)."""
        return self.conv_block(torch.cat([self.up(x), skip], dim=1))


class SAM(nn.Module):
    """Supervised attention between the stages: the stage-1 image and attention-gated features."""

    def __init__(self, channels: int, image_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, image_channels, 3, padding=1)
        self.conv3 = nn.Conv2d(image_channels, channels, 3, padding=1)

    def forward(self, feat: torch.Tensor, image: torch.Tensor):
        """feat (B, C, H, W), image (B, c, H, W) -> gated feat (B, C, H, W), stage-1 image (B, c, H, W)."""
        restored = self.conv2(feat) + image
        return feat + self.conv1(feat) * torch.sigmoid(self.conv3(restored)), restored


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom/right to a multiple: reflect where the image is large enough, else replicate."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    mode = 'reflect' if pad_h < h and pad_w < w else 'replicate'
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def _normalise_levels(sf_levels: Iterable[int] | None, depth: int) -> frozenset:
    if sf_levels is None:
        return frozenset(range(depth))
    levels = frozenset(int(v) for v in sf_levels)
    bad = sorted(v for v in levels if not 0 <= v < depth)
    if bad:
        raise ValueError(f'sf_levels: {bad} outside the encoder levels 0..{depth - 1}')
    return levels


@ARCH_REGISTRY.register()
class DRCNet(nn.Module):
    """DRCNet (Li et al., ECCV 2022): two U-Net stages whose encoders filter degraded pixels.

    Args:
        wf: width of the first level; level i has ``wf * 2**i`` channels.
        depth: number of encoder levels (``depth - 1`` down-samplings).
        relu_slope: LeakyReLU negative slope.
        sf_threshold: M_sr threshold of the degraded-pixel mask (paper 0.75, release 0.8).
        ea_lambda: energy attention delta (paper 1e-6, release 1e-4).
        region_stats: 'sample' (per-image region statistics) or 'batch' (pooled, as the release).
        sf_levels: encoder levels whose blocks use the spatial filter (default: all).
        block: 'dfr' or an ablation row of paper Table 4 ('base', 'sf', 'ea', 'sf_identity', 'sf_ea').
        in_chans: image channels (3, or 1 for grey images).
    """

    def __init__(self, wf: int = 64, depth: int = 4, relu_slope: float = 0.2, sf_threshold: float = 0.75,
                 ea_lambda: float = 1e-6, region_stats: str = 'sample', sf_levels: Sequence[int] | None = None,
                 block: str = 'dfr', in_chans: int = 3):
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"block: {block!r} is not one of {', '.join(BLOCKS)}")
        if region_stats not in REGION_STATS:
            raise ValueError(f"region_stats: {region_stats!r} is not one of {', '.join(REGION_STATS)}")
        if depth < 1 or wf < 2 or wf % 2:
            raise ValueError(f'depth must be >= 1 and wf an even number >= 2, got depth={depth}, wf={wf}')
        if in_chans < 1:
            raise ValueError(f'in_chans must be >= 1, got {in_chans}')
        self.depth = depth
        levels = _normalise_levels(sf_levels, depth)
        widths = [wf * 2 ** i for i in range(depth)]

        def encoder(csff: bool) -> nn.ModuleList:
            blocks, prev = [], wf
            for i, width in enumerate(widths):
                down = i + 1 < depth
                blocks.append(DFRBlock(prev, width, down, relu_slope, use_csff=csff and down,
                                       use_sf=i in levels, block=block, sf_threshold=sf_threshold,
                                       ea_lambda=ea_lambda, region_stats=region_stats))
                prev = width
            return nn.ModuleList(blocks)

        def decoder():
            ups = nn.ModuleList(UpBlock(widths[i + 1], widths[i], relu_slope) for i in reversed(range(depth - 1)))
            skips = nn.ModuleList(nn.Conv2d(widths[i], widths[i], 3, padding=1) for i in reversed(range(depth - 1)))
            return ups, skips

        self.conv_01 = nn.Conv2d(in_chans, wf, 3, padding=1)
        self.conv_02 = nn.Conv2d(in_chans, wf, 3, padding=1)
        self.down_path_1 = encoder(csff=False)
        self.down_path_2 = encoder(csff=True)
        self.up_path_1, self.skip_conv_1 = decoder()
        self.up_path_2, self.skip_conv_2 = decoder()
        self.sam12 = SAM(wf, in_chans)
        self.cat12 = nn.Conv2d(wf * 2, wf, 1)
        self.last = nn.Conv2d(wf, in_chans, 3, padding=1)

    @staticmethod
    def _encode(blocks, x, encs=None, decs=None):
        """Encoder pass; ``encs``/``decs`` (stage 1's encoder skips and decoder outputs) feed CSFF in stage 2."""
        skips = []
        for i, block in enumerate(blocks):
            enc = encs[i] if encs is not None and i < len(encs) else None
            dec = decs[i] if decs is not None and i < len(decs) else None
            down, skip = block(x, enc, dec)
            skips.append(skip)
            x = down if down is not None else skip
        return x, skips

    @staticmethod
    def _decode(ups, skip_convs, x, skips):
        outs = []
        for k, (up, skip_conv) in enumerate(zip(ups, skip_convs)):
            x = up(x, skip_conv(skips[-k - 2]))
            outs.append(x)
        return x, outs[::-1]  # shallow to deep, to line up with encoder levels

    def forward(self, x: torch.Tensor) -> list:
        """(B, c, H, W) -> [stage-1 image, stage-2 image], each (B, c, H, W), c = ``in_chans``; any H, W."""
        h, w = x.shape[-2:]
        image = _pad_to_multiple(x, 2 ** (self.depth - 1))

        feat, encs = self._encode(self.down_path_1, self.conv_01(image))
        feat, decs = self._decode(self.up_path_1, self.skip_conv_1, feat, encs)
        gated, stage1 = self.sam12(feat, image)

        feat = self.cat12(torch.cat([self.conv_02(image), gated], dim=1))
        feat, encs2 = self._encode(self.down_path_2, feat, encs, decs)
        feat, _ = self._decode(self.up_path_2, self.skip_conv_2, feat, encs2)
        stage2 = self.last(feat) + image
        return [stage1[..., :h, :w].contiguous(), stage2[..., :h, :w].contiguous()]
