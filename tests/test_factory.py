"""The one factory and the one loader: building, loading strictly, and one clear line for every bad file."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from models.checkpoint import load_weights, read_weights
from models.factory import (Architecture, create_networks, load_bargainnet, load_extractor, model_defaults,
                            resolve_gpu_ids, select_device, trained_settings)


@pytest.fixture()
def model_dir(tmp_path):
    netG, netE = create_networks(Architecture(ngf=8, ndf=8, use_dropout=False))
    folder = tmp_path / 'm'
    folder.mkdir()
    torch.save(netG.state_dict(), folder / 'latest_net_G.pth')
    torch.save(netE.state_dict(), folder / 'latest_net_E.pth')
    return folder


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert '\n' not in text and len(text) < 400, text
    return text


def test_released_key_names_and_shapes():
    netG, netE = create_networks(Architecture())
    for net, kind in ((netG, 'G'), (netE, 'E')):
        table = Path(__file__).parent / 'reference' / f'checkpoint_keys_{kind}.tsv'
        rows = [line.split('\t') for line in open(table).read().splitlines()[1:] if line]
        expected = {key: shape for key, shape, _ in rows}
        got = {k: 'x'.join(map(str, v.shape)) or 'scalar' for k, v in net.state_dict().items()}
        assert got == expected and list(got) == list(expected)


def test_load_bargainnet_round_trip_reads_widths_and_folder_settings(model_dir):
    (model_dir / 'train_opt.txt').write_text('---\n               no_dropout: True    \t[default: False]\n'
                                             '               batch_size: 4\n---\n')
    netG, netE, arch = load_bargainnet(str(model_dir))
    assert (arch.ngf, arch.ndf, arch.style_dim, arch.use_dropout) == (8, 8, 16, False)
    saved = torch.load(model_dir / 'latest_net_G.pth', weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in netG.state_dict().items())
    assert trained_settings(str(model_dir)) == {'no_dropout': 'True', 'batch_size': '4'}
    states = {'G': saved}
    assert model_defaults(str(model_dir), states) == {'ngf': 8, 'style_dim': 16, 'no_dropout': True, 'eval': True}


def test_text_file_is_refused_without_unsafe_advice(tmp_path):
    path = tmp_path / 'notes.pth'
    path.write_text('hello')
    with pytest.raises(ValueError) as exc:
        read_weights(str(path))
    text = one_line(exc)
    assert text.startswith(f'{path}: not a PyTorch weights file that loads safely') and 'weights_only=False' not in text


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / 'obj.pth'
    torch.save({'a': torch.zeros(1), 'b': object.__new__(Architecture)}, path)
    with pytest.raises(ValueError) as exc:
        read_weights(str(path))
    assert 'weights_only=False' not in one_line(exc)


def test_folder_missing_file_and_training_state(tmp_path, model_dir):
    with pytest.raises(ValueError, match='is a folder, not a weights file'):
        read_weights(str(model_dir))
    with pytest.raises(FileNotFoundError, match='weights file not found'):
        read_weights(str(tmp_path / 'nope.pth'))
    state = tmp_path / 'latest_train_state.pth'
    torch.save({'networks': {'G': {}}, 'epoch': 3}, state)
    with pytest.raises(ValueError, match='is a training state'):
        read_weights(str(state))
    torch.save([torch.zeros(1)], tmp_path / 'list.pth')
    with pytest.raises(ValueError, match='does not hold a state dict of tensors'):
        read_weights(str(tmp_path / 'list.pth'))


def test_the_other_network_is_named(model_dir):
    netG, netE = create_networks(Architecture(ngf=8, ndf=8))
    with pytest.raises(ValueError) as exc:
        load_weights(netE, str(model_dir / 'latest_net_G.pth'), 'E')
    assert one_line(exc).endswith('holds a generator (G, *_net_G.pth), but a domain code extractor (E, *_net_E.pth) '
                                  'is expected here')
    with pytest.raises(ValueError, match=r'holds a domain code extractor \(E'):
        load_weights(netG, str(model_dir / 'latest_net_E.pth'), 'G')
    with pytest.raises(ValueError, match=r'holds a generator'):
        load_extractor(str(model_dir / 'latest_net_G.pth'))


def test_width_mismatch_says_both_widths(model_dir):
    with pytest.raises(ValueError) as exc:
        load_bargainnet(str(model_dir), ngf=64)
    assert 'the file has ngf 8, but the network was built with ngf 64 (--ngf 8' in one_line(exc)
    with pytest.raises(ValueError) as exc:
        load_bargainnet(str(model_dir), style_dim=8)
    assert 'latest_net_G.pth: the file has style_dim 16, but the network was built with style_dim 8' in one_line(exc)
    _, netE = create_networks(Architecture(ndf=16, style_dim=8))
    with pytest.raises(ValueError) as exc:
        load_weights(netE, str(model_dir / 'latest_net_E.pth'), 'E')
    assert 'the file has ndf 8, style_dim 16, but the network was built with ndf 16, style_dim 8' in one_line(exc)


def test_other_key_problems_are_listed_briefly(model_dir, tmp_path):
    state = torch.load(model_dir / 'latest_net_G.pth', weights_only=True)
    del state['model.model.3.bias']
    state['extra'] = torch.zeros(1)
    torch.save(state, tmp_path / 'g.pth')
    netG, _ = create_networks(Architecture(ngf=8, ndf=8))
    with pytest.raises(ValueError) as exc:
        load_weights(netG, str(tmp_path / 'g.pth'), 'G')
    assert '1 missing keys: model.model.3.bias; 1 unexpected keys: extra' in one_line(exc)


def test_missing_checkpoint_names_the_folder_contents(model_dir):
    with pytest.raises(FileNotFoundError) as exc:
        load_bargainnet(str(model_dir), epoch='7')
    assert 'holds latest_net_E.pth, latest_net_G.pth' in one_line(exc)


def test_device_rule(monkeypatch, caplog):
    assert resolve_gpu_ids([-1]) == [] and select_device([]) == torch.device('cpu')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with caplog.at_level(logging.INFO):
        assert resolve_gpu_ids([0], requested=False) == []
    assert [r.levelname for r in caplog.records] == ['INFO']
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    assert resolve_gpu_ids([0]) == [0] and select_device([0]) == torch.device('cuda', 0)
    with pytest.raises(ValueError, match='this machine has 1 GPU'):
        resolve_gpu_ids([3])


def test_extractor_takes_its_normalization_from_the_folder(tmp_path):
    _, netE = create_networks(Architecture(ngf=8, ndf=8, norm='instance'))
    torch.save(netE.state_dict(), tmp_path / 'latest_net_E.pth')
    with pytest.raises(ValueError, match='missing keys: norm2f'):  # built with batch normalization
        load_extractor(str(tmp_path / 'latest_net_E.pth'))
    (tmp_path / 'train_opt.txt').write_text('                     norm: instance                      \n')
    loaded = load_extractor(str(tmp_path / 'latest_net_E.pth'))
    assert all(torch.equal(v, netE.state_dict()[k]) for k, v in loaded.state_dict().items())
