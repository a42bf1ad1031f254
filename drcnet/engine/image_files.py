"""Encode and write images (8- or 16-bit), atomically: what the evaluator and the data tools both write with.

It sits in ``engine/`` because the evaluator (engine) saves restored images and must not import from
``data/``; ``drcnet.data.image_io`` re-exports these names beside the readers.
"""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Union

import cv2
import numpy as np

__all__ = ['IMAGE_EXTENSIONS', 'PNG_SIGNATURE', 'ImageWriteError', 'encode_image', 'to_integer_pixels', 'write_image']

PathLike = Union[str, os.PathLike]

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp')


class ImageWriteError(OSError):
    """An image that cannot be encoded or written; the message names the path."""


PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _grey_alpha_png(pixels: np.ndarray) -> bytes:
    """A grey-with-alpha PNG (colour type 4), which OpenCV does not write; 8 or 16 bits, no filtering."""
    height, width, _ = pixels.shape
    depth = 16 if pixels.dtype == np.uint16 else 8
    rows = np.ascontiguousarray(pixels.astype('>u2' if depth == 16 else np.uint8)).view(np.uint8)
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rows.reshape(height, -1)], axis=1)

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack('>I', len(body)) + tag + body + struct.pack('>I', zlib.crc32(tag + body))

    header = struct.pack('>IIBBBBB', width, height, depth, 4, 0, 0, 0)
    return (PNG_SIGNATURE + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(rows.tobytes(), 6))
            + chunk(b'IEND', b''))


def to_integer_pixels(img: np.ndarray, bits: int, name: str) -> np.ndarray:
    if bits not in (8, 16):
        raise ValueError(f'{name}: bits must be 8 or 16, got {bits!r}')
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (2, 3, 4))):
        raise ValueError(f'{name}: expected an HxW, HxWx2 (grey, alpha), HxWx3 or HxWx4 image, got shape {img.shape}')
    if img.dtype == np.uint8 and bits == 8 or img.dtype == np.uint16 and bits == 16:
        return img
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f'{name}: pass a float image in [0, 1] (or uint{bits}), got {img.dtype}')
    peak = 255.0 if bits == 8 else 65535.0
    dtype = np.uint8 if bits == 8 else np.uint16
    return np.round(np.clip(img, 0.0, 1.0) * peak).astype(dtype)


def encode_image(img: np.ndarray, ext: str = '.png', bits: int = 8, name: str = 'image',
                 params: list | None = None) -> bytes:
    """Encode a float RGB image in [0, 1] (or uint8/uint16 grey, grey+alpha, RGB, RGBA) to bytes of format ``ext``.

    Grey with alpha is written as such to PNG, and as RGBA with three equal channels to other formats.
    """
    pixels = to_integer_pixels(img, bits, name)
    if pixels.ndim == 3 and pixels.shape[2] == 2:
        if ext.lower() == '.png':
            return _grey_alpha_png(pixels)
        pixels = pixels[:, :, [0, 0, 0, 1]]
    if pixels.ndim == 3:
        pixels = pixels[:, :, 2::-1] if pixels.shape[2] == 3 else pixels[:, :, [2, 1, 0, 3]]
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(pixels), params or [])
    if not ok:
        raise ImageWriteError(f'cannot encode {name} as {ext} ({bits}-bit)')
    return buf.tobytes()


def write_image(path: PathLike, img: np.ndarray, bits: int = 8, params: list | None = None) -> Path:
    """Write a float RGB image in [0, 1] (rounded to 8 bits, or 16 with ``bits=16``), or integer pixels of that
    many bits (see ``encode_image``); creates parent folders.

    The file is written to a temporary name and renamed, so an interrupted write never leaves half a file.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ImageWriteError(f'cannot write image {path}: unknown extension {path.suffix!r}; '
                              f'use one of {", ".join(IMAGE_EXTENSIONS)}')
    if bits == 16 and ext not in ('.png', '.tif', '.tiff'):
        raise ImageWriteError(f'cannot write image {path}: 16-bit output needs .png or .tif, not {ext}')
    data = encode_image(img, ext, bits=bits, name=str(path), params=params)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as err:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise ImageWriteError(f'cannot write image {path}: {err.strerror or err}') from err
    return path
