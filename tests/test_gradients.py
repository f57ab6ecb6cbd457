"""Per-image normalization (--per_image_norm): a batch of B is B batch-1 steps averaged, as the released code
trained at batch size 1; running statistics are updated in training and left alone by the per-image test forward.

The gradient comparison runs in float64: in float32, instance normalization over the 2x2 feature maps of the
generator's inner levels amplifies rounding to about 1% of the gradient, which would hide the difference the
test is about.
"""
from __future__ import annotations

import pytest
import torch

from models import create_model
from models.bargainnet_model import harmonize
from models.networks import SampleBatchNorm2d
from options.train_options import TrainOptions

B = 3


def double_model(tmp_path, *extra: str):
    opt = TrainOptions().parse(['--checkpoints_dir', str(tmp_path), '--name', 'g', '--gpu_ids', '-1', '--ngf', '8',
                                '--ndf', '8', '--display_id', '0', '--no_dropout', '--batch_size', str(B), *extra])
    torch.manual_seed(0)
    model = create_model(opt)
    model.setup()
    for net in model.nets.values():
        net.double()
    return model


def double_batch(n: int = B, seed: int = 0) -> dict:
    """Images of different content and foregrounds of different places and sizes, in float64."""
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(n, 3, 256, 256, generator=g, dtype=torch.float64) * 2 - 1
    mask = torch.zeros(n, 1, 256, 256, dtype=torch.float64)
    for i in range(n):
        top, left = 20 + 40 * i, 30 + 25 * i
        mask[i, :, top:top + 90 + 20 * i, left:left + 110 - 15 * i] = 1
    shift = torch.rand(n, 3, 1, 1, generator=g, dtype=torch.float64) * 0.6 - 0.3
    comp = torch.where(mask.bool(), (real + shift).clamp(-1, 1), real)
    return {'comp': comp, 'real': real, 'mask': mask, 'index': torch.arange(n)}


def gradients(model, batch: dict) -> dict[str, torch.Tensor]:
    """The gradients of one training loss (forward, L1 + triplets, backward) of ``batch``."""
    for optimizer in model.optimizers:
        optimizer.zero_grad(set_to_none=True)
    model.set_input(batch)
    model.forward()
    model.compute_losses().backward()
    return {f'{name}.{key}': p.grad.clone() for name, net in model.nets.items() for key, p in net.named_parameters()}


def max_relative_error(per_image_norm: bool, tmp_path) -> float:
    """The largest relative difference, over parameters, between the gradient of a batch of 3 and the mean of
    the 3 batch-1 gradients."""
    model = double_model(tmp_path, *(['--per_image_norm'] if per_image_norm else []))
    batch = double_batch()
    together = gradients(model, batch)
    singles = [gradients(model, {k: v[i:i + 1] for k, v in batch.items()}) for i in range(B)]
    worst = 0.0
    for key, grad in together.items():
        assert grad.dtype == torch.float64
        mean = sum(s[key] for s in singles) / B
        scale = mean.abs().max().item()
        assert scale > 0, key  # every parameter gets a gradient
        worst = max(worst, (grad - mean).abs().max().item() / scale)
    return worst


def test_per_image_norm_batch_gradient_is_the_mean_of_batch1_gradients(tmp_path):
    assert max_relative_error(True, tmp_path) < 1e-9


def test_plain_batchnorm_mixes_the_images_of_a_batch(tmp_path):
    assert max_relative_error(False, tmp_path) > 1e-3  # the check above can fail


def test_running_statistics_are_the_mean_of_the_images_statistics_in_training(tmp_path):
    model = double_model(tmp_path, '--per_image_norm')
    norm = model.nets['E'].norm2f
    seen = []

    def record(module, inputs, output):
        seen.append((inputs[0].detach().clone(), module.running_mean.clone(), module.running_var.clone()))

    norm.register_forward_hook(record)
    mean, var = norm.running_mean.clone(), norm.running_var.clone()
    model.set_input(double_batch())
    model.optimize_parameters()
    assert len(seen) == 4  # E runs on four regions per step
    m = norm.momentum
    for x, after_mean, after_var in seen:
        mean = (1 - m) * mean + m * x.mean(dim=(2, 3)).mean(0)
        var = (1 - m) * var + m * x.var(dim=(2, 3), unbiased=True).mean(0)
        assert torch.allclose(after_mean, mean, rtol=1e-10, atol=1e-12)
        assert torch.allclose(after_var, var, rtol=1e-10, atol=1e-12)
    assert not torch.equal(norm.running_mean, torch.zeros_like(norm.running_mean))
    g_norms = [mod for mod in model.nets['G'].modules() if isinstance(mod, SampleBatchNorm2d)]
    assert g_norms and all(not torch.equal(mod.running_var, torch.ones_like(mod.running_var)) for mod in g_norms)


@pytest.mark.parametrize('per_image', [True, False])
def test_test_forward_leaves_running_statistics_and_modes_alone(tmp_path, per_image):
    model = double_model(tmp_path, '--per_image_norm')
    netG, netE = model.nets['G'], model.nets['E']
    model.set_input(double_batch())
    model.optimize_parameters()  # statistics that differ from the initial ones
    buffers = {f'{n}.{k}': v.clone() for n, net in model.nets.items() for k, v in net.named_buffers()}
    b = double_batch(seed=1)
    harm, _ = harmonize(netG, netE, b['comp'], b['mask'], b['real'], per_image=per_image)
    assert harm.shape == (B, 3, 256, 256) and torch.isfinite(harm).all()
    after = {f'{n}.{k}': v for n, net in model.nets.items() for k, v in net.named_buffers()}
    assert all(torch.equal(after[k], v) for k, v in buffers.items())
    assert netG.training and netE.training  # the training modes are restored


def test_a_test_forward_during_training_keeps_per_image_normalization():
    from models.bargainnet_model import harmonize
    from models.factory import Architecture, create_networks
    from models.networks import SampleBatchNorm2d, set_per_sample

    netG, netE = create_networks(Architecture(ngf=8, ndf=8, use_dropout=False))
    for net in (netG, netE):
        net.train()
        set_per_sample(net, True, update_stats=True)
    comp = torch.rand(1, 3, 256, 256) * 2 - 1
    mask = torch.zeros(1, 1, 256, 256)
    mask[..., 64:192, 64:192] = 1
    for per_image in (True, False):
        harmonize(netG, netE, comp, mask, comp, per_image=per_image)
        norms = [m for net in (netG, netE) for m in net.modules() if isinstance(m, SampleBatchNorm2d)]
        assert netG.training and netE.training
        assert all(m.per_sample and m.update_stats for m in norms)
