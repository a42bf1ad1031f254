"""The DFR (dynamic filter restoration) encoder block of DRCNet and its Table-4 ablation rows.

Attribute names (``identity``, ``conv_1``, ``conv_2``, ``norm.sa``, ``norm.rn.bn_norm``, ``csff_enc``,
``csff_dec``, ``downsample``) keep the authors' release spelling so its checkpoints load strictly.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

BLOCKS = ('dfr', 'base', 'sf', 'ea', 'sf_identity', 'sf_ea')
REGION_STATS = ('sample', 'batch')
IN_EPS = 1e-5  # nn.InstanceNorm2d's default epsilon


def energy_attention(x: torch.Tensor, delta: float = 1e-6) -> torch.Tensor:
    """Parameter-free energy-based attention (SimAM form) over each image and channel of (B, C, H, W)."""
    n = max(x.shape[-2] * x.shape[-1] - 1, 1)
    d = (x - x.mean(dim=(-2, -1), keepdim=True)).square()
    v = d.sum(dim=(-2, -1), keepdim=True) / n
    return x * torch.sigmoid(d / (4 * (v + delta)) + 0.5)


def _instance_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Instance norm over H x W with an affine map; unlike F.instance_norm it accepts 1x1 maps."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    var = (x - mean).square().mean(dim=(-2, -1), keepdim=True)
    return (x - mean) * torch.rsqrt(var + IN_EPS) * weight[:, None, None] + bias[:, None, None]


class SpatialResponse(nn.Module):
    """Spatial response map M_sr and the affine maps gamma, beta derived from it."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, 7, padding=3, bias=False)
        self.gamma_conv = nn.Conv2d(1, 1, 7, padding=3)
        self.beta_conv = nn.Conv2d(1, 1, 7, padding=3)

    def forward(self, x: torch.Tensor):
        """(B, C, H, W) -> M_sr, gamma, beta, each (B, 1, H, W); mean before max, as the release."""
        stats = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        response = torch.sigmoid(self.conv1(stats))
        return response, self.gamma_conv(response), self.beta_conv(response)


