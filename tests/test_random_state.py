"""drcnet.engine.random_state: seeds, per-sample draws, capture/restore, per-rank states."""
import logging
import random

import numpy as np
import torch

from drcnet.engine.context import RunContext
from drcnet.engine.random_state import (agree_on_seed, capture_rng_state, draw_seed, gather_rng_states,
                                        restore_own_rng_state, restore_rng_state, seed_everything, seeded_draw)

CPU = torch.device('cpu')


def draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_capture_and_restore_repeat_all_three_generators():
    seed_everything(7)
    state = capture_rng_state()
    first = draws()
    restore_rng_state(state)
    assert draws() == first


def test_a_seeded_draw_is_a_function_of_its_seed_and_leaves_the_callers_stream_alone():
    seed_everything(1)
    expected = [draws(), draws()]
    seed_everything(1)
    with seeded_draw(123):
        inside = draws()
    with seeded_draw(123):
        assert draws() == inside
    with seeded_draw(124):
        assert draws() != inside
    assert [draws(), draws()] == expected


def test_a_sample_seed_depends_on_run_seed_rank_epoch_and_position():
    base = draw_seed(5, 0, 0, 0)
    assert draw_seed(5, 0, 0, 0) == base
    others = {draw_seed(6, 0, 0, 0), draw_seed(5, 1, 0, 0), draw_seed(5, 0, 1, 0), draw_seed(5, 0, 0, 1)}
    assert base not in others and len(others) == 4


def test_a_given_seed_is_kept_and_a_missing_one_is_drawn():
    ctx = RunContext(device=CPU)
    assert agree_on_seed(42, ctx) == 42
    assert 1 <= agree_on_seed(None, ctx) <= 10000


def test_states_are_kept_per_rank_and_each_rank_restores_its_own(caplog):
    seed_everything(3)
    states = gather_rng_states(RunContext(device=CPU))
    assert list(states) == [0]
    expected = draws()
    seed_everything(4)
    rank1 = capture_rng_state()
    seed_everything(99)
    restore_own_rng_state({0: states[0], 1: rank1}, RunContext(device=CPU, rank=0, world_size=2))
    assert draws() == expected
    seed_everything(4)
    rank1_draws = draws()
    restore_own_rng_state({0: states[0], 1: rank1}, RunContext(device=CPU, rank=1, world_size=2))
    assert draws() == rank1_draws
    # a state written before states were kept per rank: rank 0's, for one process
    restore_own_rng_state(states[0], RunContext(device=CPU))
    assert draws() == expected
    with caplog.at_level(logging.WARNING, logger='basicsr'):
        restore_own_rng_state(states[0], RunContext(device=CPU, rank=2, world_size=3))
    assert 'rank 2' in caplog.text
