"""Checkpoints: released format on disk, strict and safe loading, atomic writes."""
from __future__ import annotations

import os
import pickle

import pytest
import torch
import torch.nn as nn

from models import checkpoint, networks


def tiny_nets(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    return networks.define_G(20, 3, 8, 's2ad'), networks.define_E(16, ndf=8)


def test_save_load_round_trip_is_bit_exact(tmp_path):
    G, E = tiny_nets(0)
    with torch.no_grad():  # non-default running statistics must survive too
        G(torch.rand(2, 3, 256, 256), torch.ones(2, 1, 256, 256), torch.rand(2, 16, 1, 1))
    for name, net in (('G', G), ('E', E)):
        checkpoint.atomic_save(checkpoint.plain_state_dict(net), str(tmp_path / f'latest_net_{name}.pth'))
    G2, E2 = tiny_nets(1)
    checkpoint.load_network(G2, str(tmp_path / 'latest_net_G.pth'))
    checkpoint.load_network(E2, str(tmp_path / 'latest_net_E.pth'))
    for a, b in ((G, G2), (E, E2)):
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb)
        assert all(torch.equal(sa[k], sb[k]) and sa[k].dtype == sb[k].dtype for k in sa)
    assert not any(f.endswith('.tmp') for f in os.listdir(tmp_path))


def test_saved_file_has_no_wrapper_prefixes(tmp_path):
    G, _ = tiny_nets()
    wrapped = nn.DataParallel(G)
    path = str(tmp_path / 'w.pth')
    checkpoint.atomic_save(checkpoint.plain_state_dict(wrapped), path)
    keys = list(torch.load(path, weights_only=True))
    assert keys[0] == 'weight' and not any(k.startswith(('module.', '_orig_mod.')) for k in keys)


def test_wrong_shape_and_missing_key_named_in_one_error(tmp_path):
    G, _ = tiny_nets()
    state = checkpoint.plain_state_dict(G)
    state['model.model.0.weight'] = torch.zeros(8, 19, 4, 4)
    del state['model.model.3.bias']
    state['extra.weight'] = torch.zeros(1)
    path = str(tmp_path / 'bad_net_G.pth')
    torch.save(state, path)
    with pytest.raises(ValueError) as info:
        checkpoint.load_network(tiny_nets()[0], path)
    msg = str(info.value)
    assert path in msg and '\n' not in msg
    assert 'missing keys: model.model.3.bias' in msg
    assert 'unexpected keys: extra.weight' in msg
    assert 'model.model.0.weight (file (8, 19, 4, 4), model (8, 20, 4, 4))' in msg


def test_released_width_checkpoint_into_small_model_is_refused(tmp_path):
    big = networks.define_E(16, ndf=64)
    path = str(tmp_path / 'latest_net_E.pth')
    torch.save(big.state_dict(), path)
    with pytest.raises(ValueError, match='mis-shaped keys: conv1f.weight'):
        checkpoint.load_network(networks.define_E(16, ndf=8), path)
    assert checkpoint.infer_architecture({}, torch.load(path, weights_only=True)) == {'ndf': 64, 'style_dim': 16}


class Evil:
    def __reduce__(self):
        return (os.system, ('echo pwned',))


def test_pickled_objects_are_refused(tmp_path):
    path = str(tmp_path / 'evil_net_G.pth')
    with open(path, 'wb') as f:
        pickle.dump({'weight': Evil()}, f)
    with pytest.raises(ValueError, match='cannot be loaded as a weights-only state dict'):
        checkpoint.load_state_dict_file(path)


def test_missing_and_non_state_dict_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth: checkpoint not found'):
        checkpoint.load_state_dict_file(str(tmp_path / 'nope.pth'))
    path = str(tmp_path / 'list.pth')
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError, match='is not a state dict of tensors'):
        checkpoint.load_state_dict_file(path)
    junk = tmp_path / 'junk.pth'
    junk.write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='junk.pth: cannot be loaded'):
        checkpoint.load_state_dict_file(str(junk))


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
