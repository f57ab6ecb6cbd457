"""--lr_warmup: the learning rate rises linearly over the first steps, counted by Adam itself (exact on resume)."""
from __future__ import annotations

import torch

import models
from options.train_options import TrainOptions


def test_warmup_scales_the_first_steps_and_restores_the_scheduled_rate():
    opt = TrainOptions().parse(['--gpu_ids', '-1', '--ngf', '8', '--ndf', '8', '--batch_size', '2', '--no_dropout',
                                '--lr_warmup', '4', '--lr', '0.01', '--e_lr_ratio', '0.5'])
    model = models.create_model(opt)
    model.setup()
    torch.manual_seed(0)
    batch = {'comp': torch.rand(2, 3, 256, 256) * 2 - 1, 'real': torch.rand(2, 3, 256, 256) * 2 - 1,
             'mask': (torch.rand(2, 1, 256, 256) > 0.5).float()}
    seen = {'G': [], 'E': []}
    for name, optimizer in zip('GE', model.optimizers):
        optimizer.register_step_pre_hook(lambda o, args, kwargs, name=name: seen[name].append(o.param_groups[0]['lr']))
    for _ in range(6):
        model.set_input(batch)
        model.optimize_parameters()
    assert seen['G'] == [0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01]
    assert seen['E'] == [0.00125, 0.0025, 0.00375, 0.005, 0.005, 0.005]
    assert model.current_lrs() == [0.01, 0.005]  # what the scheduler and the training state see
