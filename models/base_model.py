"""The model contract shared by every model: setup, optimization, saving, loading and scheduling."""
from __future__ import annotations

import argparse
import logging
import os
from abc import ABC, abstractmethod
from typing import Any, Optional

import torch
import torch.nn as nn
from torch.optim import lr_scheduler

from .checkpoint import atomic_save, load_weights, plain_state_dict
from .factory import checkpoint_paths, checkpoint_tag, select_device

logger = logging.getLogger(__name__)


def get_scheduler(optimizer: torch.optim.Optimizer, opt: argparse.Namespace) -> Any:
    """Learning rate scheduler of ``--lr_policy``, stepped once per epoch (the released semantics).

    linear: constant for ``niter`` epochs, then linear to zero over ``niter_decay`` epochs; step: ×0.1
    every ``lr_decay_iters`` epochs; plateau: ×0.2 when the metric stops improving; cosine: over ``niter``.
    """
    if opt.lr_policy == 'linear':
        def lambda_rule(epoch: int) -> float:
            return 1.0 - max(0, epoch + opt.epoch_count - opt.niter) / float(opt.niter_decay + 1)
        return lr_scheduler.LambdaLR(optimizer, lr_lambda=lambda_rule)
    if opt.lr_policy == 'step':
        return lr_scheduler.StepLR(optimizer, step_size=opt.lr_decay_iters, gamma=0.1)
    if opt.lr_policy == 'plateau':
        return lr_scheduler.ReduceLROnPlateau(optimizer, mode='min', factor=0.2, threshold=0.01, patience=5)
    if opt.lr_policy == 'cosine':
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=opt.niter, eta_min=0)
    raise ValueError(f'learning rate policy [{opt.lr_policy}] is not known; choose linear, step, plateau, cosine')


