"""The BargainNet model: the released losses, optimization, the light test path, checkpoints through the model."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models import create_model, networks
from options.test_options import TestOptions
from options.train_options import TrainOptions

TINY = ['--ngf', '8', '--ndf', '8', '--gpu_ids', '-1', '--display_id', '0']


def batch(n: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(n, 3, 256, 256, generator=g) * 2 - 1
    mask = torch.zeros(n, 1, 256, 256)
    mask[:, :, 64:192, 32:160] = 1
    comp = torch.where(mask.bool(), (real * 0.5 + 0.3).clamp(-1, 1), real)
    return {'comp': comp, 'real': real, 'mask': mask, 'index': torch.arange(n),
            'comp_path': [f'c{i}.jpg' for i in range(n)]}


def train_model(tmp_path, *extra: str):
    opt = TrainOptions().parse(TINY + ['--checkpoints_dir', str(tmp_path), '--name', 'm', *extra])
    torch.manual_seed(0)
    model = create_model(opt)
    model.setup()
    return model


@pytest.mark.parametrize('distance', ['channelwise', 'euclidean'])
def test_loss_is_l1_plus_weighted_triplets(tmp_path, distance):
    model = train_model(tmp_path, '--triplet_distance', distance, '--lambda_tri', '0.5', '--lambda_f2b', '2')
    model.set_input(batch(2))
    model.forward()
    total = model.compute_losses()
    z_b, z_f, z_hf, z_cf = model.z_b, model.z_f, model.z_hf, model.z_cf
    assert z_b.shape == (2, 16, 1, 1)
    tri = (networks.triplet_loss(z_f, z_hf, z_cf, 0.1, distance)
           + 2 * networks.triplet_loss(z_hf, z_b, z_cf, 0.1, distance))
    expected = F.l1_loss(model.harm, model.real) + 0.5 * tri
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert model.get_current_losses()['tri'] == pytest.approx(0.5 * tri.item(), rel=1e-6)


def test_codes_come_from_the_right_regions(tmp_path):
    model = train_model(tmp_path)
    b = batch(1)
    model.set_input(b)
    model.forward()
    E = model.nets['E']
    with torch.no_grad():
        assert torch.allclose(model.z_b, E(b['real'], 1 - b['mask']), atol=1e-6)
        assert torch.allclose(model.z_f, E(b['real'], b['mask']), atol=1e-6)
        assert torch.allclose(model.z_cf, E(b['comp'], b['mask']), atol=1e-6)
        assert torch.allclose(model.z_hf, E(model.harm, b['mask']), atol=1e-6)


def test_extractor_learns_from_l1_through_background_code(tmp_path):
    model = train_model(tmp_path, '--lambda_tri', '0')
    model.set_input(batch(2))
    model.forward()
    model.compute_losses().backward()
    assert model.nets['E'].conv1f.weight.grad.abs().sum() > 0


def test_optimize_steps_both_networks_with_their_ratios(tmp_path):
    model = train_model(tmp_path, '--lr', '1e-3', '--g_lr_ratio', '2', '--e_lr_ratio', '0.5', '--batch_size', '3')
    assert model.current_lrs() == [pytest.approx(2e-3), pytest.approx(5e-4)]
    before = {k: v.clone() for k, v in model.nets['E'].state_dict().items()}
    g_before = model.nets['G'].weight.clone()
    model.set_input(batch(3))
    model.optimize_parameters()
    assert not torch.equal(model.nets['E'].conv1f.weight, before['conv1f.weight'])
    assert not torch.equal(model.nets['G'].weight, g_before)
    assert all(torch.isfinite(torch.tensor(v)) for v in model.get_current_losses().values())


@pytest.mark.filterwarnings('ignore:Detected call of `lr_scheduler.step\\(\\)` before')
def test_linear_schedule_is_released_semantics(tmp_path):
    model = train_model(tmp_path, '--niter', '2', '--niter_decay', '2', '--lr', '1.0')
    lrs = [model.update_learning_rate() for _ in range(4)]
    # epochs 1..2 at lr, then 1 - (epoch + 1 - 2) / 3 for the next epochs
    assert lrs == [pytest.approx(v) for v in (1.0, 2 / 3, 1 / 3, 0.0)]


def save_tiny(tmp_path):
    model = train_model(tmp_path)
    model.set_input(batch(2))
    model.optimize_parameters()
    model.save_networks('latest')
    return model


def test_model_save_load_round_trip(tmp_path):
    trained = save_tiny(tmp_path)
    assert sorted(p.name for p in (tmp_path / 'm').iterdir()) == ['latest_net_E.pth', 'latest_net_G.pth']
    opt = TestOptions().parse(TINY[:-2] + ['--checkpoints_dir', str(tmp_path), '--name', 'm'])
    model = create_model(opt)
    model.setup()
    for name in ('G', 'E'):
        a, b = trained.nets[name].state_dict(), model.nets[name].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_missing_weights_error_names_files_and_options(tmp_path):
    with pytest.raises(FileNotFoundError) as info:  # the options already look into the model folder
        TestOptions().parse(TINY[:-2] + ['--checkpoints_dir', str(tmp_path), '--name', 'nothing', '--epoch', '7'])
    msg = str(info.value)
    assert '7_net_G.pth' in msg and '7_net_E.pth' in msg and str(tmp_path / 'nothing') in msg
    assert 'does not exist' in msg and '--name' in msg and '--checkpoints_dir' in msg and '--epoch' in msg


def count_calls(net):
    calls = []
    net.register_forward_hook(lambda *a: calls.append(1))
    return calls


@pytest.mark.parametrize('eval_flag', [[], ['--eval']])
def test_test_path_is_light_and_batch_size_independent(tmp_path, eval_flag):
    save_tiny(tmp_path)
    opt = TestOptions().parse(TINY[:-2] + ['--checkpoints_dir', str(tmp_path), '--name', 'm', *eval_flag])
    model = create_model(opt)
    model.setup()
    saved = {k: v.clone() for k, v in model.nets['G'].state_dict().items()}
    e_calls, g_calls = count_calls(model.nets['E']), count_calls(model.nets['G'])
    b = batch(3, seed=1)
    model.set_input(b)
    model.test()
    assert len(e_calls) == 1 and len(g_calls) == 1  # one background code, one generator pass
    together = model.harm.clone()
    singles = []
    for i in range(3):
        model.set_input({k: v[i:i + 1] for k, v in b.items()})
        model.test()
        singles.append(model.harm)
    assert torch.allclose(together, torch.cat(singles), atol=1e-6, rtol=0)
    model.set_input(b)
    model.test()
    assert torch.equal(model.harm, together)  # repeatable: dropout masks come from --seed and the index
    assert model.per_image is not bool(eval_flag)
    assert all(torch.equal(v, saved[k]) for k, v in model.nets['G'].state_dict().items())  # statistics untouched


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_mixed_precision_training_steps_are_finite(tmp_path, amp):
    model = train_model(tmp_path, '--amp', amp, '--batch_size', '2')
    assert (model.scaler is not None) == (amp == 'fp16')
    before = model.nets['G'].weight.clone()
    for _ in range(2):
        model.set_input(batch(2))
        model.optimize_parameters()
        assert all(torch.isfinite(torch.tensor(v)) for v in model.get_current_losses().values())
    assert torch.isfinite(model.harm).all() and model.harm.dtype in (torch.float16, torch.bfloat16)
    assert not torch.equal(model.nets['G'].weight, before)
    assert all(torch.isfinite(p).all() for net in model.nets.values() for p in net.parameters())
