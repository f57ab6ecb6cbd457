"""Train BargainNet (or any registered model) on iHarmony4.

The released command keeps working::

    python train.py --name <exp> --model bargainnet --dataset_mode iharmony4 --is_train 1 --norm batch \\
      --preprocess resize_and_crop --gpu_ids 0 --save_epoch_freq 1 --input_nc 20 --lr 1e-4 --beta1 0.9 \\
      --lr_policy step --lr_decay_iters 6574200 --netG s2ad --dataset_root <iHarmony4>

Several GPUs or machines: ``torchrun --nproc_per_node N train.py ...`` (DistributedDataParallel, one process
per GPU, ``--batch_size`` per process). ``--continue_train`` resumes exactly from ``<tag>_train_state.pth``.

Counting: an *iteration* is one optimizer step (``--batch_size`` samples in each process). With one process
and batch size 1 it is one sample, as in the released code; ``--print_freq``, ``--display_freq``,
``--update_html_freq``, ``--save_latest_freq`` and ``--max_iters`` count iterations.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.distributed as torch_dist
from torch.utils.data import Dataset, Sampler, get_worker_info
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import data
from models import create_model
from models.base_model import BaseModel
from models.checkpoint import (atomic_save, file_sha256, load_train_state_file, pending_path, plain_state_dict,
                               state_matches, train_state_path)
from options.train_options import TrainOptions
from util.cli import run_main, setup_logging
from util.visualizer import Visualizer

logger = logging.getLogger('train')

STATE_FORMAT = 1
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


class NonFiniteLossError(ValueError):
    """A loss became NaN or infinite; the run stops without saving the bad weights."""


# ============================================================================ processes and devices
@dataclasses.dataclass
class DistContext:
    """Where this process stands: one process, or one rank of a torchrun job."""

    enabled: bool = False
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device('cpu'))

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, plots and saves."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()


def under_torchrun() -> bool:
    """True when torchrun (or another launcher of torch.distributed) started this process."""
    return all(k in os.environ for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'))


def setup_distributed(opt: argparse.Namespace) -> DistContext:
    """Choose this process's device and join the process group when started by torchrun.

    Mapping of ``--gpu_ids`` under torchrun: with several ids, local process ``i`` uses the ``i``-th id (give
    exactly ``--nproc_per_node`` ids); with one id ``g``, local processes use ``g, g+1, ...`` (so the README's
    ``--gpu_ids 0`` means GPUs ``0..N-1``); with ``-1`` (or no CUDA) every process runs on the CPU with Gloo.
    ``opt.gpu_ids`` is set to this process's one GPU before the model is created, and the choice is logged.

    Raises:
        ValueError: several GPU ids without torchrun, or ids that do not fit the processes or the machine.
    """
    ids = list(opt.gpu_ids)
    if not under_torchrun():
        if len(ids) > 1:
            raise ValueError(f'--gpu_ids {",".join(map(str, ids))} lists {len(ids)} GPUs: train.py runs one process '
                             f'per GPU, so start it with `torchrun --nproc_per_node {len(ids)} train.py <the same '
                             f'options>` (add --nnodes, --node_rank, --master_addr for several machines)')
        return DistContext(device=torch.device('cuda', ids[0]) if ids else torch.device('cpu'))
    rank, world = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
    local_rank = int(os.environ['LOCAL_RANK'])
    local_world = int(os.environ.get('LOCAL_WORLD_SIZE', world))
    if ids:
        if len(ids) == 1:
            gpu = ids[0] + local_rank
        elif len(ids) == local_world:
            gpu = ids[local_rank]
        else:
            raise ValueError(f'--gpu_ids {",".join(map(str, ids))} lists {len(ids)} GPUs but torchrun started '
                             f'{local_world} processes on this machine: give one id per process, or one id to use '
                             'consecutive GPUs from it')
        if gpu >= torch.cuda.device_count():
            raise ValueError(f'local process {local_rank} would use cuda:{gpu} (from --gpu_ids '
                             f'{",".join(map(str, ids))}) but this machine has {torch.cuda.device_count()} GPU(s)')
        torch.cuda.set_device(gpu)
        device, backend = torch.device('cuda', gpu), 'nccl'
        opt.gpu_ids = [gpu]
    else:
        device, backend = torch.device('cpu'), 'gloo'
    torch_dist.init_process_group(backend=backend)
    logger.info('DistributedDataParallel: %d processes (%s); rank %d uses %s; --batch_size %d per process, %d in all',
                world, backend, rank, device, opt.batch_size, opt.batch_size * world)
    return DistContext(True, rank, world, local_rank, device)


def all_reduce(values: Sequence[float], ctx: DistContext, op: str = 'sum') -> list[float]:
    """Element-wise ``op`` ('sum' or 'max') of ``values`` over all processes (the values themselves without DDP)."""
    if not ctx.enabled:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=ctx.device)
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX if op == 'max' else torch_dist.ReduceOp.SUM)
    return t.tolist()


# ============================================================================ random number generators
def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict[str, Any]:
    """The global generators' states as tensors and numbers (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        'torch': torch.get_rng_state(),
        'numpy': {'keys': torch.from_numpy(np_state[1].astype(np.int64)), 'pos': int(np_state[2]),
                  'has_gauss': int(np_state[3]), 'cached_gaussian': float(np_state[4])},
        'python': {'version': int(py_version), 'state': torch.tensor(py_state, dtype=torch.int64),
                   'gauss_next': py_gauss},
    }
    if device.type == 'cuda':
        state['cuda'] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state['torch'])
    n = state['numpy']
    np.random.set_state(('MT19937', n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'],
                         n['cached_gaussian']))
    p = state['python']
    random.setstate((p['version'], tuple(int(v) for v in p['state'].tolist()), p['gauss_next']))
    if device.type == 'cuda' and 'cuda' in state:
        torch.cuda.set_rng_state(state['cuda'], device)


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentation in one epoch: fixed by (seed, epoch, index) alone."""
    return int(np.random.SeedSequence([seed % 2 ** 63, epoch, index]).generate_state(1)[0])


# ============================================================================ data order
class ResumableSampler(Sampler):
    """One epoch's sample order, fixed by ``(seed, epoch)``, sharded over processes, started at an offset.

    Yields ``(index, seed)`` pairs for :class:`SeededItems`. The order is a permutation drawn from
    ``seed + epoch`` (or the list order with ``--serial_batches``), padded to a multiple of the number of
    processes like ``DistributedSampler``; process ``rank`` takes every ``world_size``-th index. A resumed
    epoch starts after the samples already trained on, so nothing is decoded twice.
    """

    def __init__(self, size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if size < 1:
            raise ValueError('the training set is empty')
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    @property
    def shard_size(self) -> int:
        """Samples per process and epoch."""
        return math.ceil(self.size / self.world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Choose the epoch and how many of this process's samples of it to skip."""
        self.epoch, self.start = epoch, start

    def shard(self) -> list[int]:
        """This process's indices of the current epoch, from the beginning."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        total = self.shard_size * self.world_size
        while len(order) < total:
            order += order[:total - len(order)]
        return order[self.rank:total:self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.shard()[self.start:]:
            yield index, item_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return max(0, self.shard_size - self.start)


class SeededItems(Dataset):
    """Wraps a dataset so that item ``(index, seed)`` is drawn with every global generator seeded by ``seed``.

    Augmentations then depend on the sample and the epoch only, not on which worker loads them or on what
    was loaded before, so a resumed epoch sees the same crops and flips. In the main process
    (``--num_threads 0``) the generators are restored afterwards, so that the model's dropout does not
    depend on data loading. Workers ignore SIGINT: Ctrl-C is the main process's to handle.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        in_worker = get_worker_info() is not None
        if in_worker:
            if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            seed_everything(seed)
            return self.dataset[index]
        saved = (torch.get_rng_state(), random.getstate(), np.random.get_state())
        try:
            seed_everything(seed)
            return self.dataset[index]
        finally:
            torch.set_rng_state(saved[0])
            random.setstate(saved[1])
            np.random.set_state(saved[2])


