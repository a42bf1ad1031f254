"""Shared fixtures: tiny networks and real photographs from scikit-image."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import drcnet  # noqa: F401  (registers every component)

# the suite is sized for 2 cores; an explicit OMP_NUM_THREADS (a CI runner's, a user's) wins
if not os.environ.get('OMP_NUM_THREADS'):
    torch.set_num_threads(2)


def photo_tensor(name: str = 'chelsea', size: tuple | None = None) -> torch.Tensor:
    """A scikit-image colour photograph as a (1, 3, H, W) float tensor in [0, 1]."""
    from skimage import data
    img = data.stereo_motorcycle()[0] if name == 'motorcycle' else getattr(data, name)()
    img = img.astype(np.float32) / 255.0
    if size is not None:
        h, w = size
        img = img[:h, :w]
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]


@pytest.fixture
def photo():
    return photo_tensor
