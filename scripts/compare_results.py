"""Print the overall rows of several test.py runs side by side.

    python scripts/compare_results.py "input composites=results/demo/composite_test" \
        "demo model=results/demo/latest_test"

Each argument is ``label=folder`` where the folder holds the ``summary.json`` that test.py wrote.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from util.cli import run_main  # noqa: E402

COLUMNS = (('n', 'n', '{:d}'), ('mse', 'MSE', '{:.2f}'), ('psnr', 'PSNR', '{:.2f}'), ('fmse', 'fMSE', '{:.2f}'),
           ('fpsnr', 'fPSNR', '{:.2f}'), ('ssim', 'SSIM', '{:.4f}'))


def load_row(folder: str, group: str) -> dict:
    """The ``group`` row of ``<folder>/summary.json``."""
    path = os.path.join(folder, 'summary.json')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: no summary.json (run test.py first)')
    with open(path) as f:
        groups = json.load(f)['groups']
    if group not in groups:
        raise ValueError(f'{path}: no group {group!r} (groups: {", ".join(groups)})')
    return groups[group]


def format_table(rows: Sequence[tuple[str, dict]]) -> str:
    """A Markdown table: one line per labelled summary row."""
    lines = ['| | ' + ' | '.join(title for _, title, _ in COLUMNS) + ' |',
             '|---|' + '---:|' * len(COLUMNS)]
    for label, row in rows:
        cells = ['-' if row.get(key) is None else fmt.format(row[key]) for key, _, fmt in COLUMNS]
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('runs', nargs='+', help='label=results folder of a test.py run')
    parser.add_argument('--group', default='all', help='which row of summary.json (all, HCOCO, fg 0-5%%, ...)')
    parser.add_argument('--verbose', action='store_true')
    args = parser.parse_args(argv)
    rows = []
    for run in args.runs:
        label, sep, folder = run.partition('=')
        if not sep:
            raise ValueError(f'{run!r}: expected label=folder')
        rows.append((label, load_row(folder, args.group)))
    print(format_table(rows))
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