class RegionNorm(nn.Module):
    """Region normalisation of two complementary regions with one shared instance norm."""

    def __init__(self, channels: int, region_stats: str = 'sample'):
        super().__init__()
        if region_stats not in REGION_STATS:
            raise ValueError(f"region_stats: {region_stats!r} is not one of {', '.join(REGION_STATS)}")
        self.region_stats = region_stats
        self.bn_norm = nn.InstanceNorm2d(channels, affine=True)  # release name; applied by _instance_norm

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) and a binary mask (B, 1, H, W) -> (B, C, H, W)."""
        if self.region_stats == 'sample':
            return self._per_sample(x, mask)
        return self.reference(x, mask)

    def reference(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The definition, step by step: fill each region's outside with its mean, normalise, rescale."""
        dims = (0, 2, 3) if self.region_stats == 'batch' else (2, 3)
        positions = x.shape[2] * x.shape[3] * (x.shape[0] if self.region_stats == 'batch' else 1)
        out = 0
        for region in (mask, 1 - mask):
            area = region.sum(dim=dims, keepdim=True)
            area = torch.where(area == 0, torch.ones_like(area), area)
            mean = (x * region).sum(dim=dims, keepdim=True) / area
            filled = x * region + (1 - region) * mean
            out = out + _instance_norm(filled, self.bn_norm.weight, self.bn_norm.bias) * torch.sqrt(area / positions)
        return out

    def _per_sample(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Closed form of `reference` for per-image statistics: a filled region has the region's mean
        # as its mean and (sum of squared deviations inside) / (H*W) as its variance, and each pixel
        # lies in one region, so neither filled map needs to be built.
        positions = x.shape[2] * x.shape[3]
        weight, bias = self.bn_norm.weight[:, None, None], self.bn_norm.bias[:, None, None]
        inside = mask.expand_as(x) > 0.5
        area_in = mask.sum(dim=(2, 3), keepdim=True)
        area_out = positions - area_in
        area_in_eff = torch.where(area_in == 0, torch.ones_like(area_in), area_in)
        area_out_eff = torch.where(area_out == 0, torch.ones_like(area_out), area_out)
        sum_all = x.sum(dim=(2, 3), keepdim=True)
        sum_in = (x * mask).sum(dim=(2, 3), keepdim=True)
        mean_in = sum_in / area_in_eff
        mean_out = (sum_all - sum_in) / area_out_eff
        centred = x - torch.where(inside, mean_in, mean_out)
        sq = centred.square()
        sq_in = (sq * mask).sum(dim=(2, 3), keepdim=True)
        var_in = sq_in / positions
        var_out = (sq.sum(dim=(2, 3), keepdim=True) - sq_in) / positions
        scale_in = torch.sqrt(area_in_eff / positions)
        scale_out = torch.sqrt(area_out_eff / positions)
        gain = torch.where(inside, scale_in * torch.rsqrt(var_in + IN_EPS), scale_out * torch.rsqrt(var_out + IN_EPS))
        return centred * gain * weight + bias * (scale_in + scale_out)


class AdaptiveFeatureNorm(nn.Module):
    """The spatial filter: region-normalise degraded and clean pixels apart, then modulate."""

    def __init__(self, channels: int, threshold: float = 0.75, region_stats: str = 'sample'):
        super().__init__()
        self.threshold = threshold
        self.sa = SpatialResponse()
        self.rn = RegionNorm(channels, region_stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        response, gamma, beta = self.sa(x)
        mask = (response >= self.threshold).to(x.dtype).detach()
        return self.rn(x, mask) * (1 + gamma) + beta


class DFRBlock(nn.Module):
    """Encoder block: spatial filter branch * energy-based attention branch + identity branch.

    ``block`` selects a paper Table-4 row: 'dfr' (all three), 'sf_ea' (no identity), 'sf_identity'
    (spatial filter + identity), 'sf' (spatial filter alone), 'ea' (attention + identity) and 'base'
    (a plain residual conv block).
    """

    def __init__(self, in_ch: int, out_ch: int, downsample: bool, relu_slope: float = 0.2,
                 use_csff: bool = False, use_sf: bool = True, block: str = 'dfr',
                 sf_threshold: float = 0.75, ea_lambda: float = 1e-6, region_stats: str = 'sample'):
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"block: {block!r} is not one of {', '.join(BLOCKS)}")
        self.block = block
        self.relu_slope = relu_slope
        self.ea_lambda = ea_lambda
        self.has_spatial = block in ('dfr', 'sf', 'sf_identity', 'sf_ea', 'base')
        self.has_attention = block in ('dfr', 'sf_ea', 'ea')
        self.has_identity = block in ('dfr', 'sf_identity', 'ea', 'base')
        # 'base' keeps the conv of the spatial branch but never normalises.
        self.use_norm = use_sf and block in ('dfr', 'sf', 'sf_identity', 'sf_ea')

        if self.has_identity:
            self.identity = nn.Conv2d(in_ch, out_ch, 1)
        if self.has_spatial:
            self.conv_1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        if self.has_attention:
            self.conv_2 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        if self.use_norm:
            self.norm = AdaptiveFeatureNorm(out_ch // 2, sf_threshold, region_stats)
        if use_csff:
            self.csff_enc = nn.Conv2d(out_ch, out_ch, 3, padding=1)
            self.csff_dec = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.use_csff = use_csff
        if downsample:
            self.downsample = nn.Conv2d(out_ch, out_ch, 4, stride=2, padding=1, bias=False)
        self.has_downsample = downsample

    def spatial_branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_1(x)
        if self.use_norm:
            half = out.shape[1] // 2
            out = torch.cat([self.norm(out[:, :half]), out[:, half:]], dim=1)
        return F.leaky_relu(out, self.relu_slope)

    def attention_branch(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(energy_attention(self.conv_2(x), self.ea_lambda), self.relu_slope)

    def forward(self, x: torch.Tensor, enc: torch.Tensor | None = None, dec: torch.Tensor | None = None):
        """(B, C_in, H, W) -> (down-sampled (B, C_out, H/2, W/2) or None, skip (B, C_out, H, W)).

        ``enc``/``dec`` are the stage-1 encoder and decoder features fused by CSFF in stage 2.
        """
        if self.has_spatial and self.has_attention:
            out = self.spatial_branch(x) * self.attention_branch(x)
        elif self.has_spatial:
            out = self.spatial_branch(x)
        else:
            out = self.attention_branch(x)
        if self.has_identity:
            out = out + self.identity(x)
        if self.use_csff and enc is not None and dec is not None:
            out = out + self.csff_enc(enc) + self.csff_dec(dec)
        if self.has_downsample:
            return self.downsample(out), out
        return None, out
