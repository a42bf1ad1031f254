"""What a restoration network returns, and the one place that picks the restored image out of it.

Convention: ``forward(x)`` returns either one tensor (B, 3, H, W) or a list of images ordered from the
coarsest or earliest to the final restoration, which comes **last**: DRCNet ``[stage1, stage2]``, DGUNet and
DGUNet+ ``[s1, ..., s6, final]``, a multi-scale network ``[1/4 scale, 1/2 scale, full]``. Training applies each
loss to every image of the list (against a target resized to the image's size); evaluation, ``drcnet-infer``,
tiling and TTA use :func:`final_image`.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch

Output = Union[torch.Tensor, Sequence[torch.Tensor]]

__all__ = ['Output', 'as_output_list', 'final_image']


def as_output_list(out: Output) -> list:
    """A network's output as a list of images, the final restoration last."""
    if torch.is_tensor(out):
        return [out]
    if isinstance(out, (list, tuple)) and out and all(torch.is_tensor(o) for o in out):
        return list(out)
    raise TypeError(f'a network must return a tensor or a non-empty list of tensors (final last), '
                    f'got {type(out).__name__}')


def final_image(out: Output) -> torch.Tensor:
    """The restored image of a network's output: the tensor itself, or the last of a list."""
    return as_output_list(out)[-1]
