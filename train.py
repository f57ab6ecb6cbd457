"""Train BargainNet (or any registered model) on iHarmony4.

The released command keeps working::

    python train.py --name <exp> --model bargainnet --dataset_mode iharmony4 --is_train 1 --norm batch \\
      --preprocess resize_and_crop --gpu_ids 0 --save_epoch_freq 1 --input_nc 20 --lr 1e-4 --beta1 0.9 \\
      --lr_policy step --lr_decay_iters 6574200 --netG s2ad --dataset_root <iHarmony4>

Several GPUs or machines: ``torchrun --nproc_per_node N train.py ...`` (DistributedDataParallel, one process
per GPU, ``--batch_size`` per process). Each save writes ``<tag>_train_state.pth``, everything a resumed run
needs in one file, and exports the released-format ``<tag>_net_G.pth`` / ``<tag>_net_E.pth`` beside it.
``--continue_train`` resumes exactly from the training state, or from the network files alone (released
weights, fine-tuning) with fresh optimizers.

Counting: an *iteration* is one optimizer step (``--batch_size`` samples in each process). With one process
and batch size 1 it is one sample, as in the released code; ``--print_freq``, ``--display_freq``,
``--update_html_freq``, ``--save_latest_freq`` and ``--max_iters`` count iterations. Learning rates change
once per epoch, as in the released code.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import signal
import sys
import time
from typing import Any, Optional, Sequence

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import data
from data.sampler import ResumableSampler, SeededItems
from models import create_model
from models.base_model import BaseModel
from models.factory import checkpoint_paths, checkpoint_tag
from options.train_options import TrainOptions
from util import distributed
from util.cli import run_main, setup_logging
from util.distributed import DistContext, StopRequest
from util.train_state import (load_train_state, remove_stale_temporaries, rng_state, save_train_state,
                              seed_everything, set_rng_state, train_state_path)
from util.visualizer import Visualizer, require_tensorboard

logger = logging.getLogger('train')


class NonFiniteLossError(ValueError):
    """A loss became NaN or infinite; the run stops without saving the bad weights."""


@dataclasses.dataclass
class Progress:
    """Where training stands: the epoch to run next, iterations of it done and in all, the epoch's loss sums."""

    epoch: int
    epoch_iter: int = 0
    total_iters: int = 0
    loss_sum: float = 0.0  # for --lr_policy plateau
    loss_count: int = 0


@dataclasses.dataclass
class Timing:
    """Seconds spent waiting for data and computing since the last loss line."""

    data: float = 0.0
    compute: float = 0.0
    iters: int = 0


# ============================================================================ resuming and saving
def find_resume_state(opt: argparse.Namespace) -> Optional[tuple[str, dict[str, Any]]]:
    """What ``--continue_train`` resumes from: ``(path, state)`` of the training state, or None for weights alone.

    Raises:
        FileNotFoundError: neither the training state nor both network files of ``--epoch`` exist.
    """
    folder, tag = os.path.join(opt.checkpoints_dir, opt.name), checkpoint_tag(opt.epoch, opt.load_iter)
    path = train_state_path(folder, tag)
    if os.path.isfile(path):
        return path, load_train_state(path)
    try:
        checkpoint_paths(folder, tag)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f'--continue_train: no {os.path.basename(path)}, and {exc}') from None
    return None


