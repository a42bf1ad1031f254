"""Random state of a training run: the shared seed, per-rank streams, per-sample draws, capture and restore.

Every rank trains from the same seed (rank 0 draws it when ``manual_seed`` is not set and sends it to
the others), so the sampler's permutation, and therefore each rank's shard, is the same on every rank.
Each rank then offsets it for its own stream: its global generators (python, numpy, torch) start from
``seed + rank``, and each training sample's crop and noise come from a seed that is a function of
(seed, rank, epoch, position in the rank's share), whatever process (main or loader worker) draws it.
"""
from __future__ import annotations

import contextlib
import logging
import random
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist

from drcnet.engine.context import RunContext

__all__ = ['agree_on_seed', 'capture_rng_state', 'draw_seed', 'gather_rng_states', 'restore_own_rng_state',
           'restore_rng_state', 'seed_everything', 'seeded_draw']

logger = logging.getLogger('basicsr')


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def agree_on_seed(manual_seed: int | None, ctx: RunContext) -> int:
    """``manual_seed``, or one that rank 0 draws and every rank receives (the same on all ranks)."""
    if manual_seed is not None:
        return int(manual_seed)
    seed = torch.tensor([random.SystemRandom().randint(1, 10000) if ctx.is_main else 0], dtype=torch.int64)
    if ctx.distributed:
        seed = seed.to(ctx.device)
        dist.broadcast(seed, src=0)
    return int(seed.item())


def draw_seed(seed: int, rank: int, epoch: int, position: int) -> int:
    """The seed of one training sample: a hash of the run's seed, the rank, the epoch and the position."""
    entropy = [int(seed) % 2**64, int(rank), int(epoch), int(position)]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


def capture_rng_state() -> dict:
    """Python's, numpy's and torch's global random states as tensors and plain values (weights_only safe)."""
    np_state = np.random.get_state()
    return {'python': random.getstate(), 'torch': torch.get_rng_state(),
            'numpy': {'keys': torch.from_numpy(np_state[1].astype(np.int64)), 'pos': int(np_state[2]),
                      'has_gauss': int(np_state[3]), 'gauss': float(np_state[4])}}


def restore_rng_state(state: dict) -> None:
    """Put back what :func:`capture_rng_state` returned."""
    random.setstate(_as_tuple(state['python']))
    torch.set_rng_state(state['torch'])
    n = state['numpy']
    np.random.set_state(('MT19937', n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'], n['gauss']))


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


@contextlib.contextmanager
def seeded_draw(seed: int) -> Iterator[None]:
    """Run the body with the global generators seeded from ``seed``; the caller's states are put back after."""
    saved = capture_rng_state()
    seed_everything(seed)
    try:
        yield
    finally:
        restore_rng_state(saved)


def gather_rng_states(ctx: RunContext) -> dict[int, dict]:
    """Every rank's random states, keyed by rank (a collective: every rank must call it)."""
    own = capture_rng_state()
    if not ctx.distributed:
        return {0: own}
    states = [None] * ctx.world_size
    dist.all_gather_object(states, own)
    return dict(enumerate(states))


def restore_own_rng_state(saved: dict, ctx: RunContext) -> None:
    """Restore this rank's entry of the states :func:`gather_rng_states` stored.

    A state written before states were kept per rank holds one entry, rank 0's: it is restored on a
    single process; other ranks keep their fresh streams, with a warning.
    """
    if 'python' in saved:  # one process's states, not keyed by rank
        saved = {0: saved}
    if ctx.rank in saved:
        restore_rng_state(saved[ctx.rank])
        return
    logger.warning(f'resume: the training state holds the random states of rank(s) {sorted(saved)} only, not of '
                   f'rank {ctx.rank} (it was written by a run with fewer processes); this rank starts a fresh '
                   'stream, so the run will not repeat the one that was stopped')
