"""Random generator states and the self-contained training state ``<tag>_train_state.pth``.

The training state holds everything a resumed run needs, so that resuming never mixes two saves: the networks
(plain state dicts), the optimizers, the schedulers, the fp16 gradient scaler, the random generator states of
every process, the position in the data order and the epoch's loss sums. It is one file written atomically
(temporary file, then ``os.replace``): a process killed at any moment leaves the previous complete state. It
holds tensors, numbers and strings only, so it loads with ``weights_only=True``.
"""
from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

from models.checkpoint import atomic_save

STATE_FORMAT = 2
STATE_KEYS = ('format', 'progress', 'run', 'networks', 'optimizers', 'schedulers', 'scaler', 'rng')


def train_state_path(folder: str, tag: str) -> str:
    """``<folder>/<tag>_train_state.pth``."""
    return os.path.join(folder, f'{tag}_train_state.pth')


# ----------------------------------------------------------------------------------------------- generators
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


# ----------------------------------------------------------------------------------------------- the state file
def save_train_state(state: dict[str, Any], path: str) -> None:
    """Write ``state`` (the keys of ``STATE_KEYS`` but ``format``) to ``path`` atomically."""
    missing = [k for k in STATE_KEYS[1:] if k not in state]
    if missing:
        raise ValueError(f'training state for {path} lacks {", ".join(missing)}')
    atomic_save({'format': STATE_FORMAT, **state}, path)


def load_train_state(path: str) -> dict[str, Any]:
    """The training state saved in ``path``, loaded with ``weights_only=True`` on the CPU.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file does not load safely or is not a training state of this format.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: training state not found')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # a torn or foreign file: UnpicklingError, RuntimeError, EOFError ...
        raise ValueError(f'{path}: not a training state that loads with weights_only=True ({type(exc).__name__}); '
                         'move it away to continue from the network files beside it with fresh optimizers') from None
    if not isinstance(state, dict) or state.get('format') != STATE_FORMAT:
        found = state.get('format') if isinstance(state, dict) else type(state).__name__
        raise ValueError(f'{path}: training-state format {found} is not {STATE_FORMAT} (written by another version '
                         'of train.py); move it away to continue from the network files beside it with fresh '
                         'optimizers')
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise ValueError(f'{path}: training state without {", ".join(missing)}')
    return state


def remove_stale_temporaries(folder: str) -> list[str]:
    """Delete the temporary files that a process killed while saving left in ``folder``; return their paths.

    :func:`models.checkpoint.atomic_save` writes ``.<name>.<random>.tmp`` beside its target; one left behind is
    never a complete save. Call it only while no other process saves into ``folder``.
    """
    if not os.path.isdir(folder):
        return []
    removed = []
    for name in os.listdir(folder):
        if name.startswith('.') and name.endswith('.tmp') and '.pth.' in name:
            os.remove(os.path.join(folder, name))
            removed.append(os.path.join(folder, name))
    return removed
