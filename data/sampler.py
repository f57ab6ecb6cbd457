"""A training data order that can be resumed in the middle of an epoch, with augmentations fixed per sample.

:class:`ResumableSampler` yields ``(index, seed)`` pairs: one epoch's permutation, fixed by ``(seed, epoch)``,
sharded over processes like ``DistributedSampler``, started after the samples already trained on.
:class:`SeededItems` draws item ``index`` with every global generator seeded by ``seed``, so that a sample's
crop and flip depend on the sample and the epoch only, not on the loader worker or on what was loaded before.
Together they make a resumed run see the same samples with the same augmentations as an uninterrupted one.
"""
from __future__ import annotations

import math
import random
import signal
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

from util.train_state import seed_everything


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentation in one epoch: fixed by (seed, epoch, index) alone."""
    return int(np.random.SeedSequence([seed % 2 ** 63, epoch, index]).generate_state(1)[0])


class ResumableSampler(Sampler):
    """One epoch's sample order, fixed by ``(seed, epoch)``, sharded over processes, started at an offset.

    The order is a permutation drawn from ``seed + epoch`` (the list order when ``shuffle`` is False), padded to
    a multiple of the number of processes like ``DistributedSampler``; process ``rank`` takes every
    ``world_size``-th index. :meth:`set_epoch` chooses the epoch and how many of this process's samples of it
    to skip, so a resumed epoch decodes nothing twice.
    """

    def __init__(self, size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if size < 1:
            raise ValueError('the training set is empty: check --dataset_root and --max_dataset_size')
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

    In the main process (``--num_threads 0``) the generators are restored afterwards, so that the model's
    dropout does not depend on data loading. Workers ignore SIGINT: Ctrl-C is the main process's to handle
    (it saves ``latest`` before stopping).
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        if get_worker_info() is not None:
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
