"""A ready check of the fast training recipe on one GPU: training speed, peak memory, loader speed, a short run.

Prints a Markdown table of training samples per second, as train.py builds and steps the model (``set_input`` +
``optimize_parameters`` on 256×256 batches already on the device, timed with ``torch.cuda.synchronize``):

* ``released``: fp32, batch 1, the released setting;
* ``recipe``: bf16 autocast, batch 16 and 64, channels-last, fused Adam and per-image normalization, without
  and with ``torch.compile``;

with the peak memory of each (``torch.cuda.max_memory_allocated``), then the training loader's samples per
second with ``--workers`` workers from a ``scripts/prepare_dataset.py`` cache of a generated iHarmony4-shaped
dataset. Last, a short bf16 training of the recipe on that cache, whose L1 loss must fall. Targets: the recipe
at batch 16 at least 5× the samples/s of the released setting, and the loader faster than the recipe.

Without a GPU (or with ``--cpu``) the same steps run small on the CPU (ngf 8, fewer steps, a smaller dataset)
and say so; ``--quick`` makes them smaller still (batches of 2 and 4, no torch.compile). The exit status is 1
when a configuration failed or the loss did not fall, 2 on bad input.

    bash scripts/gpu_check.sh                     # one GPU: within 8 minutes
    bash scripts/gpu_check.sh --quick             # the CPU mode of the tests, under a minute on 2 cores
"""
from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch.utils.data import Subset

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / 'scripts'):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import benchmark_loading  # noqa: E402
import prepare_dataset  # noqa: E402
from data import create_dataloader, create_dataset  # noqa: E402
from models import create_model  # noqa: E402
from options.train_options import TrainOptions  # noqa: E402
from util.cli import run_main, setup_logging  # noqa: E402

logger = logging.getLogger('gpu_check')

LOSS_WINDOW = 0.2  # the loss falls when the mean L1 of the last 20% of the iterations is below that of the first
LOSS_FALL = 0.9  # ... times this
TIMING_BUDGET_S = 300  # configurations not started by then are skipped, so that a GPU check ends within 8 minutes


@dataclass(frozen=True)
class Scale:
    """How large the check runs: the released widths on a GPU, small on the CPU."""

    device: str
    ngf: int
    batches: tuple[int, int]  # the recipe's two batch sizes
    steps: int  # timed steps per configuration (the released setting runs 4 times as many)
    warmup: int
    compile: bool
    total: int  # training composites of the generated dataset
    image_scale: float  # image sizes of the generated dataset, times this
    cache_side: int
    loader_samples: int
    train_iters: int
    train_batch: int
    train_lr: float  # a small network learns fast enough to show a falling loss in a few iterations at 1e-3


def choose_scale(cpu: bool, quick: bool) -> Scale:
    if not cpu:
        return Scale('cuda', 64, (16, 64), 10, 3, True, 80, 1.0, 1024, 2000, 300, 16, 2e-4)
    if quick:
        return Scale('cpu', 8, (2, 4), 1, 1, False, 8, 0.25, 256, 24, 20, 2, 1e-3)
    return Scale('cpu', 8, (8, 16), 2, 1, True, 24, 0.5, 512, 96, 60, 4, 1e-3)


@dataclass
class Row:
    """One line of the table."""

    name: str
    precision: str
    batch: int
    flags: str
    samples_per_s: float = math.nan
    peak_mib: float = math.nan
    error: str = ''
    notes: list[str] = field(default_factory=list)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--cpu', action='store_true', help='the CPU mode even when a GPU is available')
    p.add_argument('--quick', action='store_true', help='the CPU mode at its smallest (the tests run it)')
    p.add_argument('--gpu', type=int, default=0, help='which GPU')
    p.add_argument('--workers', type=int, default=min(16, os.cpu_count() or 1), help='loader worker processes')
    p.add_argument('--verbose', action='store_true', help='debug logging and full tracebacks')
    args = p.parse_args(argv)
    if args.workers < 0:
        raise ValueError(f'--workers {args.workers}: expected 0 or more')
    return args


# ----------------------------------------------------------------------------------------------- the model
def model_argv(scale: Scale, gpu: int, batch: int, recipe: bool, compile_: bool, extra: Sequence[str] = ()
               ) -> tuple[list[str], list[str]]:
    """train.py's arguments for one configuration, and the names of the recipe flags that were applied."""
    argv = ['--gpu_ids', str(gpu) if scale.device == 'cuda' else '-1', '--ngf', str(scale.ngf), '--ndf',
            str(scale.ngf), '--batch_size', str(batch), '--crop_size', '256', '--display_id', '0',
            '--checkpoints_dir', tempfile.gettempdir(), '--name', 'gpu_check', *extra]
    applied: list[str] = []
    if recipe:
        argv += ['--amp', 'bf16', '--channels_last', '--fused_adam', '--per_image_norm']
        applied += ['channels_last', 'fused_adam', 'per_image_norm']
    if compile_:
        argv.append('--compile')
        applied.append('compile')
    return argv, applied


