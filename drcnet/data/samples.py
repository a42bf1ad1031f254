"""The colour photographs that ship inside scikit-image: offline demo and test data."""
from __future__ import annotations

import functools

import numpy as np

__all__ = ['SAMPLE_NAMES', 'load_sample', 'load_sample_uint8', 'sample_sizes']

# name -> (skimage.data function, index into its tuple result or None); (height, width) in comments.
_SOURCES = {
    'astronaut': ('astronaut', None),                  # 512 x 512
    'chelsea': ('chelsea', None),                      # 300 x 451
    'coffee': ('coffee', None),                        # 400 x 600
    'rocket': ('rocket', None),                        # 427 x 640
    'motorcycle_left': ('stereo_motorcycle', 0),       # 500 x 741
    'motorcycle_right': ('stereo_motorcycle', 1),      # 500 x 741
    'hubble_deep_field': ('hubble_deep_field', None),  # 872 x 1000
    'immunohistochemistry': ('immunohistochemistry', None),  # 512 x 512
    'retina': ('retina', None),                        # 1411 x 1411
}

SAMPLE_NAMES = tuple(_SOURCES)


@functools.lru_cache(maxsize=None)
def _load_uint8(name: str) -> np.ndarray:
    from skimage import data  # imported lazily: importing drcnet must not touch scikit-image's files

    func, index = _SOURCES[name]
    img = getattr(data, func)()
    if index is not None:
        img = img[index]
    img = np.ascontiguousarray(img[:, :, :3])
    img.setflags(write=False)
    return img


def _check_name(name: str) -> None:
    if name not in _SOURCES:
        import difflib
        close = difflib.get_close_matches(str(name), SAMPLE_NAMES, n=1)
        hint = f' (did you mean {close[0]!r}?)' if close else ''
        raise ValueError(f'sample {name!r} is not one of {", ".join(SAMPLE_NAMES)}{hint}')


def load_sample_uint8(name: str) -> np.ndarray:
    """A scikit-image colour photograph as a read-only uint8 HxWx3 RGB array (cached)."""
    _check_name(name)
    return _load_uint8(name)


def load_sample(name: str) -> np.ndarray:
    """A scikit-image colour photograph as float32 HxWx3 RGB in [0, 1] (a fresh array each call)."""
    return load_sample_uint8(name).astype(np.float32) / np.float32(255.0)


def sample_sizes() -> dict:
    """(height, width) of every sample photograph."""
    return {name: _load_uint8(name).shape[:2] for name in SAMPLE_NAMES}
