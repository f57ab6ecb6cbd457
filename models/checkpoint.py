"""The one loader of network weights: released-format state dicts, read safely and loaded strictly.

A released checkpoint is a plain state dict saved with ``torch.save``: ``<epoch>_net_G.pth`` (the generator)
and ``<epoch>_net_E.pth`` (the domain code extractor). Every script loads weights through
:func:`read_weights` and :func:`load_weights`, so that every problem gets the same one-line message naming the
file: a folder or a missing file, a file that is not a weights-only state dict, the other network's file, a
width that differs from the file's, and any other missing, unexpected or mis-shaped key.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Optional

import torch
import torch.nn as nn

_WRAPPER_PREFIXES = ('module.', '_orig_mod.')
KINDS = {'G': 'a generator (G, *_net_G.pth)', 'E': 'a domain code extractor (E, *_net_E.pth)'}
# the width options each network's weights tell: option -> (key, dimension, offset): shape[dimension] - offset
WIDTH_KEYS = {'G': {'ngf': ('model.model.0.weight', 0, 0), 'style_dim': ('model.model.0.weight', 1, 4)},
              'E': {'ndf': ('conv1f.weight', 0, 0), 'style_dim': ('convs.weight', 0, 0)}}
MAX_KEYS_SHOWN = 4


def unwrap(net: nn.Module) -> nn.Module:
    """The plain network inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(net, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            net = net.module
        elif hasattr(net, '_orig_mod'):
            net = net._orig_mod
        else:
            return net


def plain_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """State dict of the unwrapped network on the CPU, without ``module.`` or ``_orig_mod.`` prefixes."""
    out = {}
    for key, value in unwrap(net).state_dict().items():
        for prefix in _WRAPPER_PREFIXES:
            key = key.replace(prefix, '')
        out[key] = value.detach().cpu()
    return out


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename it over ``path``.

    A process killed at any moment leaves either the previous file or the new one, never a torn file.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_weights(path: str, what: str = 'weights') -> dict[str, torch.Tensor]:
    """A state dict of tensors from ``path``, loaded with ``weights_only=True`` on the CPU.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is a folder, is not a PyTorch file that loads safely, or does not hold a state dict.
    """
    if os.path.isdir(path):
        raise ValueError(f'{path}: is a folder, not a {what} file (give the file, e.g. '
                         f'{os.path.join(path, "latest_net_E.pth")})')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: {what} file not found')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # UnpicklingError (unsafe or not a pickle), RuntimeError (not a zip / corrupt)
        raise ValueError(f'{path}: not a PyTorch {what} file that loads safely with weights_only=True '
                         f'({_short_reason(exc)}); expected a state dict saved with torch.save') from None
    if isinstance(state, dict) and 'networks' in state and isinstance(state['networks'], dict):
        raise ValueError(f'{path}: is a training state; load the network files <tag>_net_G.pth / <tag>_net_E.pth '
                         'saved beside it')
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f'{path}: does not hold a state dict of tensors (a released <epoch>_net_G.pth or '
                         '<epoch>_net_E.pth is expected)')
    return state


def _short_reason(exc: BaseException) -> str:
    text = str(exc).strip()
    if not text or 'weights_only' in text or 'Weights only load failed' in text:
        return f'{type(exc).__name__}: it is not a tensor file, or it holds other objects than tensors'
    return text.splitlines()[0][:160]


def network_kind(state: dict[str, torch.Tensor]) -> Optional[str]:
    """'G' or 'E' by the keys that only that network has; None when neither matches."""
    if 'model.model.0.weight' in state and 'weight' in state:
        return 'G'
    if 'conv1f.weight' in state and 'convs.weight' in state:
        return 'E'
    return None


def widths(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """``ngf`` (G), ``ndf`` and ``style_dim`` (E) as the tensor shapes of a state dict say."""
    found = {}
    for keys in WIDTH_KEYS.values():
        for name, (key, dim, offset) in keys.items():
            if key in state and state[key].dim() > dim:
                found[name] = int(state[key].shape[dim]) - offset
    return found


def check_state_dict(net: nn.Module, state: dict[str, torch.Tensor], path: str, kind: str) -> None:
    """Raise one ValueError that says why ``state`` does not fit ``net`` (see the module docstring)."""
    found = network_kind(state)
    if found is not None and found != kind:
        raise ValueError(f'{path}: holds {KINDS[found]}, but {KINDS[kind]} is expected here')
    expected = unwrap(net).state_dict()
    built, in_file = widths(expected), widths(state)
    diff = [name for name in WIDTH_KEYS[kind] if name in built and name in in_file and built[name] != in_file[name]]
    if diff:
        raise ValueError(f'{path}: the file has {", ".join(f"{n} {in_file[n]}" for n in diff)}, but the network '
                         f'was built with {", ".join(f"{n} {built[n]}" for n in diff)} '
                         f'({" ".join(f"--{n} {in_file[n]}" for n in diff)}, or leave the option out to read it '
                         'from the weights)')
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f'{k} (file {tuple(state[k].shape)}, network {tuple(v.shape)})'
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = [f'{len(keys)} {label}: {_first(keys)}' for label, keys in
                (('missing keys', missing), ('unexpected keys', unexpected), ('mis-shaped keys', shapes)) if keys]
    if problems:
        raise ValueError(f'{path}: does not fit the network ({"; ".join(problems)}); check --norm and --netG')


def _first(keys: list[str]) -> str:
    return ', '.join(keys[:MAX_KEYS_SHOWN]) + (', ...' if len(keys) > MAX_KEYS_SHOWN else '')


def load_weights(net: nn.Module, path: str, kind: str, state: Optional[dict[str, torch.Tensor]] = None) -> None:
    """Load ``path`` into ``net`` strictly; ``kind`` ('G' or 'E') names the expected network.

    ``state``: the file's state dict when it was already read with :func:`read_weights`.
    """
    state = read_weights(path) if state is None else state
    check_state_dict(net, state, path, kind)
    unwrap(net).load_state_dict(state, strict=True)
