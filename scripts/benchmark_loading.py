"""Training samples per second and per core of the data pipeline, on a dataset and on its prepare_dataset.py cache.

Generates a dataset shaped like iHarmony4's training split (unless ``--dataset_root`` is given): the
sub-datasets in iHarmony4's proportions (HCOCO 38,545, HAdobe5k 19,437, HFlickr 7,449, Hday2night 311
composites) at their typical sizes (HCOCO about 640×480, HAdobe5k about 5000×3300, HFlickr about 1024×768,
Hday2night about 1000×700), JPEGs at quality 95 with 4:2:0 chroma subsampling made from scikit-image's photos
with a fine grain. It then writes a cache per ``--max_sides`` (``scripts/prepare_dataset.py --max_side``) and loads
the same training items (decode, RandomResizedCrop to ``--crop_size``, flip: the training dataset class through
``data.create_dataset`` and ``data.create_dataloader``) from each, in the main process with one torch thread
(0 loader workers, batches of 1, timed per sample for the CPU time of each sub-dataset) and in one loader
worker (batches of ``--batch_size``, 16 as in the fast recipe: batches cross between processes), full decoding
and ``--jpeg_draft``, alternating, best of ``--repeats``. Each figure is what one core delivers: samples per
second of wall-clock time, and samples per CPU-second of the process that loads (the main process, or the
workers' CPU time over the whole pass, start-up included), which other processes on the machine disturb less.
Prints Markdown tables.

    python scripts/benchmark_loading.py                       # about 2 minutes on 2 cores
    python scripts/benchmark_loading.py --max_sides 1024,512  # two caches side by side
    python scripts/benchmark_loading.py --dataset_root <iHarmony4> --cache_root <cache> --num_items 400
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import resource
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Subset

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / 'scripts'):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import prepare_dataset  # noqa: E402
from data import create_dataloader, create_dataset  # noqa: E402
from data.iharmony4_dataset import SUBSETS, open_image, read_list  # noqa: E402
from options.train_options import TrainOptions  # noqa: E402
from util.cli import HelpFormatter, run_main, setup_logging  # noqa: E402

# training composites of iHarmony4, typical (W, H) and composites per real image of each sub-dataset
IHARMONY4_TRAIN = {'HCOCO': 38545, 'HAdobe5k': 19437, 'HFlickr': 7449, 'Hday2night': 311}
TYPICAL_SIZE = {'HCOCO': (640, 480), 'HAdobe5k': (5000, 3300), 'HFlickr': (1024, 768), 'Hday2night': (1000, 700)}
COMPOSITES_PER_REAL = {'HCOCO': 1, 'HAdobe5k': 2, 'HFlickr': 1, 'Hday2night': 2}
PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket')
GRAIN = 3  # standard deviation of the grain, in grey levels: JPEGs of about 1.7 bits per pixel, like photographs
CACHE_SIDE = 1024


@dataclass
class Run:
    """One loading configuration: which copy, how it decodes, how many loader workers."""

    data: str  # 'original', 'cache' or 'cache <max_side>'
    draft: bool
    workers: int
    batch: int

    @property
    def label(self) -> str:
        return f'| {self.data} | {"--jpeg_draft" if self.draft else "full"} | {self.workers} | {self.batch} |'


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=HelpFormatter)
    p.add_argument('--dataset_root', default='', help='an iHarmony4-layout dataset (default: a generated one)')
    p.add_argument('--cache_root', default='',
                   help='its prepare_dataset.py copy (default: written into a temporary folder, only for the '
                        'generated dataset)')
    p.add_argument('--total', type=int, default=80, help='training composites of the generated dataset')
    p.add_argument('--scale', type=float, default=1.0, help='image sizes of the generated dataset, times this')
    p.add_argument('--num_items', type=int, default=0, help='training items per run, drawn at random (0: all)')
    p.add_argument('--crop_size', type=int, default=256, help='--crop_size of training')
    p.add_argument('--repeats', type=int, default=2, help='runs of each configuration, alternating; the best counts')
    p.add_argument('--workers', default='0,1', help='loader worker counts to measure')
    p.add_argument('--batch_size', type=int, default=16,
                   help='batch size with loader workers (the batches cross between processes); 1 without')
    p.add_argument('--max_sides', default=str(CACHE_SIDE),
                   help='--max_side of the caches written for the generated dataset (comma-separated)')
    args = p.parse_args(argv)
    args.max_sides = [int(v) for v in args.max_sides.split(',') if v.strip()]
    if args.total < 1 or args.repeats < 1 or args.num_items < 0 or args.scale <= 0 or args.batch_size < 1:
        raise ValueError('--total, --repeats, --scale and --batch_size must be positive, --num_items at least 0')
    return args


# ----------------------------------------------------------------------------------------------- the data
def subset_counts(total: int) -> dict[str, int]:
    """``total`` composites split in iHarmony4's proportions, at least one per sub-dataset."""
    n_all = sum(IHARMONY4_TRAIN.values())
    return {s: max(1, round(total * n / n_all)) for s, n in IHARMONY4_TRAIN.items()}


