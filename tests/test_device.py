"""Device choice in drcnet.engine.device."""
import subprocess
import sys

import pytest
import torch

from drcnet.engine.device import pick_device

def test_pick_device():
    assert pick_device('cpu') == torch.device('cpu')
    assert pick_device('auto').type in ('cpu', 'cuda')
    with pytest.raises(ValueError, match="device: 'tpu' is not one of auto, cpu, cuda"):
        pick_device('tpu')
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='cuda'):
            pick_device('cuda')


def test_picking_the_cpu_leaves_the_c_allocator_alone():
    # a library import and a device choice must not change process-wide settings
    code = ('import drcnet, drcnet.accel as a; from drcnet.engine.device import pick_device; '
            "pick_device('cpu'); print(a._allocator_state)")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '{}'
