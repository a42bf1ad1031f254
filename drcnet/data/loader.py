"""Data sets to batches: loader options, seeded (distributed) sampling, per-sample draws, prefetchers."""
from __future__ import annotations

import functools
import logging
import random
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from drcnet import _compat  # noqa: F401  (before basicsr)
from basicsr.data.data_sampler import EnlargedSampler as _BasicsrEnlargedSampler
from drcnet.engine.device import pin_memory_for
from drcnet.engine.random_state import draw_seed, seeded_draw
from drcnet.registry import DATASET_REGISTRY, build

__all__ = ['CPUPrefetcher', 'CUDAPrefetcher', 'EnlargedSampler', 'LOADER_KEYS', 'PREFETCH_MODES', 'SeededDraws',
           'SeededSamples', 'build_dataloader', 'build_dataset', 'build_loader', 'create_prefetcher', 'seed_worker',
           'set_epoch', 'split_dataset_options']

logger = logging.getLogger('basicsr')

# Keys of a ``datasets.<phase>`` block that configure the loader (or the evaluator), not the data set.
LOADER_KEYS = frozenset({'name', 'batch_size_per_gpu', 'num_worker_per_gpu', 'use_shuffle', 'dataset_enlarge_ratio',
                         'prefetch_mode', 'pin_memory', 'persistent_workers', 'test_y_channel', 'protocol'})
PREFETCH_MODES = (None, 'cpu', 'cuda')


def split_dataset_options(cfg: Mapping[str, Any]) -> tuple:
    """Split a ``datasets.<phase>`` block into (data set options incl. ``type``, loader options); copies."""
    dataset_kwargs = {k: v for k, v in cfg.items() if k not in LOADER_KEYS}
    loader_kwargs = {k: v for k, v in cfg.items() if k in LOADER_KEYS}
    return dataset_kwargs, loader_kwargs


class EnlargedSampler(_BasicsrEnlargedSampler):
    """basicsr's sampler (the index repeated ``ratio`` times, split over ``num_replicas`` ranks), seeded.

    The permutation depends on ``seed`` and the epoch (``set_epoch``), so every rank draws the same
    permutation and takes its own share; ``shuffle=False`` keeps index order.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, ratio: int = 1, seed: int = 0,
                 shuffle: bool = True):
        if not 0 <= rank < num_replicas:
            raise ValueError(f'rank {rank} is outside a world of size {num_replicas}')
        if len(dataset) == 0:
            raise ValueError('the data set is empty: nothing to sample')
        super().__init__(dataset, num_replicas, rank, ratio)
        self.seed, self.shuffle = int(seed), bool(shuffle)

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.total_size, generator=g).tolist()
        else:
            order = list(range(self.total_size))
        size = len(self.dataset)
        return iter([i % size for i in order[self.rank:self.total_size:self.num_replicas]])


class SeededDraws(Sampler):
    """The indices of ``sampler``, each paired with the seed of its draw (see ``engine.random_state``).

    A sample's crop and noise then depend on (seed, rank, epoch, position) only: not on which process
    draws it, how many workers there are, whether they persist across epochs, or where a run resumed.
    """

    def __init__(self, sampler: Sampler, seed: int = 0, rank: int = 0):
        self.sampler, self.seed, self.rank, self.epoch = sampler, int(seed), int(rank), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.sampler, 'set_epoch'):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for position, index in enumerate(self.sampler):
            yield index, draw_seed(self.seed, self.rank, self.epoch, position)


class SeededSamples(Dataset):
    """``dataset[index]`` drawn with the global generators seeded from the key's seed (keys from SeededDraws)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple):
        index, seed = key
        with seeded_draw(seed):
            return self.dataset[index]


