"""The DFR (dynamic filter restoration) encoder block of DRCNet and its Table-4 ablation rows.

Attribute names (``identity``, ``conv_1``, ``conv_2``, ``norm.sa``, ``norm.rn.bn_norm``, ``csff_enc``,
``csff_dec``, ``downsample``) keep the authors' release spelling so its checkpoints load strictly.
The tests hold every operation here against the definition written step by step (``tests/reference.py``).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.profiler import record_function

from drcnet.archs.precision import float32_statistics

BLOCKS = ('dfr', 'base', 'sf', 'ea', 'sf_identity', 'sf_ea')
SPATIAL_FILTER_BLOCKS = ('dfr', 'sf', 'sf_identity', 'sf_ea')
REGION_STATS = ('sample', 'batch')
# torch.profiler names of the two DFR operations, for profiles (scripts/benchmark.py)
PROFILE_SPATIAL_FILTER, PROFILE_ATTENTION = 'dfr.spatial_filter', 'dfr.energy_attention'
IN_EPS = 1e-5  # nn.InstanceNorm2d's default epsilon


@float32_statistics
def energy_attention(x: torch.Tensor, delta: float = 1e-6) -> torch.Tensor:
    """Parameter-free energy-based attention (SimAM form) over each image and channel of (B, C, H, W):
    ``x * sigmoid(d / (4 (v + delta)) + 0.5)``, d the squared deviation from the mean, v its sum / (HW - 1)."""
    centred = x - x.mean(dim=(-2, -1), keepdim=True)
    n = max(x.shape[-2] * x.shape[-1] - 1, 1)  # a 1x1 map must not divide by zero
    v = centred.square().sum(dim=(-2, -1), keepdim=True) / n
    return x * torch.sigmoid(centred.square() / (4 * (v + delta)) + 0.5)


class _RegionStats:
    """Constants of the closed-form region norm, per image and channel, for both regions at once.

    Region r's filled map is x inside r and mu_r outside. Its instance mean is the centre
    c_r = mu_r + e_r, e_r = (S_r - A_r mu_r) / HW (S_r, A_r: this image's sum and area in r; e_r = 0
    with per-image statistics), and its variance (sum_r (x - c_r)^2 + (HW - A_r) e_r^2) / HW, a sum of
    positive terms. A pixel of region r then normalises to (x - c_r) g_r + k_r, with
    g_r = w sqrt(area_r / P) / sqrt(var_r + eps) and k_r = b (sqrt(area_in / P) + sqrt(area_out / P))
    - e_other g_other, the other region's filled map being the constant mu_other there.

    Constants are (B, 2, C, 1, 1) tensors, index 0 of dim 1 for the region (mask = 1) and 1 for its
    complement, so that each step is one operation for both regions; ``unbind(1)`` splits them.
    """

    def __init__(self, x: torch.Tensor, mask: torch.Tensor, pooled: bool):
        b, c, h, w = x.shape
        self.pooled = pooled
        self.hw = h * w
        self.positions = self.hw * (b if pooled else 1)
        # the two regions as the rows of one (B, 2, HW) matrix: both regions' sums in one product
        self.regions = torch.stack([mask.reshape(b, self.hw), (1 - mask).reshape(b, self.hw)], dim=1)
        self.image_area = self.regions.sum(dim=2).view(b, 2, 1, 1, 1)
        # an empty region counts as area 1 (its mean is then 0, as its sums are)
        self.area = self.pool(self.image_area).clamp(min=1)
        sums = self.region_sums(x)
        self.mu = self.pool(sums) / self.area
        if pooled:
            self.e = (sums - self.image_area * self.mu) / self.hw
            self.centre = self.mu + self.e
        else:
            self.centre = self.mu

    def pool(self, per_image: torch.Tensor) -> torch.Tensor:
        return per_image.sum(dim=0, keepdim=True) if self.pooled else per_image

    def region_sums(self, x: torch.Tensor) -> torch.Tensor:
        """Sums over H, W of x inside and outside the region, (B, 2, C, 1, 1), as one matrix product.

        Both are summed directly: one as the total minus the other loses all precision when a
        region holds a few pixels only.
        """
        b, c, h, w = x.shape
        return torch.matmul(self.regions, x.reshape(b, c, h * w).transpose(1, 2)).view(b, 2, c, 1, 1)

    def gains(self, square: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
        """g (B, 2, C, 1, 1) and the offsets k, (B, 2, C, 1, 1), or (B, C, 1, 1) for both regions with
        per-image statistics, from the map of (x - c_r)^2."""
        sq = self.region_sums(square)
        if self.pooled:
            # the other region's area times this region's e^2: its filled part, off the centre by e
            sq = sq + self.image_area.flip(1) * self.e.square()
        scale = torch.sqrt(self.area / self.positions)
        g = torch.rsqrt(sq / self.hw + IN_EPS) * scale * weight.view(-1, 1, 1)
        offset = bias.view(-1, 1, 1) * scale.sum(dim=1)
        if self.pooled:
            return g, offset.unsqueeze(1) - (self.e * g).flip(1)
        return g, offset


class SpatialResponse(nn.Module):
    """Spatial response map M_sr and the affine maps gamma, beta derived from it."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, 7, padding=3, bias=False)
        self.gamma_conv = nn.Conv2d(1, 1, 7, padding=3)
        self.beta_conv = nn.Conv2d(1, 1, 7, padding=3)

    def forward(self, x: torch.Tensor):
        """(B, C, H, W) -> M_sr, gamma, beta, each (B, 1, H, W); channel mean before maximum, as the release."""
        stats = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        response = torch.sigmoid(self.conv1(stats))
        return response, self.gamma_conv(response), self.beta_conv(response)