class BaseModel(ABC):
    """Base class of models, the pix2pix contract.

    A subclass builds its networks into ``self.nets`` (name → module), fills ``loss_names`` and
    ``visual_names``, creates ``self.optimizers`` when training, and implements :meth:`set_input`,
    :meth:`forward` and :meth:`optimize_parameters`. Optionally it overrides
    :meth:`modify_commandline_options` to add options and change defaults.
    """

    def __init__(self, opt: argparse.Namespace) -> None:
        self.opt = opt
        self.is_train = opt.is_train
        self.device = select_device(opt.gpu_ids)
        self.save_dir = os.path.join(opt.checkpoints_dir, opt.name)
        self.loss_names: list[str] = []
        self.visual_names: list[str] = []
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: list[torch.optim.Optimizer] = []
        self.schedulers: list[Any] = []
        self.scaler: Optional[torch.amp.GradScaler] = None  # set by models that train in float16
        self.image_paths: list[str] = []

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        """Add model-specific options and change defaults of existing ones."""
        return parser

    @abstractmethod
    def set_input(self, batch: dict[str, Any]) -> None:
        """Unpack a batch of the data loader and move it to the device."""

    @abstractmethod
    def forward(self) -> None:
        """Run the forward pass of training."""

    @abstractmethod
    def optimize_parameters(self) -> None:
        """Compute losses and gradients and update the weights: one training iteration."""

    def test(self) -> None:
        """Forward pass for evaluation, without gradients."""
        with torch.inference_mode():
            self.forward()

    def setup(self) -> None:
        """Create schedulers when training; load the weights of ``--epoch`` for testing.

        Training resumes (``--continue_train``) through :meth:`load_training_state` or :meth:`load_networks`,
        which train.py calls after this.
        """
        opt = self.opt
        if self.is_train:
            self.schedulers = [get_scheduler(optimizer, opt) for optimizer in self.optimizers]
        else:
            self.load_networks(self.checkpoint_tag())
        if opt.verbose:
            self.print_networks()

    def checkpoint_tag(self) -> str:
        """The checkpoint prefix that ``--epoch`` / ``--load_iter`` select."""
        return checkpoint_tag(self.opt.epoch, self.opt.load_iter)

    def eval(self) -> None:
        for net in self.nets.values():
            net.eval()

    def train(self) -> None:
        for net in self.nets.values():
            net.train()

    def get_current_visuals(self) -> dict[str, torch.Tensor]:
        """The images of ``visual_names`` from the last forward pass."""
        return {name: getattr(self, name) for name in self.visual_names}

    def get_current_losses(self) -> dict[str, float]:
        """The losses of ``loss_names`` (``self.loss_<name>``) from the last iteration, as floats."""
        losses = {}
        for name in self.loss_names:
            value = getattr(self, 'loss_' + name)
            losses[name] = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
        return losses

    def current_lrs(self) -> list[float]:
        """The learning rate of each optimizer (its first parameter group)."""
        return [optimizer.param_groups[0]['lr'] for optimizer in self.optimizers]

    def learning_rates(self) -> dict[str, float]:
        """The learning rate of each optimizer, named by the networks it updates (e.g. ``{'G': 2e-4, 'E': 2e-4}``)."""
        owner = {id(p): name for name, net in self.nets.items() for p in net.parameters()}
        rates = {}
        for i, optimizer in enumerate(self.optimizers):
            names = sorted({owner[id(p)] for g in optimizer.param_groups for p in g['params'] if id(p) in owner})
            rates['+'.join(names) or f'optimizer{i}'] = optimizer.param_groups[0]['lr']
        return rates

    def update_learning_rate(self, metric: Optional[float] = None) -> float:
        """Step every scheduler once (once per epoch) and return the new learning rate of the first one."""
        for scheduler in self.schedulers:
            if self.opt.lr_policy == 'plateau':
                scheduler.step(metric if metric is not None else 0.0)
            else:
                scheduler.step()
        return self.current_lrs()[0]

    def network_path(self, tag: str, name: str) -> str:
        return os.path.join(self.save_dir, f'{tag}_net_{name}.pth')

    def save_networks(self, tag: str | int) -> list[str]:
        """Write ``<tag>_net_<name>.pth`` for every network: plain state dicts, atomically."""
        paths = []
        for name, net in self.nets.items():
            path = self.network_path(str(tag), name)
            atomic_save(plain_state_dict(net), path)
            paths.append(path)
        return paths

    def load_networks(self, tag: str | int) -> None:
        """Load ``<tag>_net_<name>.pth`` into every network, strictly and with ``weights_only=True``."""
        paths = checkpoint_paths(self.save_dir, str(tag))
        for name, net in self.nets.items():
            load_weights(net, paths[name], name)
            logger.info('loaded %s', paths[name])

    def training_state(self) -> dict[str, Any]:
        """What training resumes from: the networks (plain state dicts), optimizers, schedulers, gradient scaler."""
        return {'networks': {name: plain_state_dict(net) for name, net in self.nets.items()},
                'optimizers': [o.state_dict() for o in self.optimizers],
                'schedulers': [s.state_dict() for s in self.schedulers],
                'scaler': self.scaler.state_dict() if self.scaler is not None else {}}

    def load_training_state(self, state: dict[str, Any], path: str) -> None:
        """Restore what :meth:`training_state` returned (read from ``path``, which errors name).

        Networks are loaded strictly; a missing or extra network, optimizer or scheduler is an error.
        """
        saved = state['networks']
        if sorted(saved) != sorted(self.nets):
            raise ValueError(f'{path}: holds the networks {", ".join(sorted(saved))}, the model has '
                             f'{", ".join(sorted(self.nets))}')
        for kind in ('optimizers', 'schedulers'):
            if len(state[kind]) != len(getattr(self, kind)):
                raise ValueError(f'{path}: holds {len(state[kind])} {kind}, the model has {len(getattr(self, kind))} '
                                 '(saved with another --lr_policy or model?)')
        for name, net in self.nets.items():
            load_weights(net, path, name, saved[name])
        for optimizer, s in zip(self.optimizers, state['optimizers']):
            optimizer.load_state_dict(s)
        for scheduler, s in zip(self.schedulers, state['schedulers']):
            scheduler.load_state_dict(s)
        if self.scaler is not None and state['scaler']:
            self.scaler.load_state_dict(state['scaler'])

    def print_networks(self) -> None:
        for name, net in self.nets.items():
            count = sum(p.numel() for p in net.parameters())
            logger.info('[Network %s] Total number of parameters: %.3f M', name, count / 1e6)
            logger.debug('%s', net)