# ============================================================================ checkpoints
def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def checkpoint_files(model: BaseModel, tag: str) -> tuple[dict[str, str], str]:
    """The network files (name → path) and the training-state file of ``tag``."""
    return ({name: model.network_path(tag, name) for name in model.nets},
            train_state_path(model.save_dir, tag))


def save_checkpoint(model: BaseModel, tag: str, state: dict[str, Any]) -> list[str]:
    """Write ``<tag>_net_*.pth`` and ``<tag>_train_state.pth`` as one set that a crash cannot tear apart.

    Every file is first written completely next to its final name (``.<name>.pending``, each one atomic and
    fsynced), the state last, carrying the SHA-256 of each network file. Only then are the pending files
    renamed over the final names, the state last. A process killed while writing leaves the previous set
    untouched; one killed while renaming leaves a complete pending state that :func:`recover_checkpoint`
    uses to finish the renames. Networks stay in the released format (plain state dicts).
    """
    nets, state_path = checkpoint_files(model, tag)
    finals = [*nets.values(), state_path]
    for path in finals:  # a stale pending set must never mix with this one
        if os.path.exists(pending_path(path)):
            os.remove(pending_path(path))
    digests = {}
    for name, path in nets.items():
        atomic_save(plain_state_dict(model.nets[name]), pending_path(path))
        digests[name] = {'file': os.path.basename(path), 'sha256': file_sha256(pending_path(path))}
    atomic_save({**state, 'tag': tag, 'networks': digests}, pending_path(state_path))
    for path in finals:  # the state last: its arrival marks the set complete
        os.replace(pending_path(path), path)
    _fsync_dir(model.save_dir)
    return finals


