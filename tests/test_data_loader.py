"""drcnet.data.loader: option split, seeded and distributed sampling, workers, prefetchers."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from drcnet.data.loader import (LOADER_KEYS, CPUPrefetcher, CUDAPrefetcher, EnlargedSampler, build_dataloader,
                                create_prefetcher, set_epoch, split_dataset_options)
from drcnet.data.synthetic_dataset import SyntheticDegradationDataset
from drcnet.registry import DATASET_REGISTRY, build


class _Indexed(Dataset):
    def __init__(self, n):
        self.n = n

    def __getitem__(self, i):
        return {'lq': torch.full((3, 4, 4), float(i)), 'gt': torch.zeros(3, 4, 4), 'lq_path': str(i), 'gt_path': str(i)}

    def __len__(self):
        return self.n


def test_split_dataset_options_separates_loader_keys_and_copies():
    block = {'name': 'demo', 'type': 'SyntheticDegradationDataset', 'samples': ['chelsea'], 'gt_size': 32,
             'batch_size_per_gpu': 2, 'num_worker_per_gpu': 0, 'use_shuffle': True, 'dataset_enlarge_ratio': 3,
             'prefetch_mode': None, 'pin_memory': False, 'persistent_workers': True, 'test_y_channel': False,
             'protocol': 'standard'}
    original = dict(block)
    dataset_kwargs, loader_kwargs = split_dataset_options(block)
    assert block == original
    assert set(loader_kwargs) == LOADER_KEYS
    assert dataset_kwargs == {'type': 'SyntheticDegradationDataset', 'samples': ['chelsea'], 'gt_size': 32}
    dataset = build(DATASET_REGISTRY, dataset_kwargs, where='datasets.train', phase='train')
    loader = build_dataloader(dataset, 'train', **loader_kwargs)  # a whole split block is accepted
    assert len(loader) == 1  # 1 image x ratio 3 // batch 2, last partial batch dropped


def test_enlarged_sampler_covers_every_index_split_over_ranks():
    data = _Indexed(10)
    shares = [list(EnlargedSampler(data, num_replicas=3, rank=r, ratio=3, seed=5)) for r in range(3)]
    assert all(len(s) == 10 for s in shares)  # ceil(10 * 3 / 3)
    everything = sorted(sum(shares, []))
    assert everything == sorted(list(range(10)) * 3)
    again = list(EnlargedSampler(data, num_replicas=3, rank=1, ratio=3, seed=5))
    assert again == shares[1]
    other_seed = list(EnlargedSampler(data, num_replicas=3, rank=1, ratio=3, seed=6))
    assert other_seed != shares[1]
    sampler = EnlargedSampler(data, num_replicas=1, rank=0, ratio=1, seed=5)
    first = list(sampler)
    sampler.set_epoch(1)
    assert sorted(first) == sorted(list(sampler)) and first != list(sampler)
    assert list(EnlargedSampler(data, 1, 0, 2, shuffle=False)) == list(range(10)) * 2
    with pytest.raises(ValueError, match='rank 3'):
        EnlargedSampler(data, num_replicas=2, rank=3)


def test_train_loader_shards_over_ranks_and_drops_last():
    data = _Indexed(9)
    seen = []
    for rank in range(2):
        loader = build_dataloader(data, 'train', batch_size_per_gpu=2, dataset_enlarge_ratio=2, rank=rank,
                                  world_size=2, seed=1)
        assert len(loader) == 4  # ceil(18 / 2) = 9 per rank, 4 full batches
        seen.append([int(v) for batch in loader for v in batch['lq'][:, 0, 0, 0]])
    assert all(len(s) == 8 for s in seen)
    assert set(seen[0]) | set(seen[1]) <= set(range(9))


def test_val_loader_is_batch_one_in_order():
    loader = build_dataloader(_Indexed(4), 'val', seed=3)
    assert [batch['lq_path'][0] for batch in loader] == ['0', '1', '2', '3']
    assert not loader.pin_memory  # CPU run
    with pytest.raises(ValueError, match='batch_size_per_gpu must be 1'):
        build_dataloader(_Indexed(4), 'val', batch_size_per_gpu=4)


def test_workers_are_seeded_reproducible_and_fresh_each_epoch():
    def make(seed):
        dataset = SyntheticDegradationDataset(samples=['chelsea', 'coffee'], degradation='gaussian_noise',
                                              sigma=[5, 50], gt_size=24, images_per_epoch=8)
        return build_dataloader(dataset, 'train', batch_size_per_gpu=4, num_worker_per_gpu=2, seed=seed)

    def epochs(loader, n=2):
        out = []
        for epoch in range(n):
            set_epoch(loader, epoch)
            out.append(torch.cat([batch['lq'] for batch in loader]))
        return out

    loader = make(11)
    assert loader.persistent_workers and loader.num_workers == 2
    a0, a1 = epochs(loader)
    b0, b1 = epochs(make(11))
    (c0,) = epochs(make(12), n=1)
    assert torch.equal(a0, b0) and torch.equal(a1, b1)  # same seed, same batches
    assert not torch.equal(a0, a1)  # a new epoch draws new crops and noise
    assert not torch.equal(a0, c0)  # another seed, other batches


def test_prefetchers():
    loader = build_dataloader(_Indexed(5), 'train', batch_size_per_gpu=2, seed=0)
    prefetcher = create_prefetcher(loader, None)
    assert isinstance(prefetcher, CPUPrefetcher)
    count = 0
    while prefetcher.next() is not None:
        count += 1
    assert count == 2
    prefetcher.reset()
    assert prefetcher.next() is not None
    assert len(list(prefetcher)) == 2
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='CUDA'):
            CUDAPrefetcher(loader, 'cpu')
        with pytest.raises(ValueError, match="prefetch_mode: 'cuda' needs a CUDA device"):
            build_dataloader(_Indexed(5), 'train', prefetch_mode='cuda', device=torch.device('cpu'))
    with pytest.raises(ValueError, match='prefetch_mode'):
        create_prefetcher(loader, 'gpu')


def test_loader_errors_name_the_option():
    with pytest.raises(ValueError, match='batch_size_per_gpu'):
        build_dataloader(_Indexed(5), 'train', batch_size_per_gpu=0)
    with pytest.raises(ValueError, match='fewer than batch_size_per_gpu'):
        build_dataloader(_Indexed(3), 'train', batch_size_per_gpu=8)
    with pytest.raises(ValueError, match='dataset_enlarge_ratio'):
        build_dataloader(_Indexed(3), 'train', dataset_enlarge_ratio=0.5)


def test_training_samples_depend_on_seed_rank_epoch_and_position_only():
    def make(workers, persistent=True, rank=0):
        dataset = SyntheticDegradationDataset(samples=['chelsea', 'coffee'], degradation='gaussian_noise',
                                              sigma=[5, 50], gt_size=24, images_per_epoch=8)
        return build_dataloader(dataset, 'train', batch_size_per_gpu=2, num_worker_per_gpu=workers, seed=4,
                                persistent_workers=persistent, rank=rank, world_size=2)

    def epoch(loader, n):
        set_epoch(loader, n)
        return torch.cat([batch['lq'] for batch in loader])

    in_process = make(0)
    first, second = epoch(in_process, 0), epoch(in_process, 1)
    for workers, persistent in ((1, True), (2, True), (1, False)):
        loader = make(workers, persistent)
        assert torch.equal(epoch(loader, 0), first) and torch.equal(epoch(loader, 1), second), (workers, persistent)
    # a loader that starts at epoch 1, as a resumed run does, draws what the uninterrupted one drew
    assert torch.equal(epoch(make(1), 1), second)
    assert not torch.equal(epoch(make(0, rank=1), 0), first)  # the other rank: other images and noise
    # the main process's own random stream is not consumed by drawing samples
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    epoch(in_process, 2)
    assert torch.equal(torch.rand(3), expected)