def random_batch(batch: int, seed: int = 0) -> dict:
    """A batch like the loader's: real images, a rectangular foreground, composites with its colours changed."""
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(batch, 3, 256, 256, generator=g) * 2 - 1
    mask = torch.zeros(batch, 1, 256, 256)
    mask[:, :, 64:192, 32:160] = 1
    comp = torch.where(mask.bool(), (real * 0.7 + 0.2).clamp(-1, 1), real)
    return {'comp': comp, 'real': real, 'mask': mask, 'index': torch.arange(batch),
            'comp_path': [f'{i}.jpg' for i in range(batch)]}


def time_training(scale: Scale, gpu: int, row: Row, recipe: bool, compile_: bool) -> None:
    """Fill ``row`` with the training samples/s and peak memory of one configuration."""
    argv, _ = model_argv(scale, gpu, row.batch, recipe, compile_)
    cuda = scale.device == 'cuda'
    torch.manual_seed(0)
    model = create_model(TrainOptions().parse(argv))
    model.setup()
    batch = random_batch(row.batch)
    if cuda:
        batch = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    steps = scale.steps * (2 if row.batch == 1 else 1)
    for _ in range(scale.warmup + (2 if compile_ else 0)):
        model.set_input(batch)
        model.optimize_parameters()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        model.set_input(batch)
        model.optimize_parameters()
    sync()
    row.samples_per_s = steps * row.batch / (time.perf_counter() - start)
    if cuda:
        row.peak_mib = torch.cuda.max_memory_allocated() / 2 ** 20


def training_rows(scale: Scale, gpu: int) -> list[Row]:
    """The released setting and the recipe at both batch sizes, without and with torch.compile."""
    rows = [Row('released', 'fp32', 1, '')]
    configs: list[tuple[Row, bool, bool]] = [(rows[0], False, False)]
    for compile_ in (False, True):
        for b in scale.batches:
            rows.append(Row('recipe', 'bf16', b, ''))
            configs.append((rows[-1], True, compile_))
    start = time.perf_counter()
    for row, recipe, compile_ in configs:
        row.flags = ', '.join(model_argv(scale, gpu, row.batch, recipe, compile_)[1]) or '–'
        if compile_ and not scale.compile:
            row.error = 'skipped (--quick)'
            continue
        if time.perf_counter() - start > TIMING_BUDGET_S:
            row.error = f'skipped (over {TIMING_BUDGET_S} s of timing)'
            continue
        logger.info('timing %s, batch %d%s', row.name, row.batch, ', compiled' if compile_ else '')
        try:
            time_training(scale, gpu, row, recipe, compile_)
        except torch.cuda.OutOfMemoryError:
            row.error = 'out of memory'
        except Exception as exc:  # one failed configuration must not hide the others
            row.error = f'failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ""}'
            logger.debug('configuration failed', exc_info=True)
        finally:
            gc.collect()  # the failed configuration's model and activations too
            if scale.device == 'cuda':
                torch.cuda.empty_cache()
    return rows


# ----------------------------------------------------------------------------------------------- data
def training_options(cache: Path, scale: Scale, gpu: int, batch: int, workers: int,
                     lr: float = 2e-4) -> argparse.Namespace:
    """The recipe's options on the cache, as train.py would parse them."""
    argv, _ = model_argv(scale, gpu, batch, recipe=True, compile_=False,
                         extra=['--dataset_root', str(cache), '--num_threads', str(workers), '--lr', str(lr)])
    return TrainOptions().parse(argv)