class RegionNorm(nn.Module):
    """Region normalisation of two complementary regions with one shared instance norm (DRCNET.md 2.1, step 4)."""

    def __init__(self, channels: int, region_stats: str = 'sample'):
        super().__init__()
        if region_stats not in REGION_STATS:
            raise ValueError(f"region_stats: {region_stats!r} is not one of {', '.join(REGION_STATS)}")
        self.region_stats = region_stats
        self.bn_norm = nn.InstanceNorm2d(channels, affine=True)  # release name; its affine map is applied below

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) and a binary mask (B, 1, H, W) -> (B, C, H, W)."""
        return _region_norm(x, mask, self.bn_norm.weight, self.bn_norm.bias, self.region_stats == 'batch')


@float32_statistics
def _region_norm(x: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                 pooled: bool) -> torch.Tensor:
    """Both regions filled with their means, instance-normalised and rescaled by sqrt(area / P), summed,
    in closed form: a pixel of region r becomes (x - c_r) g_r + k_r (see ``_RegionStats``), so neither
    filled map is built."""
    stats = _RegionStats(x, mask, pooled)
    inside = mask > 0.5
    # where(), not c_out + mask * (c_in - c_out): a far-off other region must not cost precision
    centred = x - torch.where(inside, *stats.centre.unbind(1))
    g, k = stats.gains(centred.square(), weight, bias)
    offset = torch.where(inside, *k.unbind(1)) if pooled else k
    return centred * torch.where(inside, *g.unbind(1)) + offset


class AdaptiveFeatureNorm(nn.Module):
    """The spatial filter: region-normalise degraded and clean pixels apart, then modulate by gamma, beta."""

    def __init__(self, channels: int, threshold: float = 0.75, region_stats: str = 'sample'):
        super().__init__()
        self.threshold = threshold
        self.sa = SpatialResponse()
        self.rn = RegionNorm(channels, region_stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W): ``RN(x, M_sr >= t) * (1 + gamma) + beta``."""
        response, gamma, beta = self.sa(x)
        mask = (response >= self.threshold).to(x.dtype)  # a comparison carries no gradient
        return self.rn(x, mask) * (1 + gamma) + beta


class DFRBlock(nn.Module):
    """Encoder block: spatial filter branch * energy-based attention branch + identity branch.

    ``block`` selects a paper Table-4 row: 'dfr' (all three), 'sf_ea' (no identity), 'sf_identity'
    (spatial filter + identity), 'sf' (spatial filter alone), 'ea' (attention + identity) and 'base'
    (a plain residual conv block).

    As in the release, the spatial filter's modules (``norm``) exist in every block of a row that has the
    filter, and ``use_sf`` decides whether this block applies them; an unused filter's parameters are frozen
    (``requires_grad=False``) so that optimisers and DDP never wait for their gradients.
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
        self.has_spatial = block != 'ea'  # 'base' keeps the spatial branch's conv but never normalises
        self.has_attention = block in ('dfr', 'sf_ea', 'ea')
        self.has_identity = block in ('dfr', 'sf_identity', 'ea', 'base')
        self.use_norm = use_sf and block in SPATIAL_FILTER_BLOCKS

        if self.has_identity:
            self.identity = nn.Conv2d(in_ch, out_ch, 1)
        if self.has_spatial:
            self.conv_1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        if self.has_attention:
            self.conv_2 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        if block in SPATIAL_FILTER_BLOCKS:
            self.norm = AdaptiveFeatureNorm(out_ch // 2, sf_threshold, region_stats)
            self.norm.requires_grad_(self.use_norm)
        if use_csff:
            self.csff_enc = nn.Conv2d(out_ch, out_ch, 3, padding=1)
            self.csff_dec = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.use_csff = use_csff
        if downsample:
            self.downsample = nn.Conv2d(out_ch, out_ch, 4, stride=2, padding=1, bias=False)
        self.has_downsample = downsample

    def spatial_branch(self, x: torch.Tensor) -> torch.Tensor:
        """conv_1, the spatial filter on the first half of the channels, LeakyReLU."""
        out = self.conv_1(x)
        if self.use_norm:
            half = out.shape[1] // 2
            with record_function(PROFILE_SPATIAL_FILTER):
                out = torch.cat([self.norm(out[:, :half]), out[:, half:]], dim=1)
        return F.leaky_relu(out, self.relu_slope)

    def attention_branch(self, x: torch.Tensor) -> torch.Tensor:
        """conv_2, the energy-based attention, LeakyReLU."""
        out = self.conv_2(x)
        with record_function(PROFILE_ATTENTION):
            out = energy_attention(out, self.ea_lambda)
        return F.leaky_relu(out, self.relu_slope)

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
