"""The suite's shared setup: two threads by default, an explicit OMP_NUM_THREADS respected."""
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

CHILD = r'''
import sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import conftest, torch
print(torch.get_num_threads())
'''


def test_an_explicit_omp_num_threads_is_not_overridden():
    # one thread where the suite would otherwise take two (a process takes half a minute to import all)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-c', CHILD, str(TESTS), str(TESTS.parent)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[-1]) == 1
