"""scripts/gpu_check.sh: its CPU mode end to end (the table, the loader row, the falling loss), and its loss test."""
from __future__ import annotations

import math
import os
import re
import subprocess
from pathlib import Path
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


def table_rows(text: str) -> list[list[str]]:
    """The cells of the Markdown table rows of ``text`` (header and separator left out)."""
    rows = [[c.strip() for c in line.strip().strip('|').split('|')] for line in text.splitlines()
            if line.startswith('| ')]
    return rows[1:]


def test_cpu_mode_end_to_end():
    env = {**os.environ, 'OMP_NUM_THREADS': '2'}
    res = subprocess.run(['bash', 'scripts/gpu_check.sh', '--quick', '--workers', '2'], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    out = res.stdout
    assert out.startswith('CPU mode (asked for)')
    rows = table_rows(out)
    by_key = {(r[0], r[2], 'compile' in r[3]): r for r in rows}
    released = by_key[('released', '1', False)]
    assert released[1] == 'fp32' and float(released[4]) > 0 and released[5] == '1.00×'
    for batch in ('2', '4'):
        recipe = by_key[('recipe', batch, False)]
        assert recipe[1] == 'bf16' and float(recipe[4]) > 0
        flags = set(recipe[3].split(', '))
        assert 'channels_last' in flags
        ratio = float(recipe[5].rstrip('×'))
        assert math.isclose(ratio, float(recipe[4]) / float(released[4]), rel_tol=0.1, abs_tol=0.01)
        assert by_key[('recipe', batch, True)][4] == 'skipped (--quick)'
    loader = next(r for r in rows if r[0].startswith('loader (cache --max_side 256, 2 workers)'))
    assert float(loader[4]) > 0
    m = re.search(r'short bf16 training: 20 iterations of batch 2 at lr 0\.001, mean L1 of the first and last 20%: '
                  r'([\d.]+) -> ([\d.]+): fell', out)
    assert m and float(m.group(2)) < 0.9 * float(m.group(1)), out
    assert re.search(r'loader: [\d.]+ samples/s against [\d.]+ for the fastest recipe row', out)


def test_loss_fell():
    gc = load_script('gpu_check')
    assert gc.loss_fell([1.0] * 5 + [0.8] * 5)[0]
    assert not gc.loss_fell([1.0] * 5 + [0.95] * 5)[0]  # less than 10% lower
    assert not gc.loss_fell([0.5] * 5 + [0.6] * 5)[0]
    assert not gc.loss_fell([1.0] * 5 + [float('nan')] * 5)[0]
    fell, first, last = gc.loss_fell([4.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5])
    assert fell and (first, last) == (3.0, 0.5)  # the first and last 20%: two iterations each
