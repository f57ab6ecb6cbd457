"""Checkpoint files: the released format on disk, bit-exact round trips, atomic writes, the training state.

Every bad-file message of the loader is tested in test_factory.py.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn as nn

from models import checkpoint
from models.factory import Architecture, create_networks
from util import train_state


def tiny_nets(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    return create_networks(Architecture(ngf=8, ndf=8))


def test_save_load_round_trip_is_bit_exact(tmp_path):
    G, E = tiny_nets(0)
    with torch.no_grad():  # non-default running statistics must survive too
        G(torch.rand(2, 3, 256, 256), torch.ones(2, 1, 256, 256), torch.rand(2, 16, 1, 1))
    assert not torch.equal(G.model.model[1].model[2].running_mean, torch.zeros(16))
    for name, net in (('G', G), ('E', E)):
        checkpoint.atomic_save(checkpoint.plain_state_dict(net), str(tmp_path / f'latest_net_{name}.pth'))
    G2, E2 = tiny_nets(1)
    checkpoint.load_weights(G2, str(tmp_path / 'latest_net_G.pth'), 'G')
    checkpoint.load_weights(E2, str(tmp_path / 'latest_net_E.pth'), 'E')
    for a, b in ((G, G2), (E, E2)):
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb)
        assert all(torch.equal(sa[k], sb[k]) and sa[k].dtype == sb[k].dtype for k in sa)
    assert sorted(os.listdir(tmp_path)) == ['latest_net_E.pth', 'latest_net_G.pth']  # no temporary file left


def test_saved_file_has_no_wrapper_prefixes(tmp_path):
    G, _ = tiny_nets()
    for wrapped in (nn.DataParallel(G), nn.DataParallel(nn.DataParallel(G))):
        path = str(tmp_path / 'w.pth')
        checkpoint.atomic_save(checkpoint.plain_state_dict(wrapped), path)
        keys = list(checkpoint.read_weights(path))
        assert keys == list(G.state_dict())  # the released key names, in order
        assert checkpoint.unwrap(wrapped) is G


def test_atomic_save_keeps_previous_file_when_interrupted(tmp_path, monkeypatch):
    path = str(tmp_path / 'latest_net_G.pth')
    checkpoint.atomic_save({'a': torch.ones(2)}, path)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, 'replace', boom)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.atomic_save({'a': torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)['a'], torch.ones(2))
    assert os.listdir(tmp_path) == ['latest_net_G.pth']


def test_training_state_round_trip_and_missing_parts(tmp_path):
    G, E = tiny_nets()
    state = {'progress': {'epoch': 3}, 'run': {'seed': 0}, 'networks': {'G': checkpoint.plain_state_dict(G)},
             'optimizers': [], 'schedulers': [], 'scaler': {}, 'rng': [train_state.rng_state(torch.device('cpu'))]}
    path = train_state.train_state_path(str(tmp_path), 'latest')
    assert path == str(tmp_path / 'latest_train_state.pth')
    train_state.save_train_state(state, path)
    loaded = train_state.load_train_state(path)
    assert loaded['format'] == train_state.STATE_FORMAT and loaded['progress'] == {'epoch': 3}
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in loaded['networks']['G'].items())
    with pytest.raises(ValueError, match='lacks rng'):
        train_state.save_train_state({k: v for k, v in state.items() if k != 'rng'}, path)
    with pytest.raises(FileNotFoundError, match='nope_train_state.pth: training state not found'):
        train_state.load_train_state(str(tmp_path / 'nope_train_state.pth'))
