"""Reading and writing network weights in the released format: strict, safe and atomic."""
from __future__ import annotations

import os
import tempfile
from typing import Any

import torch
import torch.nn as nn

_WRAPPER_PREFIXES = ('module.', '_orig_mod.')


def unwrap(net: nn.Module) -> nn.Module:
    """Return the plain network inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(net, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            net = net.module
        elif hasattr(net, '_orig_mod'):
            net = net._orig_mod
        else:
            return net


def plain_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """State dict of the unwrapped network on the CPU, without ``module.`` or ``_orig_mod.`` prefixes."""
    state = unwrap(net).state_dict()
    out = {}
    for key, value in state.items():
        for prefix in _WRAPPER_PREFIXES:
            key = key.replace(prefix, '')
        out[key] = value.detach().cpu()
    return out


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename it over ``path``.

    A process killed during the save leaves the previous file intact.
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


def load_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    """Load a state dict with ``weights_only=True``; clear errors for a missing, unsafe or foreign file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: checkpoint not found')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError for unsafe objects, RuntimeError for corrupt files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f'{path}: cannot be loaded as a weights-only state dict ({first})') from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f'{path}: is not a state dict of tensors (a plain <epoch>_net_<G|E>.pth is expected)')
    return state


def check_state_dict(net: nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    """Raise one ValueError naming every missing, unexpected and mis-shaped key of ``state`` for ``net``."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f'{k} (file {tuple(state[k].shape)}, model {tuple(v.shape)})'
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f'missing keys: {", ".join(missing)}')
    if unexpected:
        problems.append(f'unexpected keys: {", ".join(unexpected)}')
    if shapes:
        problems.append(f'mis-shaped keys: {"; ".join(shapes)}')
    if problems:
        raise ValueError(f'{path}: does not match the network ({" | ".join(problems)}); '
                         'check --ngf/--ndf/--style_dim/--norm/--netG')


def load_network(net: nn.Module, path: str) -> None:
    """Load ``path`` into ``net`` strictly (after :func:`check_state_dict`)."""
    state = load_state_dict_file(path)
    net = unwrap(net)
    check_state_dict(net, state, path)
    net.load_state_dict(state, strict=True)


def infer_architecture(state_G: dict[str, torch.Tensor], state_E: dict[str, torch.Tensor]) -> dict[str, int]:
    """Read ``ngf``, ``ndf`` and ``style_dim`` from the tensor shapes of released-format state dicts."""
    arch = {}
    if 'model.model.0.weight' in state_G:
        arch['ngf'] = int(state_G['model.model.0.weight'].shape[0])
    if 'conv1f.weight' in state_E:
        arch['ndf'] = int(state_E['conv1f.weight'].shape[0])
    if 'convs.weight' in state_E:
        arch['style_dim'] = int(state_E['convs.weight'].shape[0])
    return arch
