"""Processes of a training run: torchrun detection, the process group, a device per rank, reductions, stopping.

train.py runs one process, or one process per GPU under ``torchrun`` (DistributedDataParallel). Everything it
needs to know about the other processes goes through :class:`DistContext`: whether this process logs and saves
(rank 0), element-wise sums and maxima over all processes, and gathering one object from each. A
:class:`StopRequest` turns SIGINT/SIGTERM into a flag that the loop checks once per iteration, so that every
process stops at the same iteration and ``latest`` is saved first.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import threading
from types import TracebackType
from typing import Any, Optional, Sequence

import torch
import torch.distributed as torch_dist

from models.factory import select_device

logger = logging.getLogger(__name__)

EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}  # the shell's 128 + signal number


@dataclasses.dataclass
class DistContext:
    """Where this process stands: one process, or one rank of a torchrun job."""

    enabled: bool = False
    rank: int = 0
    world_size: int = 1
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device('cpu'))

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, plots and saves."""
        return self.rank == 0

    def all_reduce(self, values: Sequence[float], op: str = 'sum') -> list[float]:
        """Element-wise ``op`` ('sum' or 'max') of ``values`` over all processes (the values alone without DDP)."""
        if not self.enabled:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX if op == 'max' else torch_dist.ReduceOp.SUM)
        return t.tolist()

    def all_gather(self, obj: Any) -> list[Any]:
        """``obj`` of every process, in rank order (``[obj]`` without DDP)."""
        if not self.enabled:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        torch_dist.all_gather_object(gathered, obj)
        return gathered

    def close(self) -> None:
        """Leave the process group (nothing to do without DDP)."""
        if self.enabled and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def under_torchrun() -> bool:
    """True when torchrun (or another launcher of torch.distributed) started this process."""
    return all(k in os.environ for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'))


def _ids(ids: Sequence[int]) -> str:
    return ','.join(map(str, ids))


def setup(opt: argparse.Namespace) -> DistContext:
    """Choose this process's device and join the process group when started by torchrun.

    Mapping of ``--gpu_ids`` under torchrun: with several ids, local process ``i`` uses the ``i``-th id (give
    exactly ``--nproc_per_node`` ids); with one id ``g``, local processes use ``g, g+1, ...`` (so ``--gpu_ids 0``
    means GPUs ``0..N-1``); with none (``-1``, or no CUDA) every process runs on the CPU with Gloo.
    ``opt.gpu_ids`` becomes this process's one GPU before the model is created. Other ranks than 0 log
    warnings only.

    Raises:
        ValueError: several GPU ids without torchrun, or ids that do not fit the processes or the machine.
    """
    ids = list(opt.gpu_ids)
    if not under_torchrun():
        if len(ids) > 1:
            raise ValueError(f'--gpu_ids {_ids(ids)} lists {len(ids)} GPUs: train.py runs one process per GPU, so '
                             f'start it with `torchrun --nproc_per_node {len(ids)} train.py <the same options>` '
                             '(add --nnodes, --node_rank, --master_addr for several machines)')
        return DistContext(device=select_device(ids))
    rank, world = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
    local_rank = int(os.environ['LOCAL_RANK'])
    local_world = int(os.environ.get('LOCAL_WORLD_SIZE', world))
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 alone reports progress
    if ids:
        if len(ids) == 1:
            gpu = ids[0] + local_rank
        elif len(ids) == local_world:
            gpu = ids[local_rank]
        else:
            raise ValueError(f'--gpu_ids {_ids(ids)} lists {len(ids)} GPUs but torchrun started {local_world} '
                             'processes on this machine: give one id per process, or one id to use consecutive '
                             'GPUs from it')
        if gpu >= torch.cuda.device_count():
            raise ValueError(f'local process {local_rank} would use cuda:{gpu} (from --gpu_ids {_ids(ids)}) but this '
                             f'machine has {torch.cuda.device_count()} GPU(s)')
        torch.cuda.set_device(gpu)
        opt.gpu_ids = [gpu]
    device = select_device(opt.gpu_ids if ids else [])
    backend = 'nccl' if device.type == 'cuda' else 'gloo'
    torch_dist.init_process_group(backend=backend)
    logger.info('DistributedDataParallel: %d processes (%s); rank %d uses %s; --batch_size %d per process, %d in all',
                world, backend, rank, device, opt.batch_size, opt.batch_size * world)
    return DistContext(True, rank, world, device)


class StopRequest:
    """A context manager that turns SIGINT/SIGTERM into ``signum``: the loop finishes its iteration and stops.

    A second Ctrl-C stops at once (KeyboardInterrupt). Outside the main thread nothing is installed.
    """

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> 'StopRequest':
        if threading.current_thread() is threading.main_thread():
            for sig in EXIT_STATUS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: Optional[type], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        logger.warning('%s received: saving latest after this iteration, then stopping (Ctrl-C again stops at once '
                       'without saving)', signal.Signals(signum).name)

    @property
    def exit_status(self) -> int:
        """130 after SIGINT, 143 after SIGTERM, 0 when no signal came."""
        return EXIT_STATUS.get(self.signum, 1) if self.signum is not None else 0