def seed_worker(worker_id: int, rank: int = 0) -> None:
    """Seed python, numpy and torch in a worker from torch's per-worker seed (fresh every epoch)."""
    seed = (torch.initial_seed() + 1_000_003 * rank) % 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_dataloader(dataset: Dataset, phase: str, batch_size_per_gpu: int = 1, num_worker_per_gpu: int = 0,
                     use_shuffle: bool = True, dataset_enlarge_ratio: int = 1, rank: int = 0, world_size: int = 1,
                     seed: int = 0, device: torch.device | str | None = None, persistent_workers: bool = True,
                     pin_memory: bool | None = None, prefetch_mode: str | None = None, name: str | None = None,
                     test_y_channel: bool | None = None, protocol: str | None = None) -> DataLoader:
    """A DataLoader for ``phase`` ('train' or a validation/test phase).

    Training: an EnlargedSampler (seeded shuffle over the index repeated ``dataset_enlarge_ratio`` times,
    split over ``world_size`` ranks), ``batch_size_per_gpu`` per rank, last partial batch dropped.
    Validation/test: batch 1 in order. Workers are seeded per rank and epoch, persistent when there are
    any; memory is pinned when ``device`` is CUDA (``pin_memory`` overrides). ``prefetch_mode`` is
    checked here and used by ``create_prefetcher``; ``name`` only labels the log line and
    ``test_y_channel`` and ``protocol`` belong to the evaluator: all are accepted so a whole options block
    can be passed.
    """
    if prefetch_mode not in PREFETCH_MODES:
        raise ValueError(f'prefetch_mode: {prefetch_mode!r} is not one of None, cpu, cuda')
    for key, value, low in (('batch_size_per_gpu', batch_size_per_gpu, 1),
                            ('num_worker_per_gpu', num_worker_per_gpu, 0),
                            ('dataset_enlarge_ratio', dataset_enlarge_ratio, 1), ('world_size', world_size, 1)):
        if int(value) != value or value < low:
            raise ValueError(f'{key}: expected an integer >= {low}, got {value!r}')
    if len(dataset) == 0:
        raise ValueError(f'{name or phase}: the data set is empty')
    device = torch.device(device) if device is not None else torch.device('cpu')
    if prefetch_mode == 'cuda' and device.type != 'cuda':
        raise ValueError(f"prefetch_mode: 'cuda' needs a CUDA device, but this run uses {device}")
    workers = int(num_worker_per_gpu)
    common = dict(num_workers=workers, pin_memory=pin_memory_for(device) if pin_memory is None else bool(pin_memory),
                  persistent_workers=bool(persistent_workers) and workers > 0,
                  worker_init_fn=functools.partial(seed_worker, rank=rank) if workers > 0 else None,
                  generator=torch.Generator().manual_seed(int(seed) + 1_000_003 * int(rank)))
    if phase == 'train':
        shards = EnlargedSampler(dataset, world_size, rank, int(dataset_enlarge_ratio), seed=seed,
                                 shuffle=use_shuffle)
        sampler = SeededDraws(shards, seed=seed, rank=rank)
        if len(sampler) < batch_size_per_gpu:
            raise ValueError(f'{name or phase}: {len(sampler)} sample(s) per rank is fewer than batch_size_per_gpu '
                             f'{batch_size_per_gpu}, so every batch would be dropped; raise dataset_enlarge_ratio '
                             f'(or images_per_epoch) or lower the batch size')
        loader = DataLoader(SeededSamples(dataset), batch_size=int(batch_size_per_gpu), sampler=sampler,
                            drop_last=True, **common)
        iters = len(sampler) // int(batch_size_per_gpu)
        logger.info('%s: %d images, enlarge ratio %d, %d rank(s), batch %d per rank: %d iterations per epoch',
                    name or phase, len(dataset), dataset_enlarge_ratio, world_size, batch_size_per_gpu, iters)
        return loader
    if batch_size_per_gpu != 1:
        raise ValueError(f'{name or phase}: batch_size_per_gpu must be 1 for validation/test (whole images of '
                         f'different sizes), got {batch_size_per_gpu}')
    return DataLoader(dataset, batch_size=1, shuffle=False, drop_last=False, **common)


