"""The DFR (dynamic filter restoration) encoder block of DRCNet and its Table-4 ablation rows.

Attribute names (``identity``, ``conv_1``, ``conv_2``, ``norm.sa``, ``norm.rn.bn_norm``, ``csff_enc``,
``csff_dec``, ``downsample``) keep the authors' release spelling so its checkpoints load strictly.

Every module here has three numerically equal paths (tests compare them to 1e-5):
- the reference, the definition written step by step (``set_reference_path(net, True)``);
- the autograd path, the same result in closed form with few passes over the feature maps;
- the inference path (gradients off), the closed form computed in place on the block's own
  convolution outputs, with one scratch map per norm and per attention; on the CPU the compiled kernels
  of ``cpu_kernels`` compute it (region norm with per-image statistics, attention) where they are built.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from drcnet.archs import cpu_kernels
from drcnet.archs.onednn import conv2d, conv_add_, conv_leaky_relu, eager_inference

BLOCKS = ('dfr', 'base', 'sf', 'ea', 'sf_identity', 'sf_ea')
REGION_STATS = ('sample', 'batch')
IN_EPS = 1e-5  # nn.InstanceNorm2d's default epsilon
PLANAR_CHANNELS = 16  # the in-place region norm works on planar copies of slices this narrow


def set_reference_path(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Run ``module`` (and its children) through the unoptimised reference computations, or back."""
    for child in module.modules():
        if hasattr(child, 'use_reference'):
            child.use_reference = enabled
    return module


def energy_attention_reference(x: torch.Tensor, delta: float = 1e-6) -> torch.Tensor:
    """Energy-based attention exactly as written in the paper, for comparison."""
    n = max(x.shape[-2] * x.shape[-1] - 1, 1)
    d = (x - x.mean(dim=(-2, -1), keepdim=True)).square()
    v = d.sum(dim=(-2, -1), keepdim=True) / n
    return x * torch.sigmoid(d / (4 * (v + delta)) + 0.5)


def energy_attention(x: torch.Tensor, delta: float = 1e-6) -> torch.Tensor:
    """Parameter-free energy-based attention (SimAM form) over each image and channel of (B, C, H, W)."""
    centred = x - x.mean(dim=(-2, -1), keepdim=True)
    n = max(x.shape[-2] * x.shape[-1] - 1, 1)
    v = centred.square().sum(dim=(-2, -1), keepdim=True) / n
    scaled = centred * torch.rsqrt(4 * (v + delta))
    return x * torch.sigmoid(torch.addcmul(torch.full_like(v, 0.5), scaled, scaled))


def _dense_like(x: torch.Tensor, scratch: torch.Tensor | None, index: int = 0,
                channels_last: bool | None = None) -> torch.Tensor:
    """A dense map of x's shape, the ``index``-th of x's size in ``scratch``'s memory (or new memory);
    channels-last if asked, else (None) if x or scratch is."""
    if channels_last is None:
        channels_last = (x.is_contiguous(memory_format=torch.channels_last)
                         or (scratch is not None and scratch.is_contiguous(memory_format=torch.channels_last)))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    size = x.numel()
    if scratch is None or scratch.numel() < (index + 1) * size:
        return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=layout)
    b, c, h, w = x.shape
    offset = scratch.storage_offset() + index * size
    if channels_last:
        return scratch.as_strided((b, c, h, w), (c * h * w, 1, w * c, c), offset)
    return scratch.as_strided((b, c, h, w), (c * h * w, h * w, w, 1), offset)


def _kernels_for(x: torch.Tensor):
    """The compiled CPU kernels (``torch.ops.drcnet``) if they apply to x: a float32 CPU map with pixels, and
    no autocast; else None. Callers run without autograd."""
    if (x.device.type != 'cpu' or x.dtype != torch.float32 or x.shape[-2] * x.shape[-1] == 0
            or torch.is_autocast_enabled('cpu')):
        return None
    return cpu_kernels.kernels()


def _is_dense(x: torch.Tensor) -> bool:
    return x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)