def restore(model: BaseModel, opt: argparse.Namespace, ctx: DistContext, resume: Optional[tuple[str, dict]],
            iters_per_epoch: int) -> Progress:
    """Load the weights (and, from a training state, everything else) that ``--continue_train`` found."""
    tag = checkpoint_tag(opt.epoch, opt.load_iter)
    if resume is None:
        model.load_networks(tag)
        logger.info('no training state %s: continuing from the network files with fresh optimizers and schedulers, '
                    'from epoch %d', train_state_path(model.save_dir, tag), opt.epoch_count)
        return Progress(epoch=opt.epoch_count)
    path, state = resume
    run, progress = state['run'], Progress(**state['progress'])
    if not ctx.is_main:  # rank 0 carries the epoch's loss sums of all processes
        progress.loss_sum, progress.loss_count = 0.0, 0
    old_global, new_global = run['batch_size'] * run['world_size'], opt.batch_size * ctx.world_size
    if (old_global, run['seed'], run['serial_batches']) != (new_global, opt.seed, bool(opt.serial_batches)):
        progress.epoch_iter = min(iters_per_epoch, progress.epoch_iter * old_global // new_global)
        logger.warning('%s was saved with --seed %s, %d samples per iteration, serial_batches %s; this run differs, '
                       'so its data order differs from an uninterrupted run (resuming after %d iterations of epoch '
                       '%d)', path, run['seed'], old_global, run['serial_batches'], progress.epoch_iter, progress.epoch)
    elif progress.epoch_iter > iters_per_epoch:
        raise ValueError(f'{path}: {progress.epoch_iter} iterations of epoch {progress.epoch} were done but an epoch '
                         f'now has {iters_per_epoch}: the training set changed')
    model.load_training_state(state, path)
    if len(state['rng']) == ctx.world_size:
        set_rng_state(state['rng'][ctx.rank], ctx.device)
    else:
        logger.warning('%s holds the random states of %d processes, this run has %d: reseeding', path,
                       len(state['rng']), ctx.world_size)
        seed_everything(opt.seed + ctx.rank + progress.total_iters)
    logger.info('resumed from %s: epoch %d, %d iterations into it, %d in all, learning rate %.3g', path,
                progress.epoch, progress.epoch_iter, progress.total_iters, model.current_lrs()[0])
    return progress


def save(model: BaseModel, opt: argparse.Namespace, ctx: DistContext, progress: Progress, tags: Sequence[str]) -> None:
    """Write ``<tag>_train_state.pth`` and export ``<tag>_net_*.pth`` for each tag, each file atomically.

    Every process calls this (their random states are gathered); rank 0 writes.
    """
    rngs = ctx.all_gather(rng_state(ctx.device))
    loss_sum, loss_count = ctx.all_reduce([progress.loss_sum, progress.loss_count])  # rank 0 resumes with both
    if not ctx.is_main:
        return
    totals = {'loss_sum': loss_sum, 'loss_count': int(loss_count)}
    state = {'progress': {**dataclasses.asdict(progress), **totals}, 'rng': rngs, **model.training_state(),
             'run': {'epoch_count': opt.epoch_count, 'seed': opt.seed, 'batch_size': opt.batch_size,
                     'world_size': ctx.world_size, 'serial_batches': bool(opt.serial_batches)}}
    for tag in tags:
        save_train_state(state, train_state_path(model.save_dir, tag))
        model.save_networks(tag)
    logger.info('saved %s (epoch %d, %d iterations into it, %d in all) in %s', ' and '.join(tags), progress.epoch,
                progress.epoch_iter, progress.total_iters, model.save_dir)


def latest_tags(opt: argparse.Namespace, progress: Progress, *more: str) -> list[str]:
    """``latest``, then ``more``, then ``iter_<n>`` with ``--save_by_iter``."""
    return ['latest', *more] + ([f'iter_{progress.total_iters}'] if opt.save_by_iter else [])


def report(vis: Visualizer, model: BaseModel, opt: argparse.Namespace, progress: Progress, losses: dict[str, float],
           timing: Timing, iters_per_epoch: int) -> None:
    """Rank 0: the loss line, the plots and the HTML page at their frequencies."""
    if progress.total_iters % opt.print_freq == 0:
        samples = max(1, timing.iters * opt.batch_size)
        vis.print_current_losses(progress.epoch, progress.epoch_iter, losses, timing.compute / samples,
                                 timing.data / samples)
        vis.plot_current_losses(progress.epoch, progress.epoch_iter / iters_per_epoch, losses,
                                step=progress.total_iters, learning_rates=model.learning_rates())
    if progress.total_iters % opt.display_freq == 0:
        vis.display_current_results(model.get_current_visuals(), progress.epoch,
                                    save_result=progress.total_iters % opt.update_html_freq == 0)


# ============================================================================ the loop
def train(opt: argparse.Namespace, ctx: DistContext, resume: Optional[tuple[str, dict]] = None) -> int:
    """Train until the last epoch, ``--max_iters``, a signal or a non-finite loss; return the exit status."""
    dataset = data.create_dataset(opt, 'train')
    sampler = ResumableSampler(len(dataset), shuffle=not opt.serial_batches, seed=opt.seed, rank=ctx.rank,
                               world_size=ctx.world_size)
    loader = data.create_dataloader(opt, SeededItems(dataset), shuffle=False, sampler=sampler)
    iters_per_epoch = math.ceil(sampler.shard_size / opt.batch_size)
    logger.info('training images: %d; %d iterations per epoch', len(dataset), iters_per_epoch)
    model = create_model(opt)
    model.setup()
    progress = restore(model, opt, ctx, resume, iters_per_epoch) if opt.continue_train else Progress(opt.epoch_count)
    # the progress of the last save, for the end of the run and the message after a NaN
    saved = dataclasses.replace(progress) if resume and resume[0].endswith('latest_train_state.pth') else None
    last_epoch = opt.niter + opt.niter_decay
    if progress.epoch > last_epoch or (opt.max_iters and progress.total_iters >= opt.max_iters):
        logger.info('nothing to do: training already reached epoch %d of %d, %d iterations (--max_iters %d)',
                    progress.epoch - 1, last_epoch, progress.total_iters, opt.max_iters)
        return 0
    vis = Visualizer(opt, iters_per_epoch) if ctx.is_main else None
    samples_per_iter = opt.batch_size * ctx.world_size
    stopping = False
    with StopRequest() as stop, logging_redirect_tqdm():
        try:
            while progress.epoch <= last_epoch and not stopping:
                epoch = progress.epoch
                sampler.set_epoch(epoch, start=progress.epoch_iter * opt.batch_size)
                if vis is not None:
                    vis.reset()
                bar = tqdm(total=iters_per_epoch, initial=progress.epoch_iter, desc=f'epoch {epoch}/{last_epoch}',
                           unit='it', dynamic_ncols=True, disable=(not ctx.is_main) or None)
                timing, speed = Timing(), None  # speed: samples/s in all processes, smoothed
                fetch_start = last_done = time.perf_counter()
                for batch in loader:
                    step_start = time.perf_counter()
                    model.set_input(batch)
                    model.optimize_parameters()
                    losses = model.get_current_losses()  # floats: waits for the step to finish
                    total = sum(losses.values())
                    now = time.perf_counter()
                    timing.data += step_start - fetch_start
                    timing.compute += now - step_start
                    timing.iters += 1
                    progress.epoch_iter += 1
                    progress.total_iters += 1

                    # every process agrees on a bad loss or a stop request, so that all stop at this iteration
                    bad, stop_now = ctx.all_reduce([not math.isfinite(total), stop.signum is not None], 'max')
                    if bad:
                        detail = ', '.join(f'{k}: {v}' for k, v in losses.items()) if not math.isfinite(total) \
                            else 'in another process'
                        last = 'none (no checkpoint was saved in this run)' if saved is None else (
                            f'{train_state_path(model.save_dir, "latest")} (iteration {saved.total_iters}, '
                            f'epoch {saved.epoch})')
                        kind = 'nan' if math.isnan(total) else 'infinite'
                        raise NonFiniteLossError(f'loss became {kind} at iteration {progress.total_iters} (epoch '
                                                 f'{epoch}); the last good checkpoint is {last}; the weights of this '
                                                 f'iteration were not saved ({detail})')
                    progress.loss_sum += total
                    progress.loss_count += 1

                    if vis is not None:
                        rate = samples_per_iter / max(now - last_done, 1e-9)
                        speed = rate if speed is None else 0.9 * speed + 0.1 * rate
                        last_done = now
                        bar.set_postfix({**{k: f'{v:.3f}' for k, v in losses.items()}, 'samples/s': f'{speed:.1f}'},
                                        refresh=False)
                        bar.update(1)
                        report(vis, model, opt, progress, losses, timing, iters_per_epoch)
                    if progress.total_iters % opt.print_freq == 0:
                        timing = Timing()
                    if progress.total_iters % opt.save_latest_freq == 0:
                        save(model, opt, ctx, progress, latest_tags(opt, progress))
                        saved = dataclasses.replace(progress)
                    if stop_now and stop.signum is None:
                        stop.signum = signal.SIGTERM  # another process was asked to stop
                    stopping = bool(stop_now) or bool(opt.max_iters and progress.total_iters >= opt.max_iters)
                    if stopping:
                        break
                    fetch_start = time.perf_counter()  # from here until the next batch arrives is loading
                bar.close()

                if progress.epoch_iter >= iters_per_epoch:  # the epoch is complete: step the schedulers
                    loss_sum, count = ctx.all_reduce([progress.loss_sum, progress.loss_count])
                    lr = model.update_learning_rate(loss_sum / max(count, 1))
                    logger.info('end of epoch %d of %d: learning rate %.7f', epoch, last_epoch, lr)
                    progress = Progress(epoch + 1, 0, progress.total_iters)
                    if epoch % opt.save_epoch_freq == 0:
                        save(model, opt, ctx, progress, latest_tags(opt, progress, str(epoch)))
                        saved = dataclasses.replace(progress)
            if saved != progress:
                save(model, opt, ctx, progress, latest_tags(opt, progress))
        finally:
            if vis is not None:
                vis.close()
    if stop.signum is not None:
        logger.warning('stopped by %s; resume with --continue_train', signal.Signals(stop.signum).name)
        return stop.exit_status
    logger.info('done: %d iterations; weights in %s', progress.total_iters, model.save_dir)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the options, check what a resume needs, set up processes and seeds, and train."""
    argv = sys.argv[1:] if argv is None else list(argv)
    setup_logging('--verbose' in argv)  # before parsing, which may log the device choice
    options = TrainOptions()
    opt = options.parse(argv)
    if opt.tensorboard:
        require_tensorboard()
    ctx = distributed.setup(opt)
    try:
        # before anything is written: a mistyped --name must not leave a new run folder behind
        resume = find_resume_state(opt) if opt.continue_train else None
        if resume is not None and resume[1]['run']['epoch_count'] != opt.epoch_count:
            # the linear schedule reads opt.epoch_count: the run's own value keeps the resume exact
            logger.warning('--epoch_count %d is not used: %s continues the run that began with --epoch_count %d and '
                           'keeps its learning rate schedule (to restart the schedule from these weights with fresh '
                           'optimizers, move that file away)', opt.epoch_count, resume[0],
                           resume[1]['run']['epoch_count'])
            opt.epoch_count = int(resume[1]['run']['epoch_count'])
        seed_everything(opt.seed + ctx.rank)
        if ctx.is_main:
            for path in remove_stale_temporaries(os.path.join(opt.checkpoints_dir, opt.name)):
                logger.info('removed %s, left by a run killed while saving', path)
            logger.info('%s (all options: %s)', options.summary(opt), options.save(opt))
        return train(opt, ctx, resume)
    finally:
        ctx.close()


if __name__ == '__main__':
    sys.exit(run_main(main))