def build_dataset(cfg: Mapping[str, Any], where: str, **overrides) -> tuple:
    """(the registered data set a ``datasets.<name>`` block describes, its loader options); ``cfg`` is not changed."""
    dataset_kwargs, loader_kwargs = split_dataset_options(cfg)
    dataset_kwargs.update(overrides)
    return build(DATASET_REGISTRY, dataset_kwargs, where=where), loader_kwargs


def build_loader(cfg: Mapping[str, Any], where: str, rank: int = 0, world_size: int = 1, seed: int = 0,
                 device: torch.device | str | None = None, **overrides) -> tuple:
    """(data set, loader) of a ``datasets.<name>`` block: training is sharded over ranks; the others are
    read whole, in order, one image at a time. ``overrides`` replace data set options, and
    ``batch_size_per_gpu`` the loader's (progressive training)."""
    batch = overrides.pop('batch_size_per_gpu', None)
    dataset, loader_kwargs = build_dataset(cfg, where, **overrides)
    if batch is not None:
        loader_kwargs['batch_size_per_gpu'] = batch
    phase = cfg['phase']
    if phase != 'train':
        loader_kwargs.update(batch_size_per_gpu=1, use_shuffle=False)
        rank, world_size = 0, 1
    loader = build_dataloader(dataset, phase, rank=rank, world_size=world_size, seed=seed, device=device,
                              **loader_kwargs)
    return dataset, loader


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell the loader's sampler which epoch starts (a new shuffle); no-op for samplers without epochs."""
    sampler = getattr(loader, 'sampler', None)
    if hasattr(sampler, 'set_epoch'):
        sampler.set_epoch(epoch)


class CPUPrefetcher:
    """Iterates a loader with basicsr's prefetcher interface: ``next()`` (None at the end) and ``reset()``."""

    def __init__(self, loader: DataLoader):
        self.loader = loader
        self._it = iter(loader)

    def next(self):
        try:
            return next(self._it)
        except StopIteration:
            return None

    def reset(self) -> None:
        self._it = iter(self.loader)

    def __iter__(self):
        self.reset()
        while (batch := self.next()) is not None:
            yield batch


class CUDAPrefetcher(CPUPrefetcher):
    """Copies the next batch to the GPU on a side stream while the current one is used."""

    def __init__(self, loader: DataLoader, device: torch.device | str):
        device = torch.device(device)
        if device.type != 'cuda' or not torch.cuda.is_available():
            raise ValueError(f'CUDAPrefetcher needs a CUDA device, got {device}')
        self.device = device
        self.stream = torch.cuda.Stream(device=device)
        self._batch = None
        super().__init__(loader)
        self._preload()

    def _preload(self) -> None:
        try:
            batch = next(self._it)
        except StopIteration:
            self._batch = None
            return
        with torch.cuda.stream(self.stream):
            self._batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                           for k, v in batch.items()}

    def next(self):
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        batch = self._batch
        if batch is not None:
            for value in batch.values():
                if torch.is_tensor(value):
                    value.record_stream(torch.cuda.current_stream(self.device))
            self._preload()
        return batch

    def reset(self) -> None:
        self._it = iter(self.loader)
        self._preload()


def create_prefetcher(loader: DataLoader, prefetch_mode: str | None = None,
                      device: torch.device | str | None = None) -> CPUPrefetcher:
    """CUDAPrefetcher for ``prefetch_mode: cuda`` (on a CUDA device), else a CPUPrefetcher."""
    if prefetch_mode not in PREFETCH_MODES:
        raise ValueError(f'prefetch_mode: {prefetch_mode!r} is not one of None, cpu, cuda')
    if prefetch_mode == 'cuda':
        return CUDAPrefetcher(loader, device if device is not None else 'cuda')
    return CPUPrefetcher(loader)

