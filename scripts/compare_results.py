"""Print the overall rows of several test.py runs side by side.

    python scripts/compare_results.py "input composites=results/demo/composite_test" \
        "demo model=results/demo/latest_test"

Each argument is ``label=folder`` where the folder holds the ``summary.json`` that test.py wrote. The table
names the protocol of each run (released or deploy); runs of different protocols are not comparable, and a
warning says so.

``--paired`` also compares every run with the first one image by image (from their ``metrics.csv``): for MSE
and fMSE, the mean reduction of the error, its 95% paired bootstrap interval (resampling images, a fixed seed)
and how many images got a lower error. An interval that excludes 0 means the difference is not a matter of
which images happened to be in the test set.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from typing import Optional, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from util.cli import run_main  # noqa: E402

COLUMNS = (('n', 'n', '{:d}'), ('mse', 'MSE', '{:.2f}'), ('psnr', 'PSNR', '{:.2f}'), ('fmse', 'fMSE', '{:.2f}'),
           ('fpsnr', 'fPSNR', '{:.2f}'), ('ssim', 'SSIM', '{:.4f}'))


def load_summary(folder: str) -> dict:
    """``<folder>/summary.json``."""
    path = os.path.join(folder, 'summary.json')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: no summary.json (run test.py first)')
    with open(path) as f:
        return json.load(f)


def load_row(folder: str, group: str) -> dict:
    """The ``group`` row of ``<folder>/summary.json``."""
    groups = load_summary(folder)['groups']
    if group not in groups:
        raise ValueError(f'{os.path.join(folder, "summary.json")}: no group {group!r} (groups: {", ".join(groups)})')
    return groups[group]


def protocol_name(summary: dict) -> str:
    """The protocol a summary was computed with ('released', 'deploy'), or '?' for summaries that do not say."""
    protocol = summary.get('protocol')
    return protocol.get('name', '?') if isinstance(protocol, dict) else '?'


def format_table(rows: Sequence[tuple[str, dict]], protocols: Optional[Sequence[str]] = None) -> str:
    """A Markdown table: one line per labelled summary row, with its protocol when ``protocols`` is given."""
    lines = ['| | ' + ('protocol | ' if protocols else '') + ' | '.join(title for _, title, _ in COLUMNS) + ' |',
             '|---|' + ('---|' if protocols else '') + '---:|' * len(COLUMNS)]
    for i, (label, row) in enumerate(rows):
        cells = ['-' if row.get(key) is None else fmt.format(row[key]) for key, _, fmt in COLUMNS]
        lines.append(f'| {label} | ' + (f'{protocols[i]} | ' if protocols else '') + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def load_metric(folder: str, metric: str) -> dict[str, float]:
    """Image name → ``metric`` from ``<folder>/metrics.csv``."""
    path = os.path.join(folder, 'metrics.csv')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: no metrics.csv (run test.py first)')
    with open(path, newline='') as f:
        return {row['image']: float(row[metric]) for row in csv.DictReader(f)}


def paired(base: dict[str, float], other: dict[str, float], resamples: int = 10000,
           seed: int = 0) -> dict[str, float]:
    """Per-image comparison of ``other`` with ``base`` on the images both scored (NaN pairs left out).

    Returns n, the mean reduction (base − other), its 95% bootstrap interval (``low``, ``high``) and the
    number of images where ``other`` is lower (``improved``).
    """
    names = sorted(k for k in base.keys() & other.keys() if math.isfinite(base[k]) and math.isfinite(other[k]))
    if not names:
        raise ValueError('the two runs share no scored image')
    d = np.array([base[k] - other[k] for k in names])
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {'n': len(d), 'mean': float(d.mean()), 'low': float(low), 'high': float(high),
            'improved': int((d > 0).sum())}


def format_paired(base_label: str, rows: Sequence[tuple[str, str, dict]]) -> str:
    """A Markdown table of :func:`paired` results: one line per (metric, run)."""
    lines = [f'| metric | vs {base_label} | n | mean reduction | 95% interval | images improved |',
             '|---|---|---:|---:|---|---:|']
    for metric, label, r in rows:
        lines.append(f'| {metric} | {label} | {r["n"]} | {r["mean"]:.2f} | {r["low"]:.2f} to {r["high"]:.2f} | '
                     f'{r["improved"]} ({100 * r["improved"] / r["n"]:.0f}%) |')
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('runs', nargs='+', help='label=results folder of a test.py run')
    parser.add_argument('--group', default='all', help='which row of summary.json (all, HCOCO, fg 0-5%%, ...)')
    parser.add_argument('--paired', action='store_true',
                        help='also compare every run with the first image by image (MSE, fMSE; bootstrap interval)')
    parser.add_argument('--verbose', action='store_true')
    args = parser.parse_args(argv)
    rows, folders, protocols = [], [], []
    for run in args.runs:
        label, sep, folder = run.partition('=')
        if not sep:
            raise ValueError(f'{run!r}: expected label=folder')
        rows.append((label, load_row(folder, args.group)))
        folders.append(folder)
        protocols.append(protocol_name(load_summary(folder)))
    if len(set(protocols)) > 1:
        print(f'warning: the runs used different protocols ({", ".join(sorted(set(protocols)))}): their numbers are '
              'not comparable', file=sys.stderr)
    print(format_table(rows, protocols))
    if args.paired and len(rows) > 1:
        results = []
        for metric, title in (('mse', 'MSE'), ('fmse', 'fMSE')):
            base = load_metric(folders[0], metric)
            for (label, _), folder in zip(rows[1:], folders[1:]):
                results.append((title, label, paired(base, load_metric(folder, metric))))
        print('\n' + format_paired(rows[0][0], results))
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
