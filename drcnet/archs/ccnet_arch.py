"""CCNet (Hao et al., arXiv 2412.11008): a three-scale U-Net of star-product residual blocks (ERSM) with
strip attention whose kernels are predicted per image (LDIM), image inputs and outputs at every scale.

Module names follow the authors' code (``Encoder``, ``feat_extract``, ``SCM1``, ``cubic_11``, ``pixel_norm``...),
so their checkpoints (``{'model': state_dict}``) load with ``strict=True``.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from drcnet.archs.precision import float32_statistics
from drcnet.registry import ARCH_REGISTRY

__all__ = ['CCNET_CONFIGS', 'CCNet', 'MIN_SIDE', 'ERSM', 'LDIM']

# The authors' configuration per task: ``build_net(base_channel)`` with the class's num_res default.
CCNET_CONFIGS = {
    'deblur': {'base_channel': 36, 'num_res': 16},  # GoPro motion deblurring
    'desnow': {'base_channel': 36, 'num_res': 6},   # CSD
    'dehaze': {'base_channel': 40, 'num_res': 4},   # ITS and OTS
}
# LDIM strip kernels of a filter block: (kernel size, dilation of its second strip layer), the first
# channel half gets the first entry.
STRIP_KERNELS = ((11, 6), (7, 4))
# Reflection padding needs fewer pad pixels than the map is long. The widest strip (k=11, dilation 6)
# pads 6 * (11 - 1) / 2 = 30 pixels, and it also runs at 1/4 scale, so the quarter map needs >= 31
# pixels per side: the padded input needs >= 124 (upstream fails at 120, works at 124).
MIN_SIDE = 4 * (max(d * (k - 1) // 2 for k, d in STRIP_KERNELS) + 1)


class BasicConv(nn.Module):
    """Conv (padding k//2, bias) or 4x4 stride-2 transposed conv, then GELU if ``relu`` (the authors' name)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, relu: bool = True,
                 transpose: bool = False):
        super().__init__()
        if transpose:
            conv = nn.ConvTranspose2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2 - 1)
        else:
            conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2)
        self.main = nn.Sequential(conv, nn.GELU()) if relu else nn.Sequential(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H', W')."""
        return self.main(x)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each pixel (eps 1e-5, affine), statistics in float32 under autocast."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return _channel_layer_norm(x, self.weight, self.bias, self.eps)


@float32_statistics
def _channel_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    var = (x - mean).square().mean(dim=1, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps) * weight[:, None, None] + bias[:, None, None]


class InstanceNorm2dFloat32(nn.InstanceNorm2d):
    """Affine InstanceNorm2d whose statistics are computed in float32 under autocast."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return float32_statistics(F.instance_norm)(x, weight=self.weight, bias=self.bias, eps=self.eps)


class StarConv(nn.Module):
    """ERSM's star product: ``GELU(dw9x9(pw1(u))) * pw2(u)`` with ``u`` the channel-normalised input."""

    def __init__(self, channels: int, kernel_size: int = 9):
        super().__init__()
        self.pixel_norm = ChannelLayerNorm(channels)
        self.pw1 = nn.Conv2d(channels, channels, 1, bias=False)
        self.dw1 = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.pw2 = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        u = self.pixel_norm(x)
        return F.gelu(self.dw1(self.pw1(u))) * self.pw2(u)