def make_iharmony4_like(out: str | Path, total: int = 80, scale: float = 1.0, seed: int = 0) -> Path:
    """Write an iHarmony4-layout dataset shaped like iHarmony4's training split under ``out``.

    ``total`` training composites in iHarmony4's proportions (:func:`subset_counts`), each sub-dataset at its
    typical size times ``scale`` (sizes vary by ±10%, a quarter of the photos upright), and one test
    composite per sub-dataset. Real images are scikit-image's photos rescaled with a fine grain, masks
    ellipses, composites the real image with the foreground's colours scaled. Same ``seed``, same files.
    """
    from skimage import data as skdata

    out = Path(out)
    rng = np.random.default_rng(seed)
    photos = [getattr(skdata, name)() for name in PHOTOS]
    grain_tile = rng.normal(0, GRAIN, size=(512, 512, 3))
    grain_pos = np.clip(grain_tile, 0, 255).round().astype(np.uint8)
    grain_neg = np.clip(-grain_tile, 0, 255).round().astype(np.uint8)
    lines: dict[str, list[str]] = {'train': [], 'test': []}
    for sub, n_train in subset_counts(total).items():
        for folder in prepare_dataset.IMAGE_FOLDERS:
            (out / sub / folder).mkdir(parents=True, exist_ok=True)
        sub_lines: dict[str, list[str]] = {'train': [], 'test': []}
        per_real = COMPOSITES_PER_REAL[sub]
        # training real images with ``per_real`` composites each, then one test real image of its own
        groups = [['train'] * min(per_real, n_train - i) for i in range(0, n_train, per_real)] + [['test']]
        for r, group in enumerate(groups):
            w, h = (max(16, round(v * scale * rng.uniform(0.9, 1.1))) for v in TYPICAL_SIZE[sub])
            if rng.random() < 0.25:
                w, h = h, w
            real = _photo(photos[rng.integers(len(photos))], w, h, rng)
            real = cv2.subtract(cv2.add(real, _tiled(grain_pos, w, h, rng)), _tiled(grain_neg, w, h, rng))
            real_name = f'{sub[1].lower()}{r:05d}' if sub != 'Hday2night' else f'd{r:05d}-2012{r:04d}-120000'
            cv2.imwrite(str(out / sub / 'real_images' / f'{real_name}.jpg'), real, [cv2.IMWRITE_JPEG_QUALITY, 95])
            mask = np.zeros((h, w), np.uint8)
            centre = (int(rng.uniform(0.3, 0.7) * w), int(rng.uniform(0.3, 0.7) * h))
            axes = (int(rng.uniform(0.1, 0.3) * w), int(rng.uniform(0.1, 0.3) * h))
            cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
            cv2.imwrite(str(out / sub / 'masks' / f'{real_name}_1.png'), mask)
            for k, split in enumerate(group, start=1):
                lut = np.clip(np.arange(256)[:, None] * rng.uniform(0.7, 1.3, size=3), 0, 255).astype(np.uint8)
                comp = real.copy()
                cv2.copyTo(cv2.LUT(real, lut[:, None, :]), mask, comp)
                name = f'{real_name}_1_{k}.jpg'
                cv2.imwrite(str(out / sub / 'composite_images' / name), comp, [cv2.IMWRITE_JPEG_QUALITY, 95])
                sub_lines[split].append(name)
                lines[split].append(f'{sub}/composite_images/{name}')
        for split, names in sub_lines.items():
            (out / sub / f'{sub}_{split}.txt').write_text(''.join(f'{x}\n' for x in names))
    for split, entries in lines.items():
        (out / f'IHD_{split}.txt').write_text(''.join(f'{x}\n' for x in entries))
    return out


