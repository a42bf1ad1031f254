"""Convolutions of the CPU inference path through oneDNN: fused activations and sums, packed weights.

With no autograd graph, float32 channels-last maps on the CPU and oneDNN enabled, each helper runs
one oneDNN convolution whose activation, product or sum is applied as the output is written, with
the weight kept in oneDNN's blocked layout between calls (otherwise it is reordered on every call).
In every other case it computes the same result with plain PyTorch operations.
"""
from __future__ import annotations

import functools
import weakref

import torch
from torch import nn
from torch.nn import functional as F

# conv module -> {(first, last) input channel: (stamp, packed weight)}; not an attribute of the module,
# so that deepcopy, pickling and state_dict never see oneDNN tensors
_PACKED: 'weakref.WeakKeyDictionary[nn.Module, dict]' = weakref.WeakKeyDictionary()


@functools.lru_cache(maxsize=None)
def onednn_fusion_available() -> bool:
    """oneDNN's fused convolution kernels (the ones torch.compile emits on CPU) exist in this build."""
    try:
        return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, '_convolution_pointwise_')
                and hasattr(torch.ops.mkldnn, '_reorder_convolution_weight'))
    except (AttributeError, RuntimeError):
        return False


def eager_inference() -> bool:
    """No autograd graph is recorded and torch.compile is not tracing: in-place work and oneDNN calls are
    safe (under torch.compile the plain operations are traced instead, which the compiler fuses itself)."""
    if torch.is_grad_enabled():
        return False
    is_compiling = getattr(getattr(torch, 'compiler', None), 'is_compiling', None)
    return not (is_compiling is not None and is_compiling())


def fusable(conv: nn.Conv2d, *maps: torch.Tensor) -> bool:
    """float32 channels-last CPU maps, eager inference, no autocast, a plain zero-padded convolution."""
    return (eager_inference() and onednn_fusion_available() and torch.backends.mkldnn.enabled
            and not torch.is_autocast_enabled('cpu')
            and conv.padding_mode == 'zeros' and not isinstance(conv.padding, str)
            and all(m.device.type == 'cpu' and m.dtype == torch.float32 and m.dim() == 4
                    and m.is_contiguous(memory_format=torch.channels_last) for m in maps))


def packed_weight(conv: nn.Conv2d, x: torch.Tensor, channels: slice | None = None) -> torch.Tensor:
    """conv's weight (its input channels ``channels`` only, if given) in oneDNN's layout for inputs
    shaped like ``x``; repacked when the weight changes (optimiser step, load_state_dict) or x's shape does."""
    weight = conv.weight
    span = (0, weight.shape[1]) if channels is None else (channels.start, channels.stop)
    stamp = (weight.data_ptr(), weight._version, tuple(x.shape))
    slots = _PACKED.setdefault(conv, {})
    cached = slots.get(span)
    if cached is None or cached[0] != stamp:
        part = weight if channels is None else weight[:, channels]
        packed = torch.ops.mkldnn._reorder_convolution_weight(
            part.contiguous(), list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups, list(x.shape))
        cached = slots[span] = (stamp, packed)
    return cached[1]


def _args(conv: nn.Conv2d, x: torch.Tensor, channels: slice | None, bias: bool) -> tuple:
    return (packed_weight(conv, x, channels), conv.bias if bias else None, list(conv.padding), list(conv.stride),
            list(conv.dilation), conv.groups)


def _plain(conv: nn.Conv2d, x: torch.Tensor, channels: slice | None, bias: bool) -> torch.Tensor:
    weight = conv.weight if channels is None else conv.weight[:, channels]
    return F.conv2d(x, weight, conv.bias if bias else None, conv.stride, conv.padding, conv.dilation, conv.groups)


def conv2d(conv: nn.Conv2d, x: torch.Tensor, channels: slice | None = None, bias: bool = True) -> torch.Tensor:
    """``conv(x)``; with ``channels``, the convolution of x with those input channels of the weight
    (one part of a convolution over a concatenation), with the bias only if ``bias``."""
    if fusable(conv, x):
        return torch.ops.mkldnn._convolution_pointwise(x, *_args(conv, x, channels, bias), 'none', [], '')
    return _plain(conv, x, channels, bias)


def conv_add_(out: torch.Tensor, conv: nn.Conv2d, x: torch.Tensor, channels: slice | None = None,
              bias: bool = True) -> torch.Tensor:
    """``out += conv2d(conv, x, channels, bias)`` in place (no autograd); on CPU the sum is fused into
    oneDNN's convolution, so the convolution's output map is never allocated."""
    if fusable(conv, out, x):
        return torch.ops.mkldnn._convolution_pointwise_.binary(
            out, x, *_args(conv, x, channels, bias), 'add', 1.0, None, [], None)
    return out.add_(_plain(conv, x, channels, bias))


def conv_leaky_relu(conv: nn.Conv2d, x: torch.Tensor, slope: float) -> torch.Tensor:
    """``leaky_relu(conv(x))``, fused by oneDNN on CPU when no autograd graph is recorded."""
    if fusable(conv, x):
        return torch.ops.mkldnn._convolution_pointwise(x, *_args(conv, x, None, True), 'leaky_relu', [slope], '')
    return F.leaky_relu(conv(x), slope, inplace=True)


def conv_sigmoid(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``sigmoid(conv(x))``, fused by oneDNN on CPU when no autograd graph is recorded."""
    if fusable(conv, x):
        return torch.ops.mkldnn._convolution_pointwise(x, *_args(conv, x, None, True), 'sigmoid', [], '')
    return torch.sigmoid(conv(x))


def conv_mul(conv: nn.Conv2d, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``conv(x) * other`` (same shapes), fused by oneDNN on CPU when no autograd graph is recorded."""
    if fusable(conv, x, other):
        return torch.ops.mkldnn._convolution_pointwise.binary(x, other, *_args(conv, x, None, True), 'mul',
                                                              None, None, [], None)
    return conv(x) * other
