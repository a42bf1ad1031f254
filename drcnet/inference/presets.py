"""Network options (``network_g``) per known task, for checkpoints that do not record their own.

Our checkpoints store ``network_g``; the release's files do not, so ``drcnet-infer --task`` picks the
options its training used. Every preset is the paper network (wf 64, depth 4, paper numerics);
only the levels whose encoder blocks use the spatial filter differ.

The release's ``hin_position_left/right`` are 0-based encoder level indices, both ends included
(a block at level i uses the spatial filter when left <= i <= right, the rule of the HINet code the
release derives from; depth 4 has levels 0..3). Deraining and denoising train with 0..4, i.e. every
level. The GoPro (deblurring) training options give left=2, right=3, so the deblurring preset is
``sf_levels: [2, 3]``, the two deepest levels. Its test options say 3..4, which would be level 3
alone: we follow the training options, since the weights were trained with them. As in the release,
every level holds the filter's ``norm.*`` tensors whether it applies them or not, so the two choices
load the same checkpoint; only the restoration differs.

The release's numerics (M_sr threshold 0.8, attention delta 1e-4, region statistics pooled over the
batch) are not in the presets: ask for them with ``release_numerics=True`` to reproduce its outputs.
"""
from __future__ import annotations

import copy

__all__ = ['RELEASE_NUMERICS', 'TASKS', 'TASK_PRESETS', 'task_options']

TASK_PRESETS = {
    'paper': {'type': 'DRCNet'},
    'derain': {'type': 'DRCNet', 'wf': 64, 'depth': 4},
    'denoise': {'type': 'DRCNet', 'wf': 64, 'depth': 4},
    'deblur': {'type': 'DRCNet', 'wf': 64, 'depth': 4, 'sf_levels': [2, 3]},
}
TASKS = tuple(TASK_PRESETS)

RELEASE_NUMERICS = {'sf_threshold': 0.8, 'ea_lambda': 1e-4, 'region_stats': 'batch'}


def task_options(task: str = 'paper', release_numerics: bool = False) -> dict:
    """A fresh copy of the ``network_g`` options for ``task`` (one of TASKS)."""
    if task not in TASK_PRESETS:
        raise ValueError(f"task: {task!r} is not one of {', '.join(TASKS)}")
    opts = copy.deepcopy(TASK_PRESETS[task])
    if release_numerics:
        opts.update(RELEASE_NUMERICS)
    return opts
