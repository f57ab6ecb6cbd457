"""Default options on a small machine without CUDA: train.py and test.py run without a single warning."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_on_one_cpu(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run a script of the project pinned to one CPU (so that the released default of 4 loader workers would
    exceed the CPUs) with Python's warnings shown."""
    env = {**os.environ, 'PYTHONWARNINGS': 'default', 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': ''}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))


@pytest.mark.skipif(not hasattr(os, 'sched_setaffinity'), reason='needs CPU affinity (Linux)')
def test_train_and_test_with_default_options_print_no_warning(tiny_dataset, tmp_path):
    common = ['--dataset_root', str(tiny_dataset), '--checkpoints_dir', str(tmp_path), '--name', 'quiet',
              '--ngf', '8', '--ndf', '8']
    train = run_on_one_cpu([str(ROOT / 'train.py'), *common, '--max_iters', '2', '--display_id', '0'], tmp_path)
    assert train.returncode == 0, train.stderr
    test = run_on_one_cpu([str(ROOT / 'test.py'), *common, '--results_dir', str(tmp_path / 'results')], tmp_path)
    assert test.returncode == 0, test.stderr
    for proc in (train, test):
        assert 'warn' not in proc.stderr.lower(), proc.stderr
        assert 'INFO: no GPU found: running on the CPU' in proc.stderr  # the one line instead of a warning
    assert 'options: ' in train.stderr and len(train.stderr.splitlines()) < 25  # a summary, not every option