def recover_checkpoint(model: BaseModel, tag: str) -> None:
    """Finish or discard a save of ``tag`` that a killed process left half done (see :func:`save_checkpoint`)."""
    nets, state_path = checkpoint_files(model, tag)
    finals = [*nets.values(), state_path]
    pending_state = pending_path(state_path)
    if os.path.exists(pending_state):
        try:
            state = load_train_state_file(pending_state)
            newest = {name: pending_path(p) if os.path.exists(pending_path(p)) else p for name, p in nets.items()}
            complete = state_matches(state, newest)
        except ValueError:
            complete = False
        if complete:
            for path in finals:
                if os.path.exists(pending_path(path)):
                    os.replace(pending_path(path), path)
            _fsync_dir(model.save_dir)
            logger.warning('finished the save of %s that an interrupted run had left half done', state_path)
    for path in finals:
        if os.path.exists(pending_path(path)):
            os.remove(pending_path(path))
        for tmp in glob.glob(os.path.join(glob.escape(os.path.dirname(path)),
                                          '.' + glob.escape(os.path.basename(path)) + '*.tmp')):
            os.remove(tmp)


def load_train_state(model: BaseModel, tag: str) -> Optional[dict[str, Any]]:
    """The training state saved with ``<tag>_net_*.pth``, or None (with the reason logged) if there is none.

    A state whose recorded checksums do not match the network files (weights replaced after the save) is
    not used: training then continues from the weights with fresh optimizers.
    """
    nets, path = checkpoint_files(model, tag)
    if not os.path.isfile(path):
        logger.warning('no training state %s: continuing from the weights %s with fresh optimizers and '
                       'schedulers (the released checkpoints hold weights only)', path, ', '.join(nets.values()))
        return None
    state = load_train_state_file(path)
    if state.get('format') != STATE_FORMAT:
        raise ValueError(f'{path}: training-state format {state.get("format")} is not {STATE_FORMAT}')
    if not state_matches(state, nets):
        logger.warning('%s was saved with other weights than %s (they were replaced since): continuing from the '
                       'weights with fresh optimizers and schedulers', path, ', '.join(nets.values()))
        return None
    return state


# ============================================================================ stopping on request
class StopRequest:
    """SIGINT/SIGTERM handler: the loop finishes its iteration, saves ``latest`` and exits.

    A second Ctrl-C stops at once (KeyboardInterrupt) without saving.
    """

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        logger.warning('%s received: saving latest after this iteration, then stopping (Ctrl-C again stops at '
                       'once without saving)', signal.Signals(signum).name)


# ============================================================================ the loop
@dataclasses.dataclass
class Position:
    """Where training stands: the epoch to run next, iterations of it done, iterations in all."""

    epoch: int
    epoch_iter: int = 0
    total_iters: int = 0


