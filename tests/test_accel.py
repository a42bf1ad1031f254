"""The opt-in CPU inference layer: same restorations, and the allocator setting only when asked for."""
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from drcnet.accel import accelerate
from drcnet.archs.drcnet_arch import DRCNet
from tolerance import assert_same_up_to_rounding, network_terms

ROOT = Path(__file__).resolve().parents[1]


def test_accelerated_network_restores_as_the_plain_one(photo):
    torch.manual_seed(0)
    net = DRCNet(wf=8, depth=3, ea_lambda=1e-4).eval()
    x = torch.cat([photo('chelsea', (45, 61)), photo('rocket', (45, 61))])
    with torch.no_grad():
        plain = net(x)
        fast = accelerate(net, 'cpu')(x)
    assert fast is not plain and net.conv_01.weight.is_contiguous(memory_format=torch.channels_last)
    assert not net.training
    # the same convolutions in another memory layout accumulate their sums in another order; per-image
    # statistics over the 48 x 64 padded maps are the largest other reductions
    terms = network_terms(net, 48 * 64)
    for a, b in zip(fast, plain):
        assert_same_up_to_rounding(a, b, terms)


# Faults of the last of several rounds that allocate, touch and free four 16 MB maps (as a forward
# pass does), in a fresh process.
FAULTS_CHILD = r'''
import json, resource, sys
sys.path.insert(0, sys.argv[1])
import torch
from drcnet.accel import reuse_freed_cpu_memory
reuse_freed_cpu_memory()
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    maps = [torch.empty(4 * 2 ** 20).fill_(1.0) for _ in range(4)]
    del maps
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({'faults': faults[-1], 'tuned': reuse_freed_cpu_memory()}))
'''


def _child_faults(**env) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if k not in ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_', 'LD_PRELOAD', 'DRCNET_CPU_ALLOCATOR')}
    proc = subprocess.run([sys.executable, '-c', FAULTS_CHILD, str(ROOT)], capture_output=True, text=True,
                          env=dict(clean, **env), timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='a glibc malloc setting')
def test_cpu_allocator_reuses_freed_memory():
    tuned = _child_faults()
    assert tuned['tuned'] is True
    # 64 MB are 16384 pages; with the setting a later round reuses the freed pages instead of
    # faulting fresh ones in (glibc's defaults trim the heap or not, depending on what else lies on it)
    assert tuned['faults'] < 1000, tuned
    assert _child_faults(DRCNET_CPU_ALLOCATOR='default')['tuned'] is False


def test_environment_allocator_choice_is_respected():
    assert _child_faults(MALLOC_TRIM_THRESHOLD_='131072')['tuned'] is False
