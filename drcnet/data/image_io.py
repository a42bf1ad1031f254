"""Any image file to float RGB in [0, 1], and back: the one place that reads pixels.

Writing (``write_image``, ``encode_image``) lives in ``drcnet.engine.image_files``, below both this
package and the evaluator, and is re-exported here, so every caller keeps one import.

OpenCV decodes (it is fast and handles 16-bit PNG/TIFF); this module adds what OpenCV leaves to the
caller: RGB order, grey to three channels, alpha dropped, EXIF rotation for JPEG, and an error that
names the file when it is unreadable or truncated instead of a later ``NoneType`` error.
``read_stored_image`` also keeps what writing a result back in the file's own form needs: grey or
colour, 8 or 16 bits, and the alpha channel.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np

from drcnet.engine.image_files import (IMAGE_EXTENSIONS, PNG_SIGNATURE, ImageWriteError, to_integer_pixels,
                                       encode_image, write_image)

__all__ = ['IMAGE_EXTENSIONS', 'ImageReadError', 'ImageWriteError', 'StoredImage', 'decode_image', 'decode_raw',
           'decode_stored_image', 'encode_image', 'is_image_file', 'list_images', 'read_image',
           'read_stored_image', 'side_by_side', 'to_float', 'write_image']

PathLike = Union[str, os.PathLike]

# ANYCOLOR keeps grey as one channel and drops alpha; ANYDEPTH keeps 16 bits. Unlike IMREAD_UNCHANGED,
# this combination lets OpenCV apply the EXIF orientation of JPEG files.
_DECODE_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR


class ImageReadError(ValueError):
    """An image file (or lmdb record) that cannot be decoded; the message names it."""


def is_image_file(path: PathLike) -> bool:
    """True when the file name ends with one of IMAGE_EXTENSIONS (any case)."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder: PathLike, recursive: bool = False) -> list:
    """Sorted paths of the (non-hidden) images in ``folder`` (sub-folders too when ``recursive``).

    A missing folder, or a path that is not a folder, is a FileNotFoundError naming it; an empty
    folder gives an empty list (the caller decides whether that is an error).
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f'image folder does not exist: {folder}')
    if not folder.is_dir():
        raise FileNotFoundError(f'expected a folder of images, got a file: {folder}')
    pattern = folder.rglob('*') if recursive else folder.iterdir()
    # hidden files are skipped: partial writes (.name.tmp) and macOS resource forks (._name.png)
    return sorted(p for p in pattern if p.is_file() and is_image_file(p.name) and not p.name.startswith('.'))


def _looks_truncated(buf: bytes) -> str | None:
    """Why ``buf`` looks cut short, for formats whose end is marked; None when it looks whole.

    Some OpenCV builds decode a truncated JPEG with a grey bottom and only a warning on stderr, so the
    end markers are checked here: JPEG must have an EOI marker after its last start-of-scan, PNG must
    end with an IEND chunk.
    """
    if buf[:3] == b'\xff\xd8\xff':
        sos = buf.rfind(b'\xff\xda')
        eoi = buf.rfind(b'\xff\xd9')
        if sos < 0 or eoi < sos:
            return 'JPEG data ends before its end-of-image marker'
    elif buf[:8] == b'\x89PNG\r\n\x1a\n':
        if b'IEND' not in buf[-16:]:
            return 'PNG data ends before its IEND chunk'
    return None


def to_float(img: np.ndarray, name: str = 'image') -> np.ndarray:
    """A decoded uint8/uint16/float array (HxW, HxWx1, HxWx3 or HxWx4, RGB order) as float32 HxWx3 in [0, 1]."""
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise ImageReadError(f'{name}: unsupported image shape {img.shape}')
    if img.shape[2] == 4:
        img = img[:, :, :3]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    if img.dtype == np.uint8:
        out = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        out = img.astype(np.float32) / 65535.0
    elif np.issubdtype(img.dtype, np.floating):
        out = np.clip(img.astype(np.float32), 0.0, 1.0)
    else:
        raise ImageReadError(f'{name}: unsupported pixel type {img.dtype}')
    return np.ascontiguousarray(out)


def decode_raw(buf: bytes, name: str = '<bytes>') -> np.ndarray:
    """Encoded bytes to the array OpenCV decodes (BGR or grey, uint8/uint16, EXIF applied, alpha dropped).

    Checks what ``decode_image`` checks; ``scripts/create_lmdb.py`` stores these pixels losslessly, so a
    folder and its lmdb decode to identical images.
    """
    if buf is None or len(buf) == 0:
        raise ImageReadError(f'cannot read image {name}: no data (empty file or missing lmdb key)')
    if not isinstance(buf, bytes):
        buf = bytes(buf)
    reason = _looks_truncated(buf)
    if reason:
        raise ImageReadError(f'cannot read image {name}: file is truncated ({reason})')
    img = cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), _DECODE_FLAGS)
    if img is None:
        raise ImageReadError(f'cannot read image {name}: not a readable image file '
                             f'(corrupt, truncated, or an unsupported format)')
    return img


def decode_image(buf: bytes, name: str = '<bytes>') -> np.ndarray:
    """Encoded image bytes (a file's content or an lmdb record) to float32 HxWx3 RGB in [0, 1].

    ``name`` (the file path or lmdb key) is used in the ImageReadError raised for bad data.
    """
    img = decode_raw(buf, name)
    if img.ndim == 3 and img.shape[2] >= 3:
        img = img[:, :, 2::-1] if img.shape[2] == 3 else img[:, :, [2, 1, 0]]
    return to_float(img, name)


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise ImageReadError(f'cannot read image {path}: no such file')
    try:
        return path.read_bytes()
    except OSError as err:
        raise ImageReadError(f'cannot read image {path}: {err.strerror or err}') from err


def read_image(path: PathLike) -> np.ndarray:
    """Read an image file as float32 HxWx3 RGB in [0, 1]; ImageReadError (a ValueError) names a bad file."""
    return decode_image(_read_bytes(Path(path)), str(path))


_PNG_GREY_TYPES = (0, 4)  # IHDR colour types: grey, grey with alpha


@dataclass(frozen=True)
class StoredImage:
    """An image file decoded for a network, with what writing a result back in the file's form needs."""
    rgb: np.ndarray                 # float32 HxWx3 in [0, 1], as ``read_image`` gives
    grey: bool                      # the file has one colour channel
    bits: int                       # 8 or 16 bits per channel
    alpha: Optional[np.ndarray]     # HxW alpha channel exactly as stored (uint8/uint16), or None

    def like_stored(self, rgb: np.ndarray, bits: int | None = None, keep_alpha: bool = True) -> np.ndarray:
        """``rgb`` (float HxWx3 in [0, 1], e.g. restored) as integer pixels in this file's form.

        Grey files get the mean of the three channels (the inverse of repeating one channel); the alpha
        channel is appended unchanged (rescaled only when ``bits`` differs from the file's).
        """
        bits = bits or self.bits
        pixels = to_integer_pixels(rgb.mean(axis=2) if self.grey else rgb, bits, 'image')
        if self.alpha is None or not keep_alpha:
            return pixels
        alpha = self.alpha
        if alpha.dtype == np.uint16 and bits == 8:
            alpha = np.round(alpha / 257.0).astype(np.uint8)
        elif alpha.dtype == np.uint8 and bits == 16:
            alpha = alpha.astype(np.uint16) * 257
        channels = pixels[:, :, None] if pixels.ndim == 2 else pixels
        return np.concatenate([channels, alpha[:, :, None]], axis=2)


def _dihedral(img: np.ndarray, k: int) -> np.ndarray:
    """One of the eight flips and rotations (k in 0..7) of an HxW or HxWxC array."""
    return np.rot90(img[:, ::-1] if k >= 4 else img, k % 4)


def _stored_alpha(buf: bytes, colour: np.ndarray, name: str) -> Optional[np.ndarray]:
    """The alpha channel of ``buf``, oriented as ``colour`` (the decoded colour channels, BGR or grey).

    OpenCV applies an EXIF orientation only when it drops alpha, so the alpha channel read without it is
    turned the way that maps the unrotated colour channels onto ``colour``.
    """
    if buf[:3] == b'\xff\xd8\xff':  # JPEG has no alpha channel
        return None
    raw = cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 3 or raw.shape[2] != 4:
        return None
    plain = raw[:, :, :3] if colour.ndim == 3 else raw[:, :, 0]
    for k in range(8):
        turned = _dihedral(plain, k)
        if turned.shape == colour.shape and np.array_equal(turned, colour):
            return np.ascontiguousarray(_dihedral(raw[:, :, 3], k))
    raise ImageReadError(f'cannot read image {name}: its alpha channel does not line up with its colours')


def decode_stored_image(buf: bytes, name: str = '<bytes>') -> StoredImage:
    """Like ``decode_image``, keeping whether the file is grey, its bit depth and its alpha channel."""
    colour = decode_raw(buf, name)
    grey = colour.ndim == 2 or colour.shape[2] == 1
    if buf[:8] == PNG_SIGNATURE and len(buf) > 25 and buf[25] in _PNG_GREY_TYPES and colour.ndim == 3:
        colour, grey = colour[:, :, 0], True  # OpenCV decodes grey with alpha as three equal channels
    if colour.ndim == 3 and colour.shape[2] == 1:
        colour = colour[:, :, 0]
    alpha = _stored_alpha(buf, colour, name)
    bgr_to_rgb = colour if colour.ndim == 2 else colour[:, :, 2::-1]
    bits = 8 if colour.dtype == np.uint8 else 16
    return StoredImage(rgb=to_float(bgr_to_rgb, name), grey=grey, bits=bits, alpha=alpha)


def read_stored_image(path: PathLike) -> StoredImage:
    """Read an image file as ``StoredImage``: float RGB for a network, plus its grey/bits/alpha form."""
    return decode_stored_image(_read_bytes(Path(path)), str(path))


def side_by_side(*images: np.ndarray, gap: int = 8) -> np.ndarray:
    """Images (H, W, C) of one height, left to right with ``gap`` white columns between them.

    White is 1.0 for float images and the type's maximum (255 for uint8) for integer ones.
    """
    if not images:
        raise ValueError('side_by_side: no images given')
    if len({img.shape[0] for img in images}) != 1:
        raise ValueError(f'side_by_side: images must share one height, got shapes {[img.shape for img in images]}')
    dtype = np.result_type(*images)
    white = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
    spacer = np.full((images[0].shape[0], gap) + images[0].shape[2:], white, dtype)
    parts = []
    for img in images:
        parts += [img, spacer]
    return np.concatenate(parts[:-1], axis=1)
