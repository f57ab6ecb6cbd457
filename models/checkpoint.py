"""Reading and writing network weights in the released format: strict, safe and atomic."""
from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Any, Mapping

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


# ----------------------------------------------------------------------------------------------- saved sets
def train_state_path(save_dir: str, tag: str) -> str:
    """``<save_dir>/<tag>_train_state.pth``: train.py's optimizers, schedulers, counters, RNG states."""
    return os.path.join(save_dir, f'{tag}_train_state.pth')


def pending_path(path: str) -> str:
    """Where train.py writes ``path`` before renaming it into place: ``.<name>.pending`` next to it."""
    return os.path.join(os.path.dirname(path), '.' + os.path.basename(path) + '.pending')


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes."""
    with open(path, 'rb') as f:
        return hashlib.file_digest(f, 'sha256').hexdigest()


def load_train_state_file(path: str) -> dict[str, Any]:
    """A training state written by train.py (``weights_only``); ValueError if corrupt or foreign."""
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # corrupt or not a weights-only file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f'{path}: cannot be loaded as a training state ({first})') from exc
    if not isinstance(state, dict) or 'networks' not in state or 'model' not in state:
        raise ValueError(f'{path}: is not a training state written by train.py')
    return state


def state_matches(state: Mapping[str, Any], net_paths: Mapping[str, str]) -> bool:
    """Whether the network files are the ones whose SHA-256 the training state recorded."""
    digests = state.get('networks', {})
    return all(name in digests and os.path.isfile(path) and file_sha256(path) == digests[name]['sha256']
               for name, path in net_paths.items())


def check_network_set(net_paths: Mapping[str, str], checkpoints_dir: str, name: str, tag: str) -> None:
    """What must hold before ``<tag>_net_*.pth`` are loaded: every file is there, and all come from one save.

    Raises:
        FileNotFoundError: a file is missing (the message names them and the options that chose them).
        ValueError: see :func:`check_saved_set`.
    """
    missing = [p for p in net_paths.values() if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f'weights not found: {", ".join(missing)} (--name {name}, --checkpoints_dir {checkpoints_dir}, '
            f'--epoch {tag}); put <epoch>_net_G.pth and <epoch>_net_E.pth there')
    check_saved_set(net_paths, tag)


def check_saved_set(net_paths: Mapping[str, str], tag: str) -> None:
    """Refuse network files that an interrupted save of train.py left from two different saves.

    train.py writes a checkpoint as a set (``<tag>_net_*.pth`` and ``<tag>_train_state.pth``, which records
    their SHA-256): pending files first, then renames, the state last. A run stopped during the renames leaves
    ``.<tag>_train_state.pth.pending``; only then (a rare case, so the usual load stays cheap) are the network
    files compared with the recorded digests, of the old set and of the new one.

    Raises:
        ValueError: the files match neither set, with how to repair it.
    """
    save_dir = os.path.dirname(next(iter(net_paths.values())))
    state_path = train_state_path(save_dir, tag)
    pending = pending_path(state_path)
    if not os.path.exists(pending):
        return
    for path in (state_path, pending):
        try:
            if os.path.isfile(path) and state_matches(load_train_state_file(path), net_paths):
                return
        except ValueError:
            continue
    names = ', '.join(os.path.basename(p) for p in net_paths.values())
    raise ValueError(f'{save_dir}: {names} come from two different saves (train.py was stopped while saving '
                     f'"{tag}"); finish that save with train.py --continue_train, or choose another --epoch')