def _photo(photo: np.ndarray, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of ``photo`` with the aspect of ``w``×``h``, resized to it; BGR for OpenCV."""
    ph, pw = photo.shape[:2]
    cw = min(pw, round(ph * w / h))
    ch = min(ph, round(cw * h / w))
    x, y = rng.integers(pw - cw + 1), rng.integers(ph - ch + 1)
    crop = np.ascontiguousarray(photo[y:y + ch, x:x + cw, ::-1])
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR if w > cw else cv2.INTER_AREA)


def _tiled(tile: np.ndarray, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """``tile`` repeated over ``h``×``w`` from a random offset."""
    th, tw = tile.shape[:2]
    dy, dx = rng.integers(th), rng.integers(tw)
    reps = (-(-(h + dy) // th), -(-(w + dx) // tw), 1)
    return np.ascontiguousarray(np.tile(tile, reps)[dy:dy + h, dx:dx + w])


def describe(root: Path) -> list[str]:
    """A Markdown table of the training split: composites, mean size and mean JPEG size per sub-dataset."""
    samples, _ = read_list(root, 'train')
    stats: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for s in samples:
        with open_image(s.comp) as im:  # the header only
            stats[s.subset].append((im.size[0], im.size[1], os.path.getsize(s.comp)))
    rows = ['| sub-dataset | composites | mean size (W×H) | mean composite file (MB) |', '|---|---:|---|---:|']
    for sub in SUBSETS:
        if stats[sub]:
            a = np.array(stats[sub], dtype=float).mean(axis=0)
            rows.append(f'| {sub} | {len(stats[sub])} | {a[0]:.0f}×{a[1]:.0f} | {a[2] / 1e6:.2f} |')
    return rows


# ----------------------------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """What one pass over the items gave."""

    wall_rate: float  # samples per second of wall-clock time
    cpu_rate: float  # samples per CPU-second of the process doing the loading
    cpu_ms: dict[str, list[float]]  # 0 workers: CPU milliseconds of each sample, by sub-dataset


def time_loader(root: Path, order: list[int], run: Run, crop_size: int) -> Timing:
    """One pass of the training loader over the items ``order`` of ``root``.

    With 0 workers the first item is not counted and CPU time is the main process's; with workers it is theirs
    over the whole pass (``getrusage`` of the joined children; their start-up included).
    """
    argv = ['--dataset_root', str(root), '--gpu_ids', '-1', '--crop_size', str(crop_size), '--display_id', '0',
            '--num_threads', str(run.workers), '--batch_size', str(run.batch)]
    opt = TrainOptions().parse(argv + (['--jpeg_draft'] if run.draft else []))
    loader = create_dataloader(opt, Subset(create_dataset(opt, 'train'), order), shuffle=False)
    torch.manual_seed(opt.seed)
    cpu_ms: dict[str, list[float]] = defaultdict(list)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    batches = iter(loader)
    next(batches)
    start, cpu_start = time.perf_counter(), time.process_time()
    cpu_prev, n = cpu_start, 0
    for batch in batches:
        cpu_now = time.process_time()
        n += len(batch['subset'])
        if run.batch == 1:
            cpu_ms[batch['subset'][0]].append(1000 * (cpu_now - cpu_prev))
        cpu_prev = cpu_now
    wall = time.perf_counter() - start
    del batches  # the workers exit and are joined
    if run.workers:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
        return Timing(n / wall, len(order) / cpu, {})
    return Timing(n / wall, n / (cpu_prev - cpu_start), cpu_ms)


def measure(copies: dict[str, Path], num_items: int, crop_size: int, workers: Sequence[int], batch_size: int,
            repeats: int) -> tuple[list[Run], dict[str, Timing], int]:
    """Time every configuration ``repeats`` times, alternating; the best run of each (by CPU rate)."""
    n = len(read_list(copies['original'], 'train')[0])
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:num_items or n].tolist()
    if len(order) < 2 * batch_size:
        raise ValueError(f'{copies["original"]}: at least {2 * batch_size} training items are needed (two batches), '
                         f'found {len(order)}')
    runs = [Run(name, draft, w, batch_size if w else 1) for name in copies for draft in (False, True) for w in workers
            if name == 'original' or not draft]
    best: dict[str, Timing] = {}
    for _ in range(repeats):
        for run in runs:
            t = time_loader(copies[run.data], order, run, crop_size)
            if run.label not in best or t.cpu_rate > best[run.label].cpu_rate:
                best[run.label] = t
    return runs, best, len(order)


def format_tables(runs: list[Run], best: dict[str, Timing]) -> list[str]:
    """The rate table (ratios of samples per CPU-second against the original with full decoding and the same
    workers) and CPU milliseconds per sample by sub-dataset (0 workers)."""
    rows = ['| data | decoding | loader workers | batch | samples/s | samples per CPU-second | vs original |',
            '|---|---|---:|---:|---:|---:|---:|']
    for run in runs:
        t, base = best[run.label], best[Run('original', False, run.workers, run.batch).label]
        rows.append(f'{run.label} {t.wall_rate:.1f} | {t.cpu_rate:.1f} | {t.cpu_rate / base.cpu_rate:.2f}× |')
    cols = [run for run in runs if run.workers == 0]
    if not cols:
        return rows
    rows += ['', '| CPU ms per sample | samples | ' + ' | '.join(f'{r.data} {"--jpeg_draft" if r.draft else "full"}'
                                                                for r in cols) + ' |',
             '|---|---:|' + '---:|' * len(cols)]
    for sub in SUBSETS:
        ms = [best[r.label].cpu_ms.get(sub, []) for r in cols]
        if ms[0]:
            rows.append(f'| {sub} | {len(ms[0])} | ' + ' | '.join(f'{np.mean(m):.1f}' for m in ms) + ' |')
    return rows


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows of it."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open('/proc/cpuinfo') as f:
        name = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), name)
    return name


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging(False)
    logging.getLogger().setLevel(logging.WARNING)
    torch.set_num_threads(1)  # 0 workers: the main process is one core, like a loader worker
    workers = [int(w) for w in args.workers.split(',') if w.strip()]

    with tempfile.TemporaryDirectory() as tmp:
        notes = []
        if args.dataset_root:
            copies = {'original': Path(args.dataset_root)}
            if args.cache_root:
                copies['cache'] = Path(args.cache_root)
        else:
            t0 = time.perf_counter()
            copies = {'original': make_iharmony4_like(Path(tmp) / 'iharmony4_like', args.total, args.scale)}
            notes.append(f'generated in {time.perf_counter() - t0:.0f} s')
            for side in args.max_sides:
                t0 = time.perf_counter()
                copies[f'cache {side}'] = Path(tmp) / f'cache_{side}'
                prepare_dataset.prepare(copies['original'], copies[f'cache {side}'], max_side=side,
                                        workers=os.cpu_count() or 1)
                notes.append(f'cache {side} (prepare_dataset.py --max_side {side} --workers {os.cpu_count()}) '
                             f'written in {time.perf_counter() - t0:.1f} s')
        tables = {name: describe(path) for name, path in copies.items()}
        load = os.getloadavg()[0]
        runs, best, n = measure(copies, args.num_items, args.crop_size, workers, args.batch_size, args.repeats)
        notes.append(f'1-minute load average {load:.1f} before, {os.getloadavg()[0]:.1f} after')
    import PIL
    from PIL import features
    print(f'{time.strftime("%Y-%m-%d")}; CPU {cpu_name()}, {os.cpu_count()} logical cores; torch {torch.__version__}; '
          f'Pillow {PIL.__version__} '
          f'(libjpeg-turbo {features.version("libjpeg_turbo")})')
    print(f'{n} training items of {args.dataset_root or "a generated iHarmony4-shaped dataset"}, crop '
          f'{args.crop_size}, best of {args.repeats} alternating runs; {"; ".join(notes)}\n')
    for name, rows in tables.items():
        print(f'{name}:\n' + '\n'.join(rows) + '\n')
    print('\n'.join(format_tables(runs, best)))
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
