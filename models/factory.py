"""The one factory: every script builds, loads and places BargainNet's networks through this module.

* :class:`Architecture` and :func:`create_networks`: the generator G and the domain code extractor E.
* :func:`resolve_gpu_ids` and :func:`select_device`: the one device rule.
* :func:`trained_settings`: the settings a model was trained with, read from its folder (``train_opt.txt``),
  which test.py, scripts/harmonize.py, predict_harmony_score.py and the Python API take as their defaults.
* :func:`load_bargainnet` / :func:`load_extractor`: G and E of a checkpoint, the architecture read from the
  weights' shapes and the model folder, loaded strictly (:mod:`models.checkpoint`).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn as nn

from .checkpoint import load_weights, network_kind, read_weights, widths
from .networks import S2ADGenerator, StyleEncoder, init_weights

logger = logging.getLogger(__name__)

Device = Union[str, torch.device]
GENERATORS = ('s2ad',)
TRAIN_OPT_FILE = 'train_opt.txt'


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What G and E are built from (the released model: the defaults)."""

    ngf: int = 64
    ndf: int = 64
    style_dim: int = 16
    norm: str = 'batch'
    use_dropout: bool = True
    netG: str = 's2ad'

    @classmethod
    def from_options(cls, opt: Any) -> 'Architecture':
        """The architecture of parsed options (``--ngf --ndf --style_dim --norm --no_dropout --netG``)."""
        return cls(opt.ngf, opt.ndf, opt.style_dim, opt.norm, not opt.no_dropout, opt.netG)


def create_networks(arch: Architecture, init_type: str = 'normal',
                    init_gain: float = 0.02) -> tuple[nn.Module, nn.Module]:
    """A freshly initialized generator G and extractor E of ``arch`` (on the CPU)."""
    if arch.netG not in GENERATORS:
        raise ValueError(f'generator [{arch.netG}] is not known; choose {", ".join(GENERATORS)}')
    netG = S2ADGenerator(4 + arch.style_dim, 3, arch.ngf, num_downs=8, norm=arch.norm,
                         use_dropout=arch.use_dropout, style_dim=arch.style_dim)
    netE = StyleEncoder(arch.style_dim, arch.ndf, arch.norm)
    for net in (netG, netE):
        init_weights(net, init_type, init_gain)
    return netG, netE


# ----------------------------------------------------------------------------------------------- devices
def resolve_gpu_ids(ids: Sequence[int], requested: bool = True) -> list[int]:
    """The GPUs to use of ``ids`` (negative ids dropped): none, and the CPU, when CUDA is not available.

    Args:
        ids: GPU ids (``--gpu_ids 0,1``; -1 means the CPU).
        requested: whether the user asked for them; a default id on a machine without CUDA gives one info line,
            an explicit one a warning.

    Raises:
        ValueError: an id beyond the GPUs of this machine.
    """
    ids = [int(i) for i in ids if int(i) >= 0]
    if not ids:
        return []
    if not torch.cuda.is_available():
        log = logger.warning if requested else logger.info
        log('%s: running on the CPU', 'CUDA is not available' if requested else 'no GPU found')
        return []
    if max(ids) >= torch.cuda.device_count():
        raise ValueError(f'--gpu_ids {",".join(map(str, ids))}: this machine has {torch.cuda.device_count()} GPU(s)')
    return ids


def select_device(gpu_ids: Sequence[int]) -> torch.device:
    """``cuda:<first id>`` of ids that :func:`resolve_gpu_ids` returned, or the CPU when there are none."""
    return torch.device('cuda', gpu_ids[0]) if gpu_ids else torch.device('cpu')


# ----------------------------------------------------------------------------------------------- model folders
def trained_settings(folder: str) -> dict[str, str]:
    """The options a model was trained with, from ``<folder>/train_opt.txt`` (name → value as written); {} if none."""
    path = os.path.join(folder, TRAIN_OPT_FILE)
    if not os.path.isfile(path):
        return {}
    settings = {}
    with open(path, encoding='utf-8', errors='replace') as f:
        for line in f:
            key, sep, value = line.partition(':')
            key = key.strip()
            if sep and key and not key.startswith('-') and ' ' not in key:
                settings[key] = value.split('\t[default:')[0].strip()
    return settings


