"""Options: the released commands parse unchanged, bad names fail listing the valid ones, devices, saving."""
from __future__ import annotations

import logging
import math

import pytest

from options.test_options import TestOptions
from options.train_options import TrainOptions


def write_model(folder, train_opt=None, ngf=8, ndf=8):
    """A model folder: generated latest_net_{G,E}.pth (ngf/ndf 8) and optionally a train_opt.txt."""
    import torch

    from models.factory import Architecture, create_networks
    folder.mkdir(parents=True)
    netG, netE = create_networks(Architecture(ngf=ngf, ndf=ndf))
    torch.save(netG.state_dict(), folder / 'latest_net_G.pth')
    torch.save(netE.state_dict(), folder / 'latest_net_E.pth')
    if train_opt:
        lines = ['----------------- Options ---------------']
        lines += [f'{k:>25}: {v:<30}' for k, v in train_opt.items()]
        (folder / 'train_opt.txt').write_text('\n'.join(lines + ['----------------- End -------------------']) + '\n')

TRAIN_CMD = ('--name exp --model bargainnet --dataset_mode iharmony4 --is_train 1 --norm batch '
             '--preprocess resize_and_crop --gpu_ids 0 --save_epoch_freq 1 --input_nc 20 --lr 1e-4 --beta1 0.9 '
             '--lr_policy step --lr_decay_iters 6574200 --netG s2ad --dataset_root /data/iHarmony4').split()
TEST_CMD = ('--name exp --model bargainnet --dataset_mode iharmony4 --is_train 0 --norm batch '
            '--preprocess resize --gpu_ids 0 --input_nc 20 --netG s2ad --dataset_root /data/iHarmony4').split()


def test_released_train_command_parses_with_released_defaults():
    opt = TrainOptions().parse(TRAIN_CMD)
    assert opt.is_train is True
    assert (opt.lr, opt.beta1, opt.lr_policy, opt.lr_decay_iters) == (1e-4, 0.9, 'step', 6574200)
    assert (opt.niter, opt.niter_decay, opt.batch_size, opt.ngf, opt.ndf, opt.style_dim) == (100, 100, 1, 64, 64, 16)
    assert (opt.lambda_tri, opt.lambda_f2b, opt.lambda_ff2, opt.margin) == (0.01, 1.0, 1.0, 0.1)
    assert (opt.g_lr_ratio, opt.e_lr_ratio, opt.triplet_distance) == (1.0, 1.0, 'channelwise')
    assert opt.dataset_root == '/data/iHarmony4' and opt.crop_size == 256 and opt.load_size == 256


def test_released_test_command_parses(tmp_path):
    write_model(tmp_path / 'exp')
    opt = TestOptions().parse(TEST_CMD + ['--checkpoints_dir', str(tmp_path)])
    assert opt.is_train is False and opt.eval is False and math.isinf(opt.num_test)
    assert opt.preprocess == 'resize' and opt.results_dir == './results/' and opt.epoch == 'latest'
    assert opt.protocol == 'released' and (opt.ngf, opt.ndf, opt.style_dim) == (8, 8, 16)


def test_every_option_is_in_help(capsys):
    with pytest.raises(SystemExit):
        TrainOptions().parse(['--help'])
    out = capsys.readouterr().out
    for flag in ('--triplet_distance', '--lambda_tri', '--margin', '--g_lr_ratio', '--e_lr_ratio', '--lambda_f2b',
                 '--per_image_norm', '--fused_adam', '--jpeg_draft', '--dataset_root'):
        assert flag in out, flag
    with pytest.raises(SystemExit):
        TestOptions().parse(['--help'])
    out = capsys.readouterr().out
    assert '--protocol' in out and '--invert_mask' in out and '--no_eval' in out


def test_default_workers_never_exceed_the_cpus():
    import os
    cpus = len(os.sched_getaffinity(0))
    assert TrainOptions().parse([]).num_threads == min(4, cpus)