def _energy_attention_(x: torch.Tensor, delta: float, scratch: torch.Tensor | None = None) -> torch.Tensor:
    """In-place energy attention of ``x`` (no autograd), using one scratch map (``scratch`` if given)."""
    n = max(x.shape[-2] * x.shape[-1] - 1, 1)
    energy = torch.sub(x, x.mean(dim=(-2, -1), keepdim=True), out=_dense_like(x, scratch))
    energy.mul_(energy)
    # a plain sum of the squares: far faster than vector_norm over the H, W of a channels-last map;
    # scale = 1 / (4 (sum / n + delta))
    scale = energy.sum(dim=(-2, -1), keepdim=True).mul_(4 / n).add_(4 * delta).reciprocal_()
    torch.addcmul(scale.new_full((), 0.5), energy, scale, out=energy).sigmoid_()
    return x.mul_(energy)


def _instance_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Instance norm over H x W with an affine map; unlike F.instance_norm it accepts 1x1 maps."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    var = (x - mean).square().mean(dim=(-2, -1), keepdim=True)
    return (x - mean) * torch.rsqrt(var + IN_EPS) * weight[:, None, None] + bias[:, None, None]


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
        self.mask, self.mask_out = mask, 1 - mask
        # the two regions as the rows of one (B, 2, HW) matrix: both regions' sums in one product
        self.regions = torch.stack([mask.reshape(b, self.hw), self.mask_out.reshape(b, self.hw)], dim=1)
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
        # (2, HW) @ (HW, C): the product reads a channels-last map row by row, as it lies in memory
        return torch.matmul(self.regions, x.reshape(b, c, h * w).transpose(1, 2)).view(b, 2, c, 1, 1)

    def gains(self, square: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
        """g (B, 2, C, 1, 1) and the offsets k, (B, 2, C, 1, 1), or (B, C, 1, 1) for both regions with
        per-image statistics, from the map of (x - c_r)^2."""
        sq = self.region_sums(square)
        if self.pooled:
            # the other region's area times this region's e^2: its filled part, off the centre by e
            sq = sq + self.image_area.flip(1) * self.e.square()
        scale = torch.sqrt(self.area / self.positions)
        g = torch.rsqrt(sq.div(self.hw).add_(IN_EPS)) * scale * weight.view(-1, 1, 1)
        offset = bias.view(-1, 1, 1) * scale.sum(dim=1)
        if self.pooled:
            return g, offset.unsqueeze(1) - (self.e * g).flip(1)
        return g, offset


class SpatialResponse(nn.Module):
    """Spatial response map M_sr and the affine maps gamma, beta derived from it."""

    use_reference = False

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, 7, padding=3, bias=False)
        self.gamma_conv = nn.Conv2d(1, 1, 7, padding=3)
        self.beta_conv = nn.Conv2d(1, 1, 7, padding=3)

    def forward(self, x: torch.Tensor, stats: torch.Tensor | None = None):
        """(B, C, H, W) -> M_sr, gamma, beta, each (B, 1, H, W); mean before max, as the release.
        ``stats``, if given, is x's channel mean and maximum, (B, 2, H, W), computed elsewhere."""
        if stats is None:
            stats = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        if self.use_reference:
            response = torch.sigmoid(self.conv1(stats))
            return response, self.gamma_conv(response), self.beta_conv(response)
        # gamma and beta read the same map: one two-channel convolution instead of two
        weight = torch.cat([self.gamma_conv.weight, self.beta_conv.weight])
        bias = torch.cat([self.gamma_conv.bias, self.beta_conv.bias])
        ops = _kernels_for(stats) if eager_inference() else None
        if ops is not None:  # on 1 and 2 channels oneDNN pads to 16: a row-wise loop is several times faster
            response, affine = ops.spatial_response(stats, self.conv1.weight, weight, bias)
        else:
            response = torch.sigmoid(self.conv1(stats))
            affine = F.conv2d(response, weight, bias, padding=3)
        return response, affine[:, :1], affine[:, 1:]