def repeated(n: int, samples: int, seed: int = 0) -> list[int]:
    """``samples`` item indices of a dataset of ``n``: shuffled passes, so that one loader pass is long enough."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randperm(n, generator=g) for _ in range(-(-samples // n))])[:samples].tolist()


def loader_rate(cache: Path, scale: Scale, gpu: int, workers: int) -> float:
    """Samples/s of the training loader on the cache with ``workers`` workers (the first batch not counted)."""
    opt = training_options(cache, scale, gpu, scale.batches[0], workers)
    dataset = create_dataset(opt, 'train')
    loader = create_dataloader(opt, Subset(dataset, repeated(len(dataset), scale.loader_samples)), shuffle=False)
    batches = iter(loader)
    next(batches)
    start, n = time.perf_counter(), 0
    for batch in batches:
        n += batch['comp'].shape[0]
    return n / (time.perf_counter() - start)


def short_training(cache: Path, scale: Scale, gpu: int, workers: int) -> list[float]:
    """``scale.train_iters`` iterations of the recipe (bf16) on the cache; the L1 loss of each."""
    opt = training_options(cache, scale, gpu, scale.train_batch, workers, scale.train_lr)
    dataset = create_dataset(opt, 'train')
    order = repeated(len(dataset), scale.train_iters * scale.train_batch, seed=1)
    loader = create_dataloader(opt, Subset(dataset, order), shuffle=False, drop_last=True)
    torch.manual_seed(0)
    model = create_model(opt)
    model.setup()
    losses = []
    for batch in loader:
        model.set_input(batch)
        model.optimize_parameters()
        losses.append(model.get_current_losses()['L1'])
    return losses


def loss_fell(losses: Sequence[float]) -> tuple[bool, float, float]:
    """Whether the mean L1 of the last iterations is below ``LOSS_FALL`` times that of the first ones."""
    k = max(1, int(len(losses) * LOSS_WINDOW))
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    return math.isfinite(last) and last < LOSS_FALL * first, first, last


# ----------------------------------------------------------------------------------------------- report
def format_table(rows: list[Row], loader: tuple[str, int, float]) -> list[str]:
    base = rows[0].samples_per_s
    lines = ['| configuration | precision | batch | flags | samples/s | vs released | peak memory (MiB) |',
             '|---|---|---:|---|---:|---:|---:|']
    for r in rows:
        if r.error:
            lines.append(f'| {r.name} | {r.precision} | {r.batch} | {r.flags} | {r.error} | | |')
            continue
        mem = f'{r.peak_mib:.0f}' if math.isfinite(r.peak_mib) else '– (CPU)'
        lines.append(f'| {r.name} | {r.precision} | {r.batch} | {r.flags} | {r.samples_per_s:.1f} | '
                     f'{r.samples_per_s / base:.2f}× | {mem} |')
    label, batch, rate = loader
    lines.append(f'| {label} | – | {batch} | – | {rate:.1f} | | |')
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    start = time.perf_counter()
    cpu = args.cpu or args.quick or not torch.cuda.is_available()
    scale = choose_scale(cpu, args.quick)
    if cpu:
        reason = 'asked for' if (args.cpu or args.quick) else 'no GPU: CUDA is not available'
        print(f'CPU mode ({reason}): the steps run small (ngf {scale.ngf}, recipe batches {scale.batches[0]} and '
              f'{scale.batches[1]}); the '
              'numbers are this CPU\'s, not a GPU\'s, and the targets apply to GPUs')
    else:
        if args.gpu >= torch.cuda.device_count():
            raise ValueError(f'--gpu {args.gpu}: this machine has {torch.cuda.device_count()} GPU(s)')
        print(f'GPU mode: {torch.cuda.get_device_name(args.gpu)}, torch {torch.__version__}, CUDA '
              f'{torch.version.cuda}, ngf {scale.ngf}')
    rows = training_rows(scale, args.gpu)
    with tempfile.TemporaryDirectory(prefix='gpu_check_') as tmp:
        logger.info('generating an iHarmony4-shaped dataset and its cache')
        data = benchmark_loading.make_iharmony4_like(Path(tmp) / 'data', scale.total, scale.image_scale)
        cache = Path(tmp) / 'cache'
        prepare_dataset.prepare(data, cache, max_side=scale.cache_side, workers=max(1, args.workers))
        logger.info('timing the loader')
        rate = loader_rate(cache, scale, args.gpu, args.workers)
        logger.info('short training')
        losses = short_training(cache, scale, args.gpu, args.workers)
    loader = (f'loader (cache --max_side {scale.cache_side}, {args.workers} workers)', scale.batches[0], rate)
    print('\n'.join(format_table(rows, loader)) + '\n')

    recipe = [r for r in rows if r.name == 'recipe' and not r.error]
    b16 = next((r for r in recipe if r.batch == scale.batches[0]), None)
    if b16 is not None and not rows[0].error:
        ratio = b16.samples_per_s / rows[0].samples_per_s
        print(f'recipe at batch {b16.batch}: {ratio:.2f}× the released setting (target on a GPU: at least 5×): '
              f'{"met" if ratio >= 5 else "not met"}')
    if recipe:
        fastest = max(recipe, key=lambda r: r.samples_per_s)
        verdict = 'not the bottleneck' if rate >= fastest.samples_per_s else 'the bottleneck'
        print(f'loader: {rate:.1f} samples/s against {fastest.samples_per_s:.1f} for the fastest recipe row '
              f'(batch {fastest.batch}{", compiled" if "compile" in fastest.flags else ""}): {verdict}')
    fell, first, last = loss_fell(losses)
    print(f'short bf16 training: {len(losses)} iterations of batch {scale.train_batch} at lr {scale.train_lr:g}, '
          f'mean L1 of the first and '
          f'last {LOSS_WINDOW:.0%}: {first:.4f} -> {last:.4f}: {"fell" if fell else "DID NOT FALL"}')
    print(f'total time: {time.perf_counter() - start:.0f} s')
    failed = [r for r in rows if r.error.startswith('failed')]  # out of memory and skipped rows are reported only
    for r in failed:
        print(f'error: {r.name} batch {r.batch} ({r.flags}) {r.error}', file=sys.stderr)
    return 1 if failed or not fell else 0


if __name__ == '__main__':
    sys.exit(run_main(main))
