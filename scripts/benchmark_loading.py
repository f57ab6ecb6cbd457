"""Training samples per second of the data pipeline, with and without ``--jpeg_draft``, in one process.

Loads training items (decode, RandomResizedCrop to ``--crop_size``, flip) of a dataset whose photos are as
large as HAdobe5k's (``scripts/make_synthetic_dataset.py --large_side 6048`` unless ``--dataset_root`` is
given), alternating the two modes, best of ``--repeats``. Prints a Markdown table.

    python scripts/benchmark_loading.py                     # about a minute on 2 cores
    python scripts/benchmark_loading.py --dataset_root <iHarmony4> --num_items 200
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from data import create_dataset  # noqa: E402
from options.train_options import TrainOptions  # noqa: E402
from util.cli import run_main, setup_logging  # noqa: E402


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--dataset_root', default='', help='an iHarmony4-layout dataset (default: a generated one)')
    p.add_argument('--num_items', type=int, default=12, help='training items per run')
    p.add_argument('--large_side', type=int, default=6048, help='long side of the generated photos')
    p.add_argument('--crop_size', type=int, default=256, help='--crop_size of training')
    p.add_argument('--repeats', type=int, default=3, help='runs of each mode, alternating; the best counts')
    args = p.parse_args(argv)
    if args.num_items < 1 or args.repeats < 1:
        raise ValueError('--num_items and --repeats must be positive')
    return args


def make_dataset(out: Path, num_items: int, large_side: int) -> Path:
    """Training composites of ``large_side`` pixels (HAdobe5k-sized), from scikit-image's photos."""
    per_photo = max(2, -(-num_items // 6))
    cmd = [sys.executable, str(ROOT / 'scripts' / 'make_synthetic_dataset.py'), '--out', str(out), '--per_photo',
           str(per_photo), '--views', '1', '--large_side', str(large_side), '--subset_weights', 'HAdobe5k=1',
           '--test_photos', '2']
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


def time_items(root: Path, num_items: int, crop_size: int, draft: bool) -> tuple[float, int, tuple[int, ...]]:
    """Seconds to load the first ``num_items`` training items, how many there were, and the decoded size of the
    largest of them."""
    argv = ['--dataset_root', str(root), '--gpu_ids', '-1', '--crop_size', str(crop_size), '--display_id', '0']
    ds = create_dataset(TrainOptions().parse(argv + (['--jpeg_draft'] if draft else [])), 'train')
    n = min(num_items, len(ds))
    torch.manual_seed(0)
    start = time.perf_counter()
    for i in range(n):
        ds[i]
    seconds = time.perf_counter() - start
    largest = max(range(n), key=lambda i: os.path.getsize(ds.samples[i].real))
    return seconds, n, ds.load(largest)[0].shape


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging(False)
    logging.getLogger().setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.dataset_root) if args.dataset_root else make_dataset(Path(tmp) / 'data', args.num_items,
                                                                              args.large_side)
        runs: dict[bool, list[float]] = {False: [], True: []}
        shapes = {}
        for _ in range(args.repeats):
            for draft in (False, True):
                seconds, n, shapes[draft] = time_items(root, args.num_items, args.crop_size, draft)
                runs[draft].append(seconds)
    print(f'{n} training items of {root if args.dataset_root else "a generated dataset"}, crop {args.crop_size}, '
          f'one process, torch {torch.__version__}; best of {args.repeats} alternating runs\n')
    print('| decoding | largest image decoded (H×W) | s (best) | items/s |')
    print('|---|---|---:|---:|')
    for draft in (False, True):
        best = min(runs[draft])
        label = '--jpeg_draft' if draft else 'full size (default)'
        print(f'| {label} | {shapes[draft][0]}×{shapes[draft][1]} | {best:.2f} | {n / best:.2f} |')
    print(f'\nspeed-up: {min(runs[False]) / min(runs[True]):.2f}x')
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
