"""Runtime facts of one process (device, rank, paths), kept apart from the read-only options."""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from drcnet.engine.device import default_backend, pick_device

logger = logging.getLogger('basicsr')


@dataclass
class RunContext:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    distributed: bool = False
    paths: dict = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_context(launcher: str = 'none', device: str = 'auto', backend: str | None = None,
                 timeout_minutes: int = 30) -> RunContext:
    """Pick the device and, under ``--launcher pytorch``, join the torchrun process group."""
    if launcher == 'none':
        if int(os.environ.get('WORLD_SIZE', '1')) > 1:
            logger.warning('WORLD_SIZE > 1 in the environment but --launcher none: training on one process')
        return RunContext(device=pick_device(device, local_rank=0))
    if launcher != 'pytorch':
        raise ValueError(f"--launcher: {launcher!r} is not one of none, pytorch")
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ]
    if missing:
        raise ValueError(f'--launcher pytorch: {", ".join(missing)} not set; start with '
                         '`torchrun --nproc_per_node=N train.py -opt OPT --launcher pytorch`')
    rank, world, local = (int(os.environ[k]) for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'))
    dev = pick_device(device, local_rank=local)
    backend = backend or default_backend(dev)
    if backend == 'nccl' and dev.type != 'cuda':
        raise ValueError("dist_params.backend: 'nccl' needs CUDA devices; use 'gloo' on CPU")
    if not dist.is_initialized():
        kwargs = {'device_id': dev} if dev.type == 'cuda' else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=timeout_minutes), **kwargs)
    return RunContext(device=dev, rank=rank, world_size=world, local_rank=local, distributed=world > 1)


def barrier(ctx: RunContext) -> None:
    if ctx.distributed:
        dist.barrier()


def any_rank(ctx: RunContext, flag: bool) -> bool:
    """True when ``flag`` is true on any rank (so every rank takes the same branch)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def flags_by_rank(flags: list, device: torch.device | str) -> list:
    """Every rank's ``flags`` (a list of the same length on all ranks), one row per rank; a collective."""
    if not (dist.is_available() and dist.is_initialized()):
        return [[bool(f) for f in flags]]
    table = torch.zeros(dist.get_world_size(), len(flags), device=device)
    table[dist.get_rank()] = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(table)
    return [[v > 0 for v in row] for row in table.tolist()]


def average_across_ranks(ctx: RunContext, values: dict) -> dict:
    if not ctx.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], device=ctx.device)
    dist.all_reduce(t)
    return {k: v / ctx.world_size for k, v in zip(keys, t.tolist())}


def weights_digest(net: torch.nn.Module) -> str:
    """SHA-256 of a network's state dict (tensor bytes in key order)."""
    import hashlib
    h = hashlib.sha256()
    for key, value in net.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_replicas(ctx: RunContext, net: torch.nn.Module) -> list:
    """Digests of the weights on every rank; raises when the replicas have drifted apart."""
    digest = weights_digest(net)
    if not ctx.distributed:
        return [digest]
    digests = [None] * ctx.world_size
    dist.all_gather_object(digests, digest)
    logger.info('replica check: ' + ', '.join(f'rank {r} {d}' for r, d in enumerate(digests)))
    if len(set(digests)) != 1:
        raise RuntimeError(f'the {ctx.world_size} processes hold different weights: {digests}')
    return digests


def shutdown(ctx: RunContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def experiment_paths(root: str | Path, name: str) -> dict:
    base = Path(root) / name
    return {'root': base, 'models': base / 'models', 'training_states': base / 'training_states',
            'visualization': base / 'visualization', 'tb_logger': Path('tb_logger') / name}
