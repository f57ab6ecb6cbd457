"""Options: the released commands parse unchanged, bad names fail listing the valid ones, devices, saving."""
from __future__ import annotations

import logging
import math

import pytest

from options.test_options import TestOptions
from options.train_options import TrainOptions

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


def test_released_test_command_parses():
    opt = TestOptions().parse(TEST_CMD)
    assert opt.is_train is False and opt.eval is False and math.isinf(opt.num_test)
    assert opt.preprocess == 'resize' and opt.results_dir == './results/' and opt.epoch == 'latest'


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


def test_gpu_ids_cpu_and_missing_cuda_warning(caplog, monkeypatch):
    import torch
    assert TrainOptions().parse(['--gpu_ids', '-1']).gpu_ids == []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with caplog.at_level(logging.WARNING):
        opt = TrainOptions().parse(['--gpu_ids', '0,1'])
    assert opt.gpu_ids == []
    assert 'CUDA is not available: running on the CPU' in caplog.text


def test_resolved_options_are_saved(tmp_path):
    parser = TrainOptions()
    opt = parser.parse(['--name', 'run', '--checkpoints_dir', str(tmp_path), '--lr', '0.5'])
    path = parser.save(opt)
    assert path == str(tmp_path / 'run' / 'train_opt.txt')
    text = open(path).read()
    assert 'lr: 0.5' in text and '[default: 0.0002]' in text
    test_parser = TestOptions()
    topt = test_parser.parse(['--name', 'run', '--checkpoints_dir', str(tmp_path)])
    assert test_parser.save(topt).endswith('test_opt.txt')