class StarConvGELU(nn.Module):
    """ERSM's first layer: the star product, then GELU."""

    def __init__(self, channels: int):
        super().__init__()
        self.main = nn.Sequential(StarConv(channels), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return self.main(x)


class StripLayer(nn.Module):
    """One strip of LDIM: k taps per image (sigmoid of a 1x1 conv of the pooled input), shared by all
    channels, applied as a dilated 1 x k (``along='w'``) or k x 1 (``along='h'``) conv after reflection padding."""

    def __init__(self, channels: int, kernel_size: int, dilation: int = 1, along: str = 'w'):
        super().__init__()
        if along not in ('h', 'w'):
            raise ValueError(f"along: {along!r} is not one of h, w")
        self.kernel_size, self.dilation, self.along = kernel_size, dilation, along
        self.conv = nn.Conv2d(channels, kernel_size, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W); needs H (or W) > dilation * (k - 1) / 2."""
        b, c, h, w = x.shape
        k, pad = self.kernel_size, self.dilation * (self.kernel_size - 1) // 2
        pooled = float32_statistics(torch.mean)(x, dim=(2, 3), keepdim=True)  # a mean over H x W
        taps = torch.sigmoid(self.conv(pooled))  # (B, k, 1, 1)
        taps = taps.reshape(b, 1, k).expand(b, c, k).reshape(b * c, 1, k)
        if self.along == 'w':
            x = F.pad(x, (pad, pad, 0, 0), mode='reflect')
            weight, dilation = taps[:, :, None, :], (1, self.dilation)
        else:
            x = F.pad(x, (0, 0, pad, pad), mode='reflect')
            weight, dilation = taps[:, :, :, None], (self.dilation, 1)
        # each (image, channel) pair is one group, so every image is filtered with its own taps
        out = F.conv2d(x.reshape(1, b * c, *x.shape[-2:]), weight.to(x.dtype), dilation=dilation, groups=b * c)
        return out.reshape(b, c, h, w)


class _Branch(nn.ModuleList):
    """``H_spatial_att.{0,1}.conv`` as the checkpoints name the strip layers of one branch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        for layer in self:
            x = layer(x)
        return x


class LDIM(nn.Module):
    """LDIM (the authors' ``cubic_attention``): per-image strip filters along W
    (the "H" branch), then along H (the "W" branch), blended as ``gamma * out + beta * x``."""

    def __init__(self, channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(channels, 1, 1))
        self.beta = nn.Parameter(torch.ones(channels, 1, 1))
        self.H_spatial_att = _Branch(StripLayer(channels, kernel_size, d, 'w') for d in (1, dilation))
        self.W_spatial_att = _Branch(StripLayer(channels, kernel_size, d, 'h') for d in (1, dilation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        out = self.W_spatial_att(self.H_spatial_att(x))
        return self.gamma * out + self.beta * x


class ERSM(nn.Module):
    """ERSM (the authors' ``ResBlock``): star conv + GELU, optionally LDIM with
    kernel 11 on the first channel half and kernel 7 on the second, then a 3x3 conv, plus the input."""

    def __init__(self, channels: int, use_filter: bool = False):
        super().__init__()
        if use_filter and channels % 2:
            raise ValueError(f'ERSM with LDIM needs an even number of channels, got {channels}')
        self.conv1 = StarConvGELU(channels)
        self.conv2 = BasicConv(channels, channels, 3, relu=False)
        self.use_filter = use_filter
        if use_filter:
            (k1, d1), (k2, d2) = STRIP_KERNELS
            self.add_module(f'cubic_{k1}', LDIM(channels // 2, k1, d1))
            self.add_module(f'cubic_{k2}', LDIM(channels // 2, k2, d2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        out = self.conv1(x)
        if self.use_filter:
            first, second = out.chunk(2, dim=1)
            (k1, _), (k2, _) = STRIP_KERNELS
            out = torch.cat([getattr(self, f'cubic_{k1}')(first), getattr(self, f'cubic_{k2}')(second)], dim=1)
        return self.conv2(out) + x


class ERSMStack(nn.Module):
    """EBlock/DBlock: ``num_res - 1`` plain ERSMs and one with LDIM."""

    def __init__(self, channels: int, num_res: int):
        super().__init__()
        self.layers = nn.Sequential(*(ERSM(channels, use_filter=i == num_res - 1) for i in range(num_res)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return self.layers(x)


class SCM(nn.Module):
    """Shallow convolution module: features of the down-sampled input image for the encoder."""

    def __init__(self, out_ch: int, in_chans: int = 3):
        super().__init__()
        self.main = nn.Sequential(
            BasicConv(in_chans, out_ch // 4, 3), BasicConv(out_ch // 4, out_ch // 2, 1),
            BasicConv(out_ch // 2, out_ch // 2, 3), BasicConv(out_ch // 2, out_ch, 1, relu=False),
            InstanceNorm2dFloat32(out_ch, affine=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, H, W)."""
        return self.main(x)


class FAM(nn.Module):
    """Feature attention module: a 3x3 conv of the concatenated encoder and SCM features."""

    def __init__(self, channels: int):
        super().__init__()
        self.merge = BasicConv(channels * 2, channels, 3, relu=False)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """x1, x2 (B, C, H, W) -> (B, C, H, W)."""
        return self.merge(torch.cat([x1, x2], dim=1))


def _reflect_pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad bottom/right to (height, width) by mirroring, repeatedly when the image is shorter than the pad;
    replicate where a side is a single pixel (nothing to mirror)."""
    while x.shape[-2] < height or x.shape[-1] < width:
        h, w = x.shape[-2:]
        pad_h, pad_w = min(height - h, h - 1), min(width - w, w - 1)
        if (height > h and pad_h == 0) or (width > w and pad_w == 0):
            return F.pad(x, (0, width - w, 0, height - h), mode='replicate')
        x = F.pad(x, (0, pad_w, 0, pad_h), mode='reflect')
    return x


@ARCH_REGISTRY.register()
class CCNet(nn.Module):
    """CCNet: MIMO-UNet-style encoder-decoder of ERSM blocks with LDIM strip attention, three scales.

    Args:
        base_channel: width C of the full-resolution level; the others have 2C and 4C.
        num_res: ERSM blocks per encoder and decoder level (the last of each with LDIM).

    The authors' configurations (``CCNET_CONFIGS``): deblur (GoPro) C=36, num_res=16 (the defaults);
    desnow (CSD) C=36, num_res=6; dehaze (ITS/OTS) C=40, num_res=4.
    """

    def __init__(self, base_channel: int = 36, num_res: int = 16):
        super().__init__()
        if base_channel < 4 or base_channel % 4:
            raise ValueError(f'base_channel: expected a multiple of 4 (the SCMs use C/4 channels), got {base_channel}')
        if num_res < 1:
            raise ValueError(f'num_res: expected >= 1, got {num_res}')
        c = base_channel
        self.Encoder = nn.ModuleList([ERSMStack(c, num_res), ERSMStack(c * 2, num_res), ERSMStack(c * 4, num_res)])
        self.feat_extract = nn.ModuleList([
            BasicConv(3, c, 3), BasicConv(c, c * 2, 3, stride=2), BasicConv(c * 2, c * 4, 3, stride=2),
            BasicConv(c * 4, c * 2, 4, stride=2, transpose=True), BasicConv(c * 2, c, 4, stride=2, transpose=True),
            BasicConv(c, 3, 3, relu=False)])
        self.Decoder = nn.ModuleList([ERSMStack(c * 4, num_res), ERSMStack(c * 2, num_res), ERSMStack(c, num_res)])
        self.Convs = nn.ModuleList([BasicConv(c * 4, c * 2, 1), BasicConv(c * 2, c, 1)])
        self.ConvsOut = nn.ModuleList([BasicConv(c * 4, 3, 3, relu=False), BasicConv(c * 2, 3, 3, relu=False)])
        self.FAM1 = FAM(c * 4)
        self.SCM1 = SCM(c * 4)
        self.FAM2 = FAM(c * 2)
        self.SCM2 = SCM(c * 2)

    def forward(self, x: torch.Tensor) -> list:
        """(B, 3, H, W) -> [(B, 3, ceil(H/4), ceil(W/4)), (B, 3, ceil(H/2), ceil(W/2)), (B, 3, H, W)]; any H, W.

        The last image is the restoration; the smaller ones are supervised against down-sampled targets.
        """
        h, w = x.shape[-2:]
        image = _reflect_pad_to(x, max(MIN_SIDE, math.ceil(h / 4) * 4), max(MIN_SIDE, math.ceil(w / 4) * 4))
        x2 = F.interpolate(image, scale_factor=0.5)  # nearest, as the authors' code
        x4 = F.interpolate(x2, scale_factor=0.5)

        res1 = self.Encoder[0](self.feat_extract[0](image))
        z = self.FAM2(self.feat_extract[1](res1), self.SCM2(x2))
        res2 = self.Encoder[1](z)
        z = self.FAM1(self.feat_extract[2](res2), self.SCM1(x4))
        z = self.Decoder[0](self.Encoder[2](z))
        out4 = self.ConvsOut[0](z) + x4

        z = self.Convs[0](torch.cat([self.feat_extract[3](z), res2], dim=1))
        z = self.Decoder[1](z)
        out2 = self.ConvsOut[1](z) + x2

        z = self.Convs[1](torch.cat([self.feat_extract[4](z), res1], dim=1))
        z = self.Decoder[2](z)
        out1 = self.feat_extract[5](z) + image
        return [out4[..., :math.ceil(h / 4), :math.ceil(w / 4)].contiguous(),
                out2[..., :math.ceil(h / 2), :math.ceil(w / 2)].contiguous(),
                out1[..., :h, :w].contiguous()]
