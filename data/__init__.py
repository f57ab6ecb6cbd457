"""Datasets and data loaders.

``DATASETS`` is the registry that ``--dataset_mode`` chooses from (argparse ``choices``). To add a dataset,
write a ``torch.utils.data.Dataset`` in ``<name>_dataset.py`` whose constructor takes ``(opt, phase)``,
whose items are dicts with at least ``comp``, ``real`` (uint8 3×H×W), ``mask`` (uint8 1×H×W in {0, 1}),
``comp_path`` and ``index``, with an optional ``modify_commandline_options(parser, is_train)``, and
register it here. ``lists.py`` reads the list files; ``sampler.py`` holds train.py's resumable, seeded
sample order.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
from typing import Callable, Optional

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from .iharmony4_dataset import IHarmony4Dataset

logger = logging.getLogger(__name__)

DATASETS: dict[str, type[Dataset]] = {'iharmony4': IHarmony4Dataset}


def get_dataset_class(name: str) -> type[Dataset]:
    """The dataset class registered as ``name``; ValueError listing the valid names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f'dataset [{name}] is not known; choose one of {", ".join(sorted(DATASETS))}') from None


def get_option_setter(name: str) -> Callable[[argparse.ArgumentParser, bool], argparse.ArgumentParser]:
    cls = get_dataset_class(name)
    return getattr(cls, 'modify_commandline_options', lambda parser, is_train: parser)


def create_dataset(opt: argparse.Namespace, phase: str) -> Dataset:
    """The dataset of ``--dataset_mode`` for ``phase`` ('train' or 'test')."""
    return get_dataset_class(opt.dataset_mode)(opt, phase)


def create_dataloader(opt: argparse.Namespace, dataset: Dataset, shuffle: bool, drop_last: bool = False,
                      distributed: bool = False, sampler: Optional[Sampler] = None) -> DataLoader:
    """A DataLoader over ``dataset`` with ``--batch_size`` and ``--num_threads`` workers, at most one per CPU.

    Shuffles unless ``--serial_batches`` (or ``shuffle`` is False); under DDP a DistributedSampler gives
    each process its own shard (call ``loader.sampler.set_epoch(epoch)`` every epoch). Pinned memory on GPUs.
    A given ``sampler`` (train.py's resumable one) replaces both the shuffling and the DistributedSampler.
    """
    shuffle = shuffle and not opt.serial_batches
    if sampler is not None:
        shuffle = False
    elif distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=opt.seed, drop_last=drop_last)
        shuffle = False
    generator = torch.Generator()
    generator.manual_seed(opt.seed)
    workers = min(max(0, int(opt.num_threads)), usable_cpus())
    if workers < int(opt.num_threads):
        logger.debug('--num_threads %s: %d loader workers, one per usable CPU', opt.num_threads, workers)
    return DataLoader(dataset, batch_size=opt.batch_size, shuffle=shuffle, sampler=sampler,
                      num_workers=workers, pin_memory=bool(opt.gpu_ids), drop_last=drop_last,
                      generator=generator, persistent_workers=False)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the system has one), as DataLoader counts them."""
    if hasattr(os, 'sched_getaffinity'):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def dataset_size(opt: argparse.Namespace, n: int) -> int:
    """``n`` capped by ``--max_dataset_size`` (which may be inf)."""
    return n if math.isinf(opt.max_dataset_size) else min(n, int(opt.max_dataset_size))