def test_model_folder_settings_are_test_defaults_and_flags_win(tmp_path, caplog):
    write_model(tmp_path / 'm', train_opt={'no_dropout': 'True', 'batch_size': '4', 'norm': 'batch'})
    base = ['--name', 'm', '--checkpoints_dir', str(tmp_path)]
    with caplog.at_level(logging.INFO):
        opt = TestOptions().parse(base)
    assert (opt.ngf, opt.ndf, opt.no_dropout, opt.eval) == (8, 8, True, True)
    assert 'settings of the model in' in caplog.text and 'eval True' in caplog.text
    assert TestOptions().parse(base + ['--no_eval']).eval is False
    write_model(tmp_path / 'single', train_opt={'no_dropout': 'False', 'batch_size': '1'})
    opt = TestOptions().parse(['--name', 'single', '--checkpoints_dir', str(tmp_path)])
    assert (opt.no_dropout, opt.eval) == (False, False)
    write_model(tmp_path / 'pin', train_opt={'batch_size': '16', 'per_image_norm': 'True'})
    assert TestOptions().parse(['--name', 'pin', '--checkpoints_dir', str(tmp_path)]).eval is False


def test_a_width_that_differs_from_the_weights_is_one_clear_error(tmp_path):
    import models
    write_model(tmp_path / 'm')
    opt = TestOptions().parse(['--name', 'm', '--checkpoints_dir', str(tmp_path), '--ngf', '16', '--gpu_ids', '-1'])
    model = models.create_model(opt)
    with pytest.raises(ValueError, match=r'latest_net_G.pth: the file has ngf 8, but the network was built with '
                                         r'ngf 16 \(--ngf 8'):
        model.setup()


def test_model_sets_its_defaults():
    opt = TrainOptions().parse(['--dataset_root', 'x'])
    assert opt.norm == 'batch' and opt.netG == 's2ad' and opt.input_nc == 20


@pytest.mark.parametrize('flag,valid', [('--model', 'bargainnet'), ('--netG', 's2ad'),
                                        ('--dataset_mode', 'iharmony4'), ('--norm', 'batch'),
                                        ('--lr_policy', 'linear')])
def test_unknown_names_fail_at_parse_time_listing_valid_names(flag, valid, capsys):
    with pytest.raises(SystemExit) as info:
        TrainOptions().parse([flag, 'nonsense'])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nonsense'" in err and valid in err


def test_input_nc_must_match_style_dim(capsys):
    with pytest.raises(SystemExit):
        TrainOptions().parse(['--input_nc', '3'])
    assert 'does not match the generator input' in capsys.readouterr().err
    assert TrainOptions().parse(['--style_dim', '8', '--input_nc', '12']).style_dim == 8


def test_gpu_ids_cpu_and_missing_cuda(caplog, monkeypatch):
    import torch
    assert TrainOptions().parse(['--gpu_ids', '-1']).gpu_ids == []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with caplog.at_level(logging.INFO):
        opt = TrainOptions().parse(['--gpu_ids', '0,1'])
    assert opt.gpu_ids == []
    assert [r.levelname for r in caplog.records] == ['WARNING']  # asked for explicitly
    assert 'CUDA is not available: running on the CPU' in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert TrainOptions().parse([]).gpu_ids == []  # the default id: one info line, no warning
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [('INFO', 'no GPU found: running on the CPU')]


def test_summary_lists_only_what_differs_from_the_defaults():
    parser = TrainOptions()
    opt = parser.parse(['--lr', '0.5', '--gpu_ids', '-1', '--name', 'run'])
    assert parser.summary(opt) == 'options: gpu_ids=-1 (CPU), lr=0.5, name=run'


def test_resolved_options_are_saved(tmp_path):
    parser = TrainOptions()
    opt = parser.parse(['--name', 'run', '--checkpoints_dir', str(tmp_path), '--lr', '0.5'])
    path = parser.save(opt)
    assert path == str(tmp_path / 'run' / 'train_opt.txt')
    text = open(path).read()
    assert 'lr: 0.5' in text and '[default: 0.0002]' in text
    test_parser = TestOptions()
    topt = test_parser.parse(['--name', 'run', '--checkpoints_dir', str(tmp_path), '--baseline', 'composite'])
    assert test_parser.save(topt, folder=str(tmp_path / 'results')) == str(tmp_path / 'results' / 'test_opt.txt')