def model_defaults(folder: str, weights: dict[str, dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Defaults for testing a model: widths from its weights, the rest from how it was trained.

    ``ngf``, ``ndf``, ``style_dim`` come from the weights' shapes; ``no_dropout`` and ``norm`` from
    ``train_opt.txt``; ``eval`` (BatchNorm running statistics) is the default for a model trained with batch
    normalization over batches of several images (``--batch_size`` > 1 without ``--per_image_norm``), whose
    running statistics are its natural test mode; a model trained on single images (the released recipe) or
    with per-image normalization is tested with each image's own statistics (the released protocol).
    """
    found: dict[str, Any] = {}
    for state in weights.values():
        found.update(widths(state))
    trained = trained_settings(folder)
    if trained.get('no_dropout') in ('True', 'False'):
        found['no_dropout'] = trained['no_dropout'] == 'True'
    if trained.get('norm'):
        found['norm'] = trained['norm']
    if trained.get('batch_size', '').isdigit():
        per_image = trained.get('per_image_norm') == 'True'
        found['eval'] = int(trained['batch_size']) > 1 and not per_image and found.get('norm', 'batch') == 'batch'
    return found


def checkpoint_tag(epoch: str, load_iter: int = 0) -> str:
    """The prefix of the checkpoint files that ``--epoch`` / ``--load_iter`` select: ``iter_<n>`` or the epoch."""
    return f'iter_{load_iter}' if load_iter > 0 else str(epoch)


def checkpoint_paths(folder: str, tag: str) -> dict[str, str]:
    """``<folder>/<tag>_net_{G,E}.pth``; FileNotFoundError naming the missing ones."""
    paths = {net: os.path.join(folder, f'{tag}_net_{net}.pth') for net in ('G', 'E')}
    missing = [p for p in paths.values() if not os.path.isfile(p)]
    if missing:
        hint = f'{folder} does not exist' if not os.path.isdir(folder) else \
            f'{folder} holds {", ".join(sorted(f for f in os.listdir(folder) if f.endswith(".pth"))) or "no .pth file"}'
        raise FileNotFoundError(f'weights not found: {", ".join(missing)} ({hint}); check --name, --checkpoints_dir '
                                'and --epoch')
    return paths


def load_bargainnet(folder: str, epoch: str = 'latest', device: Device = 'cpu',
                    **overrides: Any) -> tuple[nn.Module, nn.Module, Architecture]:
    """G and E of ``<folder>/<epoch>_net_{G,E}.pth``, strictly loaded, on ``device``.

    The architecture comes from :func:`model_defaults`; ``overrides`` (``ngf``, ``ndf``, ``style_dim``,
    ``norm``, ``no_dropout``; None = not given) win, and a width that differs from the file's is an error
    naming both.
    """
    paths = checkpoint_paths(folder, epoch)
    states = {net: read_weights(path) for net, path in paths.items()}
    settings = {**model_defaults(folder, states), **{k: v for k, v in overrides.items() if v is not None}}
    arch = Architecture(ngf=settings.get('ngf', 64), ndf=settings.get('ndf', 64),
                        style_dim=settings.get('style_dim', 16), norm=settings.get('norm', 'batch'),
                        use_dropout=not settings.get('no_dropout', False))
    netG, netE = create_networks(arch)
    for net, kind in ((netG, 'G'), (netE, 'E')):
        load_weights(net, paths[kind], kind, states[kind])
    logger.info('loaded %s and %s (ngf %d, ndf %d, style_dim %d%s)', paths['G'], paths['E'], arch.ngf, arch.ndf,
                arch.style_dim, ', no dropout' if not arch.use_dropout else '')
    device = torch.device(device)
    return netG.to(device), netE.to(device), arch


def load_extractor(path: str, device: Device = 'cpu', ndf: Optional[int] = None,
                   style_dim: Optional[int] = None) -> nn.Module:
    """The extractor E of a ``*_net_E.pth`` file, strictly loaded, in eval mode.

    Widths are read from the file (``ndf``, ``style_dim`` override them); the normalization from the
    ``train_opt.txt`` beside it, if any (batch normalization otherwise, as released).
    """
    state = read_weights(path)
    if network_kind(state) == 'G':
        raise ValueError(f'{path}: holds a generator (G, *_net_G.pth), but a domain code extractor (E, '
                         '*_net_E.pth) is expected here')
    found = widths(state)
    norm = trained_settings(os.path.dirname(os.path.abspath(path))).get('norm', 'batch')
    netE = StyleEncoder(style_dim or found.get('style_dim', 16), ndf or found.get('ndf', 64), norm)
    load_weights(netE, path, 'E', state)
    logger.info('loaded %s (ndf %d, style_dim %d, norm %s)', path, netE.conv1f.out_channels,
                netE.convs.out_channels, norm)
    return netE.to(torch.device(device)).eval()


__all__ = ['Architecture', 'create_networks', 'resolve_gpu_ids', 'select_device', 'trained_settings',
           'model_defaults', 'checkpoint_tag', 'checkpoint_paths', 'load_bargainnet', 'load_extractor', 'load_weights']