class RegionNorm(nn.Module):
    """Region normalisation of two complementary regions with one shared instance norm."""

    use_reference = False

    def __init__(self, channels: int, region_stats: str = 'sample'):
        super().__init__()
        if region_stats not in REGION_STATS:
            raise ValueError(f"region_stats: {region_stats!r} is not one of {', '.join(REGION_STATS)}")
        self.region_stats = region_stats
        self.bn_norm = nn.InstanceNorm2d(channels, affine=True)  # release name; applied by _instance_norm

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) and a binary mask (B, 1, H, W) -> (B, C, H, W)."""
        if self.use_reference:
            return self.reference(x, mask)
        return self.modulated(x, mask)

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

    def modulated(self, x: torch.Tensor, mask: torch.Tensor, gamma: torch.Tensor | None = None,
                  beta: torch.Tensor | None = None) -> torch.Tensor:
        """Closed form of ``reference`` (then ``* (1 + gamma) + beta`` when given), autograd-friendly.

        Each pixel lies in one region, so neither filled map is built: the output is
        (x - mu_r) * g_r + k with per-channel constants of the region r the pixel belongs to.
        """
        stats = _RegionStats(x, mask, self.region_stats == 'batch')
        inside = mask > 0.5
        # where(), not c_out + mask * (c_in - c_out): a far-off other region must not cost precision
        centred = x - torch.where(inside, *stats.centre.unbind(1))
        g, k = stats.gains(centred.square(), self.bn_norm.weight, self.bn_norm.bias)
        offset = torch.where(inside, *k.unbind(1)) if stats.pooled else k
        out = torch.addcmul(offset, centred, torch.where(inside, *g.unbind(1)))
        if gamma is None:
            return out
        return torch.addcmul(beta, out, 1 + gamma)

    def modulated_(self, x: torch.Tensor, mask: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                   scratch: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
        """``modulated`` computed in place in ``x`` (no autograd; x may be a channel slice), using
        the memory of ``scratch`` (at least x's size) when given; the result goes to ``out`` if given
        (x then holds intermediate values)."""
        stats = _RegionStats(x, mask, self.region_stats == 'batch')
        mask_out = stats.mask_out
        # With a binary mask one of the two terms is an exact zero, so each pixel gets x - c_r and
        # later g_r correctly rounded (as where() would, but in place and several times faster).
        minus_in, minus_out = stats.centre.neg().unbind(1)
        centred = x.addcmul_(mask, minus_in).addcmul_(mask_out, minus_out)
        # the one scratch map: dense even when x is a channel slice, so its sums read contiguous memory
        scratch = torch.mul(centred, centred, out=_dense_like(centred, scratch))
        g, k = stats.gains(scratch, self.bn_norm.weight, self.bn_norm.bias)
        g_in, g_out = g.unbind(1)
        gain = torch.mul(mask, g_in, out=scratch).addcmul_(mask_out, g_out)
        if stats.pooled:
            k_in, k_out = k.unbind(1)
            centred.mul_(gain).addcmul_(mask, k_in).addcmul_(mask_out, k_out)
        else:
            torch.addcmul(k, centred, gain, out=centred)
        return torch.addcmul(beta, centred, 1 + gamma, out=centred if out is None else out)


class AdaptiveFeatureNorm(nn.Module):
    """The spatial filter: region-normalise degraded and clean pixels apart, then modulate."""

    use_reference = False

    def __init__(self, channels: int, threshold: float = 0.75, region_stats: str = 'sample'):
        super().__init__()
        self.threshold = threshold
        self.sa = SpatialResponse()
        self.rn = RegionNorm(channels, region_stats)

    def degraded_mask(self, x: torch.Tensor):
        """Binary mask (M_sr >= t, no gradient), gamma and beta, each (B, 1, H, W)."""
        response, gamma, beta = self.sa(x)
        # a comparison carries no gradient
        return (response >= self.threshold).to(x.dtype), gamma, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        mask, gamma, beta = self.degraded_mask(x)
        if self.use_reference:
            return self.rn.reference(x, mask) * (1 + gamma) + beta
        return self.rn.modulated(x, mask, gamma, beta)

    def forward_(self, x: torch.Tensor, scratch: torch.Tensor | None = None) -> torch.Tensor:
        """In-place ``forward`` (no autograd): overwrites ``x``; may use ``scratch``'s memory (twice x's size
        when x is a channel slice)."""
        ops = _kernels_for(x) if self.rn.region_stats == 'sample' else None
        if ops is not None:  # three passes straight over x, dense or a channel slice, in compiled loops
            response, gamma, beta = self.sa(x, ops.channel_stats(x))
            return ops.region_norm_(x, response >= self.threshold, gamma, beta,
                                    self.rn.bn_norm.weight, self.rn.bn_norm.bias)
        if _is_dense(x):
            mask, gamma, beta = self.degraded_mask(x)
            return self.rn.modulated_(x, mask, gamma, beta, scratch)
        # A channel slice of a channels-last map: the statistics and the ~10 passes over it run on a
        # dense copy (several times faster on narrow slices); the last one writes the result back.
        # Up to 16 channels the copy is planar (NCHW): the reductions over channels and the per-pixel
        # maps broadcast over channels then vectorise along W (the demo network's first levels).
        planar = x.shape[1] <= PLANAR_CHANNELS
        work = _dense_like(x, scratch, 0, channels_last=not planar)
        spare = _dense_like(x, scratch, 1, channels_last=not planar)
        work.copy_(x)
        mask, gamma, beta = self.degraded_mask(work)
        self.rn.modulated_(work, mask, gamma, beta, spare, out=x)
        return x


class DFRBlock(nn.Module):
    """Encoder block: spatial filter branch * energy-based attention branch + identity branch.

    ``block`` selects a paper Table-4 row: 'dfr' (all three), 'sf_ea' (no identity), 'sf_identity'
    (spatial filter + identity), 'sf' (spatial filter alone), 'ea' (attention + identity) and 'base'
    (a plain residual conv block).
    """

    use_reference = False

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
        attend = energy_attention_reference if self.use_reference else energy_attention
        return F.leaky_relu(attend(self.conv_2(x), self.ea_lambda), self.relu_slope)

    def _branches_(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial * attention (+ identity), in place on the block's own maps (no autograd)."""
        out = scratch = None
        ops = _kernels_for(x)
        if self.has_spatial:
            if self.use_norm:
                out = conv2d(self.conv_1, x)
                if ops is None:
                    # one scratch map serves the norm (its first half) and then the attention
                    scratch = torch.empty_like(out)
                self.norm.forward_(out[:, :out.shape[1] // 2], scratch)
                F.leaky_relu_(out, self.relu_slope)
            else:
                out = conv_leaky_relu(self.conv_1, x, self.relu_slope)
        if self.has_attention:
            attention = conv2d(self.conv_2, x)
            if ops is not None:  # attention, activation and product in one pass over the maps
                out = (ops.energy_attention_(attention, self.ea_lambda, self.relu_slope) if out is None
                       else ops.energy_attention_mul_(out, attention, self.ea_lambda, self.relu_slope))
            else:
                attention = F.leaky_relu_(_energy_attention_(attention, self.ea_lambda, scratch), self.relu_slope)
                out = attention if out is None else out.mul_(attention)
        if self.has_identity:
            conv_add_(out, self.identity, x)
        return out

    def forward(self, x: torch.Tensor, enc: torch.Tensor | None = None, dec: torch.Tensor | None = None):
        """(B, C_in, H, W) -> (down-sampled (B, C_out, H/2, W/2) or None, skip (B, C_out, H, W)).

        ``enc``/``dec`` are the stage-1 encoder and decoder features fused by CSFF in stage 2.
        """
        fuse = self.use_csff and enc is not None and dec is not None
        # eager inference: a block may overwrite the maps it computed itself
        if eager_inference() and not self.use_reference:
            out = self._branches_(x)
            if fuse:
                conv_add_(conv_add_(out, self.csff_enc, enc), self.csff_dec, dec)
        else:
            if self.has_spatial and self.has_attention:
                out = self.spatial_branch(x) * self.attention_branch(x)
            elif self.has_spatial:
                out = self.spatial_branch(x)
            else:
                out = self.attention_branch(x)
            if self.has_identity:
                out = out + self.identity(x)
            if fuse:
                out = out + self.csff_enc(enc) + self.csff_dec(dec)
        if self.has_downsample:
            return conv2d(self.downsample, out), out
        return None, out