class Trainer:
    """Owns the model, data, visualizer and counters of one run; :meth:`run` is the training loop."""

    def __init__(self, opt: argparse.Namespace, ctx: DistContext) -> None:
        self.opt, self.ctx = opt, ctx
        self.stop = StopRequest()
        dataset = data.create_dataset(opt, 'train')
        self.sampler = ResumableSampler(len(dataset), shuffle=not opt.serial_batches, seed=opt.seed,
                                        rank=ctx.rank, world_size=ctx.world_size)
        self.loader = data.create_dataloader(opt, SeededItems(dataset), shuffle=False, sampler=self.sampler)
        self.iters_per_epoch = math.ceil(self.sampler.shard_size / opt.batch_size)
        logger.info('training images: %d; %d iterations per epoch', len(dataset), self.iters_per_epoch)

        self.model = create_model(opt)
        tag = self.model.checkpoint_tag()
        if opt.continue_train:
            if ctx.is_main:
                recover_checkpoint(self.model, tag)
            ctx.barrier()
        self.model.setup()
        self.pos = Position(epoch=opt.epoch_count)
        self.loss_sum, self.loss_count = 0.0, 0  # of the current epoch, for --lr_policy plateau
        self.last_latest: Optional[Position] = None
        if opt.continue_train:
            state = load_train_state(self.model, tag)
            if state is not None:
                self.restore(state, train_state_path(self.model.save_dir, tag))
        self.visualizer = Visualizer(opt) if ctx.is_main else None

    # ------------------------------------------------------------------ state
    def restore(self, state: dict[str, Any], path: str) -> None:
        """Continue exactly where ``state`` was saved."""
        opt, ctx = self.opt, self.ctx
        if state['epoch_count'] != opt.epoch_count:
            # the linear schedule reads opt.epoch_count: the run's own value keeps the resume exact
            logger.warning('--epoch_count %d is not used: %s continues at epoch %d the run that began with '
                           '--epoch_count %d, and keeps its learning rate schedule (to restart the schedule from '
                           'these weights with fresh optimizers, move that file away)', opt.epoch_count, path,
                           state['epoch'], state['epoch_count'])
            opt.epoch_count = int(state['epoch_count'])
        self.model.load_training_state(state['model'])
        if self.model.scaler is not None and state.get('scaler'):
            self.model.scaler.load_state_dict(state['scaler'])
        epoch_iter = int(state['epoch_iter'])
        old_global = int(state['batch_size']) * int(state['world_size'])
        new_global = opt.batch_size * ctx.world_size
        if (old_global, int(state['seed']), bool(state['serial_batches'])) != \
                (new_global, opt.seed, bool(opt.serial_batches)):
            epoch_iter = min(self.iters_per_epoch, epoch_iter * old_global // new_global)
            logger.warning('%s was saved with --seed %s, %s samples per iteration, serial_batches %s; this run '
                           'differs, so its data order differs from an uninterrupted run (resuming after %d '
                           'iterations of epoch %d)', path, state['seed'], old_global, state['serial_batches'],
                           epoch_iter, state['epoch'])
        elif epoch_iter > self.iters_per_epoch:
            raise ValueError(f'{path}: {epoch_iter} iterations of epoch {state["epoch"]} were done but an epoch now '
                             f'has {self.iters_per_epoch}: the training set changed')
        self.pos = Position(int(state['epoch']), epoch_iter, int(state['total_iters']))
        self.loss_sum, self.loss_count = float(state['loss_sum']), int(state['loss_count'])
        rngs = state['rng']
        if len(rngs) == ctx.world_size:
            set_rng_state(rngs[ctx.rank], ctx.device)
        else:
            logger.warning('%s holds random states of %d processes, this run has %d: reseeding', path, len(rngs),
                           ctx.world_size)
            seed_everything(opt.seed + ctx.rank + self.pos.total_iters)
        self.last_latest = dataclasses.replace(self.pos) if path.endswith('latest_train_state.pth') else None
        logger.info('resumed from %s: epoch %d, %d iterations into it, %d in all, learning rate %.3g', path,
                    self.pos.epoch, self.pos.epoch_iter, self.pos.total_iters, self.model.current_lrs()[0])

    def save(self, tags: Sequence[str], pos: Position) -> None:
        """Save networks and training state as ``tags`` (every process calls this; rank 0 writes)."""
        opt, ctx = self.opt, self.ctx
        rng = rng_state(ctx.device)
        rngs = [rng]
        if ctx.enabled:
            rngs = [None] * ctx.world_size
            torch_dist.all_gather_object(rngs, rng)
        if not ctx.is_main:
            return
        model = self.model
        state = {'format': STATE_FORMAT, 'epoch': pos.epoch, 'epoch_iter': pos.epoch_iter,
                 'total_iters': pos.total_iters, 'epoch_count': opt.epoch_count, 'seed': opt.seed,
                 'batch_size': opt.batch_size, 'world_size': ctx.world_size, 'serial_batches': bool(opt.serial_batches),
                 'loss_sum': self.loss_sum, 'loss_count': self.loss_count, 'model': model.training_state(),
                 'scaler': model.scaler.state_dict() if model.scaler is not None else {}, 'rng': rngs}
        for tag in tags:
            save_checkpoint(model, tag, state)
        logger.info('saved %s (epoch %d, %d iterations into it, %d in all) in %s', ' and '.join(tags), pos.epoch,
                    pos.epoch_iter, pos.total_iters, model.save_dir)

    def save_latest(self, pos: Position) -> None:
        tags = ['latest'] + ([f'iter_{pos.total_iters}'] if self.opt.save_by_iter else [])
        self.save(tags, pos)
        self.last_latest = dataclasses.replace(pos)

    def latest_description(self) -> str:
        if self.last_latest is None:
            return 'none (no checkpoint was saved in this run)'
        return (f'{os.path.join(self.model.save_dir, "latest_net_G.pth")} (iteration {self.last_latest.total_iters}, '
                f'epoch {self.last_latest.epoch})')

    # ------------------------------------------------------------------ loop
    def run(self) -> int:
        """Train until the last epoch, ``--max_iters``, a signal or a non-finite loss; return the exit status."""
        opt = self.opt
        last_epoch = opt.niter + opt.niter_decay
        if self.pos.epoch > last_epoch:
            logger.info('training already finished (epoch %d of %d): nothing to do', self.pos.epoch - 1, last_epoch)
            return 0
        if opt.max_iters and self.pos.total_iters >= opt.max_iters:
            logger.info('already %d iterations (--max_iters %d): nothing to do', self.pos.total_iters, opt.max_iters)
            return 0
        self.stop.install()
        try:
            with logging_redirect_tqdm():
                for epoch in range(self.pos.epoch, last_epoch + 1):
                    self.pos.epoch = epoch
                    if not self.train_one_epoch(epoch, last_epoch):
                        break
        finally:
            self.stop.uninstall()
        if self.stop.signum is not None:
            logger.warning('stopped by %s; resume with --continue_train', signal.Signals(self.stop.signum).name)
            return EXIT_SIGNAL.get(self.stop.signum, 1)
        if self.last_latest != self.pos:
            self.save_latest(self.pos)
        logger.info('done: %d iterations; weights in %s', self.pos.total_iters, self.model.save_dir)
        return 0

    def train_one_epoch(self, epoch: int, last_epoch: int) -> bool:
        """One epoch (or what is left of it); False when training must stop."""
        opt, ctx, model, pos = self.opt, self.ctx, self.model, self.pos
        self.sampler.set_epoch(epoch, start=pos.epoch_iter * opt.batch_size)
        if self.visualizer is not None:
            self.visualizer.reset()
        samples_per_iter = opt.batch_size * ctx.world_size
        bar = tqdm(total=self.iters_per_epoch, initial=pos.epoch_iter, desc=f'epoch {epoch}/{last_epoch}',
                   unit='it', dynamic_ncols=True, disable=(not ctx.is_main) or None)
        t_comp = t_data = 0.0
        n_timed = 0
        keep_going = True
        speed: Optional[float] = None  # samples/s in all processes, smoothed
        fetch_start = last_done = time.perf_counter()
        with bar:
            for batch in self.loader:
                iter_start = time.perf_counter()
                model.set_input(batch)
                model.optimize_parameters()
                losses = model.get_current_losses()  # floats: waits for the step to finish
                total = sum(losses.values())
                pos.epoch_iter += 1
                pos.total_iters += 1
                now = time.perf_counter()
                t_data += iter_start - fetch_start
                t_comp += now - iter_start
                n_timed += 1

                bad, stop = all_reduce([0.0 if math.isfinite(total) else 1.0,
                                        0.0 if self.stop.signum is None else 1.0], ctx, 'max')
                if bad:
                    kind = 'nan' if any(math.isnan(v) for v in losses.values()) or math.isnan(total) else 'infinite'
                    if not math.isfinite(total):
                        detail = ', '.join(f'{k}: {v}' for k, v in losses.items())
                    else:
                        detail = 'in another process'
                    raise NonFiniteLossError(
                        f'loss became {kind} at iteration {pos.total_iters} (epoch {epoch}); the last good checkpoint '
                        f'is {self.latest_description()}; the weights of this iteration were not saved ({detail})')
                self.loss_sum += total
                self.loss_count += 1

                if ctx.is_main:
                    rate = samples_per_iter / max(now - last_done, 1e-9)
                    speed = rate if speed is None else 0.9 * speed + 0.1 * rate
                    last_done = now
                    bar.set_postfix({**{k: f'{v:.3f}' for k, v in losses.items()}, 'samples/s': f'{speed:.1f}'},
                                    refresh=False)
                    bar.update(1)
                    self.report(epoch, losses, t_comp, t_data, n_timed)
                if pos.total_iters % opt.print_freq == 0:
                    t_comp = t_data = 0.0
                    n_timed = 0

                if pos.total_iters % opt.save_latest_freq == 0:
                    self.save_latest(pos)
                if stop or (opt.max_iters and pos.total_iters >= opt.max_iters):
                    if stop and self.stop.signum is None:
                        self.stop.signum = signal.SIGTERM  # another process was asked to stop
                    keep_going = False
                    break
                fetch_start = time.perf_counter()  # what follows until the next batch arrives is loading

        if pos.epoch_iter >= self.iters_per_epoch:
            self.end_epoch(epoch)
        if not keep_going and self.last_latest != pos:
            self.save_latest(pos)
        return keep_going

    def report(self, epoch: int, losses: dict[str, float], t_comp: float, t_data: float, n_timed: int) -> None:
        """Rank 0: the loss line, the visdom plot and the HTML page at their frequencies."""
        opt, pos, vis = self.opt, self.pos, self.visualizer
        if pos.total_iters % opt.print_freq == 0:
            samples = max(1, n_timed * opt.batch_size)
            vis.print_current_losses(epoch, pos.epoch_iter, losses, t_comp / samples, t_data / samples)
            vis.plot_current_losses(epoch, pos.epoch_iter / self.iters_per_epoch, losses)
        if pos.total_iters % opt.display_freq == 0:
            vis.display_current_results(self.model.get_current_visuals(), epoch,
                                        save_result=pos.total_iters % opt.update_html_freq == 0)

    def end_epoch(self, epoch: int) -> None:
        """Step the schedulers (once per epoch, the released semantics) and save ``latest`` and ``<epoch>``."""
        opt, pos = self.opt, self.pos
        loss_sum, count = all_reduce([self.loss_sum, self.loss_count], self.ctx, 'sum')
        lr = self.model.update_learning_rate(loss_sum / max(count, 1))
        self.loss_sum, self.loss_count = 0.0, 0
        logger.info('end of epoch %d of %d: learning rate %.7f', epoch, opt.niter + opt.niter_decay, lr)
        pos.epoch, pos.epoch_iter = epoch + 1, 0
        if epoch % opt.save_epoch_freq == 0:
            tags = ['latest', str(epoch)] + ([f'iter_{pos.total_iters}'] if opt.save_by_iter else [])
            self.save(tags, pos)
            self.last_latest = dataclasses.replace(pos)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the options, set up processes, devices and seeds, and train."""
    options = TrainOptions()
    opt = options.parse(argv)
    setup_logging(opt.verbose)
    if under_torchrun() and int(os.environ['RANK']) != 0:
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 alone logs
    ctx = setup_distributed(opt)
    try:
        seed_everything(opt.seed + ctx.rank)
        if ctx.is_main:
            logger.info('%s', options.format_options(opt))
            options.save(opt)
        trainer = Trainer(opt, ctx)
        return trainer.run()
    finally:
        if ctx.enabled and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


if __name__ == '__main__':
    sys.exit(run_main(main))
