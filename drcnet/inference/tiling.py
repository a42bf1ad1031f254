"""Tiled inference with smooth blending, for images larger than memory allows.

Tiles of ``tile`` x ``tile`` pixels step by ``tile - overlap``; the last tile of a row or column is
shifted back inside the image, so any size works and no padding is invented. Each tile's output is
weighted by a separable window that ramps (raised cosine) across the overlap with its neighbour and is
flat elsewhere, including along the image border; the weights never reach zero, and the result is
normalised by the summed weights. Only output-sized buffers are kept: tiles are processed one at a
time, optionally on another device than the image.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from drcnet.archs.outputs import final_image
from drcnet.inference.tta import forward_x8

Fn = Callable[[torch.Tensor], torch.Tensor]
WINDOWS = ('hann', 'linear')


def tile_starts(size: int, tile: int, overlap: int) -> list:
    """Start offsets of the tiles along one axis of length ``size``; the last one ends at ``size``."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def _ramp(length: int, window: str) -> torch.Tensor:
    """Rising weights over ``length`` samples, strictly inside (0, 1), symmetric: r[i] + r[-1-i] = 1."""
    pos = (torch.arange(length, dtype=torch.float64) + 0.5) / length
    if window == 'hann':
        return torch.sin(0.5 * math.pi * pos) ** 2
    return pos


def axis_weights(starts: list, tile_len: int, window: str) -> list:
    """One 1-D window per tile: ramps over the actual overlap with each neighbour, flat elsewhere."""
    weights = []
    for i, start in enumerate(starts):
        w = torch.ones(tile_len, dtype=torch.float64)
        if i > 0:
            left = starts[i - 1] + tile_len - start
            if left > 0:
                w[:left] = _ramp(left, window)
        if i + 1 < len(starts):
            right = start + tile_len - starts[i + 1]
            if right > 0:
                w[tile_len - right:] = torch.minimum(w[tile_len - right:], _ramp(right, window).flip(0))
        weights.append(w)
    return weights


def _check(tile: int, overlap: int, window: str) -> None:
    if not isinstance(tile, int) or tile < 1:
        raise ValueError(f'tile: expected a positive number of pixels, got {tile!r}')
    if not isinstance(overlap, int) or overlap < 0:
        raise ValueError(f'tile overlap: expected a number of pixels >= 0, got {overlap!r}')
    if tile <= overlap:
        raise ValueError(f'tile ({tile}) must be larger than the tile overlap ({overlap})')
    if window not in WINDOWS:
        raise ValueError(f"window: {window!r} is not one of {', '.join(WINDOWS)}")


def tiled_forward(fn: Fn, img: torch.Tensor, tile: int, overlap: int = 32, window: str = 'hann',
                  device: torch.device | str | None = None, progress: bool = False) -> torch.Tensor:
    """Apply ``fn`` ((B, C, h, w) -> (B, C', h, w)) tile by tile to ``img`` (B, C, H, W) and blend.

    ``device``: where ``fn`` runs; tiles are moved there and back, the buffers stay with ``img``.
    An image no larger than ``tile`` on both sides gets a single plain call. ``progress``: a tqdm bar.
    """
    _check(tile, overlap, window)
    if img.dim() != 4:
        raise ValueError(f'tiled_forward: expected a (B, C, H, W) tensor, got shape {tuple(img.shape)}')
    height, width = img.shape[-2:]
    run_device = torch.device(device) if device is not None else img.device
    if height <= tile and width <= tile:
        return fn(img.to(run_device)).to(img.device)

    tile_h, tile_w = min(tile, height), min(tile, width)
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    wy, wx = axis_weights(ys, tile_h, window), axis_weights(xs, tile_w, window)
    out = weight = None
    bar = tqdm(total=len(ys) * len(xs), desc='tiles', unit='tile', leave=False, disable=not progress)
    for y, win_y in zip(ys, wy):
        for x, win_x in zip(xs, wx):
            patch = fn(img[..., y:y + tile_h, x:x + tile_w].to(run_device))
            if patch.shape[-2:] != (tile_h, tile_w) or patch.shape[0] != img.shape[0]:
                raise ValueError(f'tiled_forward: fn returned shape {tuple(patch.shape)} for a tile of '
                                 f'{(img.shape[0], img.shape[1], tile_h, tile_w)}; it must keep B, H and W')
            if out is None:
                out = torch.zeros(img.shape[0], patch.shape[1], height, width, dtype=patch.dtype,
                                  device=img.device)
                weight = torch.zeros(1, 1, height, width, dtype=patch.dtype, device=img.device)
            win = (win_y[:, None] * win_x[None, :]).to(dtype=patch.dtype, device=img.device)
            out[..., y:y + tile_h, x:x + tile_w].add_(patch.to(img.device) * win)
            weight[..., y:y + tile_h, x:x + tile_w].add_(win)
            del patch
            bar.update(1)
    bar.close()
    return out.div_(weight)


def _as_fn(net_or_fn) -> Fn:
    """A network (or function) returning one image or a list of them becomes one returning the final image."""
    def call(x: torch.Tensor) -> torch.Tensor:
        return final_image(net_or_fn(x))
    return call


def restore(net_or_fn: nn.Module | Fn, img: torch.Tensor, tile: int | None = None, overlap: int = 32,
            tta: bool = False, window: str = 'hann', device: torch.device | str | None = None,
            progress: bool = False) -> torch.Tensor:
    """Restore ``img`` (B, 3, H, W) under ``torch.inference_mode()``: optional tiling, optional x8 TTA.

    With both, each tile gets the x8 ensemble (the blend is linear, so this equals averaging eight
    tiled passes). The result is on ``img``'s device; ``device`` is where the network runs.
    """
    fn = _as_fn(net_or_fn)
    if tta:
        plain = fn
        fn = lambda x: forward_x8(plain, x)  # noqa: E731
    if device is None and isinstance(net_or_fn, nn.Module):
        param = next(net_or_fn.parameters(), None)
        device = param.device if param is not None else None
    with torch.inference_mode():
        if tile:
            return tiled_forward(fn, img, tile, overlap, window=window, device=device, progress=progress)
        run_device = torch.device(device) if device is not None else img.device
        return fn(img.to(run_device)).to(img.device)
