"""train.py: checkpoints of an epoch, learning, exact resume, crash safety, signals, NaN guard, torchrun."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import data
import train
from models import checkpoint, create_model
from models.bargainnet_model import BargainNetModel
from options.train_options import TrainOptions
from util.cli import run_main

ROOT = Path(__file__).resolve().parents[1]
LOSS_LINE = re.compile(r'^\(epoch: (\d+), iters: (\d+), time: \d+\.\d{3}, data: \d+\.\d{3}\) L1: \d+\.\d{3} tri: '
                       r'\d+\.\d{3} $')


def tiny_args(dataset: Path, ckpt: Path, name: str, *extra: str) -> list[str]:
    return ['--dataset_root', str(dataset), '--checkpoints_dir', str(ckpt), '--name', name, '--gpu_ids', '-1',
            '--ngf', '8', '--ndf', '8', '--num_threads', '0', '--display_id', '0', *extra]


def load_state(path: Path) -> dict:
    return torch.load(path, map_location='cpu', weights_only=True)


def same_weights(dir_a: Path, dir_b: Path, tag: str = 'latest') -> bool:
    for name in ('G', 'E'):
        a = checkpoint.load_state_dict_file(str(dir_a / f'{tag}_net_{name}.pth'))
        b = checkpoint.load_state_dict_file(str(dir_b / f'{tag}_net_{name}.pth'))
        if list(a) != list(b) or not all(torch.equal(a[k], b[k]) for k in a):
            return False
    return True


def subprocess_env() -> dict:
    return {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}


# ------------------------------------------------------------------------------------------------ one epoch
@pytest.fixture(scope='module')
def one_epoch(tiny_dataset, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp('ckpt')
    args = tiny_args(tiny_dataset, ckpt, 'epoch', '--batch_size', '4', '--niter', '1', '--niter_decay', '0',
                     '--print_freq', '1', '--display_freq', '1', '--save_epoch_freq', '1')
    assert train.main(args) == 0
    return ckpt / 'epoch', args


def test_one_epoch_writes_released_weights_training_state_log_and_html(one_epoch):
    run, _ = one_epoch
    for tag in ('latest', '1'):
        for name in ('G', 'E'):
            state = checkpoint.load_state_dict_file(str(run / f'{tag}_net_{name}.pth'))  # plain, weights_only
            assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
        st = load_state(run / f'{tag}_train_state.pth')
        # 8 images, batch 4: 2 iterations; the epoch is over, so the next one is 2
        assert (st['epoch'], st['epoch_iter'], st['total_iters'], st['tag']) == (2, 0, 2, tag)
        assert len(st['model']['optimizers']) == 2 and len(st['model']['schedulers']) == 2
        assert set(st['rng'][0]) >= {'torch', 'numpy', 'python'}
    assert same_weights(run, run, 'latest')
    lines = (run / 'loss_log.txt').read_text().splitlines()
    assert lines[0].startswith('================ Training Loss (')
    assert [LOSS_LINE.match(line).groups() for line in lines[1:]] == [('1', '1'), ('1', '2')]
    html = (run / 'web' / 'index.html').read_text()
    assert 'epoch [1]' in html
    for visual in ('comp', 'real', 'harm', 'mask'):
        assert (run / 'web' / 'images' / f'epoch001_{visual}.png').is_file()
        assert f'images/epoch001_{visual}.png' in html
    assert (run / 'train_opt.txt').is_file()
    assert not list(run.glob('.*'))  # no temporary or pending files left


def test_continue_from_released_weights_only_starts_fresh_optimizers(one_epoch, tmp_path, capfd):
    run, args = one_epoch
    released = tmp_path / 'ckpt' / 'released'
    released.mkdir(parents=True)
    for name in ('G', 'E'):
        shutil.copy(run / f'latest_net_{name}.pth', released / f'latest_net_{name}.pth')
    args = tiny_args(Path(args[1]), tmp_path / 'ckpt', 'released', '--batch_size', '4', '--niter', '3',
                     '--niter_decay', '0', '--continue_train', '--epoch_count', '2', '--max_iters', '1')
    capfd.readouterr()
    assert train.main(args) == 0
    err = capfd.readouterr().err
    assert 'no training state' in err and 'fresh optimizers' in err
    st = load_state(released / 'latest_train_state.pth')
    assert (st['epoch'], st['epoch_iter'], st['total_iters'], st['epoch_count']) == (2, 1, 1, 2)
    assert st['model']['optimizers'][0]['state'][0]['step'].item() == 1  # Adam started afresh


# ------------------------------------------------------------------------------------------------ learning
def test_loss_on_a_fixed_batch_falls_over_30_steps(tiny_dataset, tmp_path):
    opt = TrainOptions().parse(tiny_args(tiny_dataset, tmp_path, 'fixed', '--batch_size', '1', '--lr', '1e-3'))
    torch.manual_seed(0)
    loader = data.create_dataloader(opt, data.create_dataset(opt, 'train'), shuffle=False)
    batch = next(iter(loader))
    model = create_model(opt)
    model.setup()
    model.set_input(batch)
    losses = []
    for _ in range(30):
        model.optimize_parameters()
        losses.append(sum(model.get_current_losses().values()))
    assert losses[-1] < 0.5 * losses[0], losses


# ------------------------------------------------------------------------------------------------ exact resume
@pytest.mark.parametrize('workers, batch_size, resume_extra', [('0', '1', ['--epoch_count', '5']), ('2', '2', [])])
def test_stop_and_continue_is_bit_exact(tiny_dataset, tmp_path, workers, batch_size, resume_extra):
    """With 0 and 2 loader processes; a pix2pix-style --epoch_count on resume must not change the schedule."""
    # two iterations per epoch, two epochs; the learning rate decays after the first
    common = ['--batch_size', batch_size, '--max_dataset_size', str(2 * int(batch_size)), '--niter', '1',
              '--niter_decay', '1', '--num_threads', workers, '--save_epoch_freq', '1', '--no_html']
    assert train.main(tiny_args(tiny_dataset, tmp_path, 'full', *common)) == 0
    # stop in the middle of epoch 2 (after the scheduler stepped once), then continue
    assert train.main(tiny_args(tiny_dataset, tmp_path, 'part', *common, '--max_iters', '3')) == 0
    st = load_state(tmp_path / 'part' / 'latest_train_state.pth')
    assert (st['epoch'], st['epoch_iter'], st['total_iters']) == (2, 1, 3)
    assert not same_weights(tmp_path / 'full', tmp_path / 'part')
    assert train.main(tiny_args(tiny_dataset, tmp_path, 'part', *common, '--continue_train', *resume_extra)) == 0
    assert same_weights(tmp_path / 'full', tmp_path / 'part')
    a, b = (load_state(tmp_path / n / 'latest_train_state.pth') for n in ('full', 'part'))
    assert a['total_iters'] == b['total_iters'] == 4
    for sa, sb in zip(a['model']['optimizers'], b['model']['optimizers']):
        assert all(torch.equal(sa['state'][i]['exp_avg_sq'], sb['state'][i]['exp_avg_sq']) for i in sa['state'])
        assert [g['lr'] for g in sa['param_groups']] == [g['lr'] for g in sb['param_groups']]
    assert a['model']['schedulers'] == b['model']['schedulers']  # same learning-rate schedule, stepped as often
    assert torch.equal(a['rng'][0]['torch'], b['rng'][0]['torch'])


def test_sampler_shards_and_resumes_the_same_order():
    full = list(train.ResumableSampler(10, shuffle=True, seed=3))
    assert sorted(i for i, _ in full) == list(range(10))
    sampler = train.ResumableSampler(10, shuffle=True, seed=3)
    sampler.set_epoch(0, start=4)
    assert list(sampler) == full[4:] and len(sampler) == 6
    sampler.set_epoch(1)
    assert [i for i, _ in sampler] != [i for i, _ in full]  # a new order every epoch
    shards = [train.ResumableSampler(10, shuffle=True, seed=3, rank=r, world_size=3) for r in range(3)]
    got = [[i for i, _ in s] for s in shards]
    assert all(len(g) == 4 for g in got)  # padded to 12 like DistributedSampler
    assert set().union(*got) == set(range(10))
    serial = train.ResumableSampler(5, shuffle=False, seed=0)
    assert [i for i, _ in serial] == [0, 1, 2, 3, 4]


def test_augmentation_depends_on_sample_and_epoch_not_on_history(tiny_dataset, tmp_path):
    opt = TrainOptions().parse(tiny_args(tiny_dataset, tmp_path, 'aug'))
    items = train.SeededItems(data.create_dataset(opt, 'train'))
    key = (3, train.item_seed(0, 1, 3))
    first = items[key]['comp']
    items[(5, train.item_seed(0, 1, 5))]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    assert torch.equal(items[key]['comp'], first)
    assert torch.equal(torch.get_rng_state(), state)  # the main process's generators are left alone
    assert not torch.equal(items[(3, train.item_seed(0, 2, 3))]['comp'], first)


# ------------------------------------------------------------------------------------------------ crash safety
class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no cleanup beyond what already happened."""


def tiny_model(tmp_path: Path):
    opt = TrainOptions().parse(['--checkpoints_dir', str(tmp_path), '--name', 'k', '--gpu_ids', '-1', '--ngf', '8',
                                '--ndf', '8', '--display_id', '0'])
    model = create_model(opt)
    model.setup()
    return model


def perturb(model) -> None:
    with torch.no_grad():
        for net in model.nets.values():
            for p in net.parameters():
                p.add_(0.01)


@pytest.mark.parametrize('kill_at', range(1, 7))
def test_a_save_killed_at_any_rename_leaves_a_consistent_set(tmp_path, monkeypatch, kill_at):
    """The save does six renames (three pending files, then three commits); kill before each of them."""
    model = tiny_model(tmp_path)
    train.save_checkpoint(model, 'latest', {'format': train.STATE_FORMAT, 'model': {}, 'version': 'old'})
    def snapshot():
        return {n: {k: v.clone() for k, v in checkpoint.plain_state_dict(net).items()} for n, net in model.nets.items()}

    old = snapshot()
    perturb(model)
    new = snapshot()
    calls = []
    real_replace = os.replace

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == kill_at:
            raise Killed
        real_replace(src, dst)

    monkeypatch.setattr(os, 'replace', replace)
    with pytest.raises(Killed):
        train.save_checkpoint(model, 'latest', {'format': train.STATE_FORMAT, 'model': {}, 'version': 'new'})
    monkeypatch.setattr(os, 'replace', real_replace)

    # before any repair, loaders (test.py, the API) refuse only the torn set: G renamed, E not yet
    paths = {name: model.network_path('latest', name) for name in model.nets}
    if kill_at == 5:
        with pytest.raises(ValueError, match='two different saves.*--continue_train'):
            checkpoint.check_saved_set(paths, 'latest')
    else:
        checkpoint.check_saved_set(paths, 'latest')
    train.recover_checkpoint(model, 'latest')
    checkpoint.check_saved_set(paths, 'latest')
    state = train.load_train_state(model, 'latest')
    assert state is not None  # the weights on disk are the ones the state describes
    expected = 'new' if kill_at >= 4 else 'old'  # once every file is complete, the save is finished
    assert state['version'] == expected
    weights = new if expected == 'new' else old
    for name in ('G', 'E'):
        on_disk = checkpoint.load_state_dict_file(model.network_path('latest', name))
        assert all(torch.equal(on_disk[k], weights[name][k]) for k in on_disk)
    assert not [p for p in os.listdir(model.save_dir) if p.startswith('.')]


def test_stale_or_foreign_state_is_not_trusted(tmp_path, caplog):
    model = tiny_model(tmp_path)
    train.save_checkpoint(model, 'latest', {'format': train.STATE_FORMAT, 'model': {}})
    # a truncated pending state (killed while writing it) is discarded, the committed set stays
    pending = Path(model.save_dir) / '.latest_train_state.pth.pending'
    pending.write_bytes(b'PK\x03\x04truncated')
    train.recover_checkpoint(model, 'latest')
    assert not pending.exists() and train.load_train_state(model, 'latest') is not None
    # weights replaced by hand (e.g. released ones): the state no longer belongs to them
    perturb(model)
    model.save_networks('latest')
    caplog.clear()
    assert train.load_train_state(model, 'latest') is None
    assert 'other weights' in caplog.text


@pytest.mark.filterwarnings('ignore:Detected call of `lr_scheduler.step\\(\\)` before')
def test_training_state_of_every_lr_policy_is_weights_only(tmp_path):
    for policy in ('linear', 'step', 'plateau', 'cosine'):
        opt = TrainOptions().parse(['--checkpoints_dir', str(tmp_path), '--name', policy, '--gpu_ids', '-1',
                                    '--ngf', '8', '--ndf', '8', '--lr_policy', policy, '--amp', 'fp16'])
        model = create_model(opt)
        model.setup()
        model.update_learning_rate(0.5)
        state = {'format': train.STATE_FORMAT, 'model': model.training_state(), 'rng': [train.rng_state(model.device)],
                 'scaler': model.scaler.state_dict()}
        train.save_checkpoint(model, 'latest', state)
        loaded = train.load_train_state(model, 'latest')
        model.load_training_state(loaded['model'])
        train.set_rng_state(loaded['rng'][0], model.device)
        assert model.schedulers[0].last_epoch == 1


def test_rng_state_round_trip():
    import random

    import numpy as np
    state = train.rng_state(torch.device('cpu'))
    a = (torch.rand(3), np.random.rand(3), random.random(), random.gauss(0, 1))
    train.set_rng_state(state, torch.device('cpu'))
    b = (torch.rand(3), np.random.rand(3), random.random(), random.gauss(0, 1))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


# ------------------------------------------------------------------------------------------------ bad losses
def test_nan_loss_stops_with_the_iteration_and_keeps_the_last_good_checkpoint(tiny_dataset, tmp_path, monkeypatch,
                                                                             capsys):
    original = BargainNetModel.compute_losses
    calls = []

    def poisoned(self):
        loss = original(self)
        calls.append(1)
        if len(calls) == 3:
            self.loss_L1 = self.loss_L1 * float('nan')
            self.loss_total = self.loss_L1 + self.loss_tri
            return self.loss_total
        return loss

    monkeypatch.setattr(BargainNetModel, 'compute_losses', poisoned)
    args = tiny_args(tiny_dataset, tmp_path, 'nan', '--batch_size', '2', '--save_latest_freq', '2', '--no_html')
    assert run_main(train.main, args) == 2
    err = capsys.readouterr().err
    assert re.search(r'error: loss became nan at iteration 3 \(epoch 1\); the last good checkpoint is \S+'
                     r'latest_net_G\.pth \(iteration 2, epoch 1\)', err), err
    st = load_state(tmp_path / 'nan' / 'latest_train_state.pth')
    assert st['total_iters'] == 2
    for name in ('G', 'E'):
        w = checkpoint.load_state_dict_file(str(tmp_path / 'nan' / f'latest_net_{name}.pth'))
        assert all(torch.isfinite(v).all() for v in w.values() if v.is_floating_point())


# ------------------------------------------------------------------------------------------------ processes
def start_training(tiny_dataset: Path, ckpt: Path, name: str, *extra: str, **popen) -> subprocess.Popen:
    args = tiny_args(tiny_dataset, ckpt, name, '--batch_size', '1', '--niter', '50', '--niter_decay', '0',
                     '--print_freq', '1', '--no_html', *extra)
    return subprocess.Popen([sys.executable, str(ROOT / 'train.py'), *args], cwd=ROOT, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f'training ended early: {proc.communicate()[1][-2000:]}')
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError('training did not get there in time')
        time.sleep(0.05)


def logged_iterations(run: Path) -> int:
    log = run / 'loss_log.txt'
    return sum(1 for line in log.read_text().splitlines() if LOSS_LINE.match(line)) if log.exists() else 0


def test_sigkill_in_the_middle_leaves_a_loadable_latest_and_resumes(tiny_dataset, tmp_path, capfd):
    run = tmp_path / 'kill9'
    proc = start_training(tiny_dataset, tmp_path, 'kill9', '--save_latest_freq', '1')
    wait_for(lambda: (run / 'latest_train_state.pth').exists() and logged_iterations(run) >= 3, proc)
    time.sleep(0.15)  # saves take a good share of each iteration: the kill often lands inside one
    assert proc.poll() is None
    proc.kill()
    proc.communicate()
    committed = load_state(run / 'latest_train_state.pth')['total_iters']
    target = committed + 2
    capfd.readouterr()
    args = tiny_args(tiny_dataset, tmp_path, 'kill9', '--batch_size', '1', '--niter', '50', '--niter_decay', '0',
                     '--no_html', '--continue_train', '--max_iters', str(target))
    assert train.main(args) == 0
    assert re.search(r'resumed from \S+latest_train_state\.pth: epoch \d+, \d+ iterations into it, '
                     rf'({committed}|{committed + 1}) in all', capfd.readouterr().err)
    assert load_state(run / 'latest_train_state.pth')['total_iters'] == target


@pytest.mark.parametrize('sig, workers, code', [(signal.SIGINT, '2', 130), (signal.SIGTERM, '0', 143)])
def test_signal_saves_latest_with_its_state_before_exiting(tiny_dataset, tmp_path, sig, workers, code):
    run = tmp_path / 'sig'
    proc = start_training(tiny_dataset, tmp_path, 'sig', '--num_threads', workers, '--save_latest_freq', '1000',
                          start_new_session=True)
    wait_for(lambda: logged_iterations(run) >= 2, proc)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # like Ctrl-C in a terminal: the loader workers get it too
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert f'stopped by {signal.Signals(sig).name}' in err
    st = load_state(run / 'latest_train_state.pth')
    assert st['total_iters'] == logged_iterations(run) >= 2  # every finished iteration is in the checkpoint
    opt = TrainOptions().parse(tiny_args(tiny_dataset, tmp_path, 'sig'))
    assert train.load_train_state(create_model(opt), 'latest') is not None


def test_torchrun_two_processes_on_gloo_train_and_rank0_alone_saves(tiny_dataset, tmp_path):
    args = tiny_args(tiny_dataset, tmp_path, 'ddp', '--batch_size', '2', '--niter', '1', '--niter_decay', '0',
                     '--print_freq', '1', '--save_epoch_freq', '1', '--no_html')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           str(ROOT / 'train.py'), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert len(re.findall(r'saved latest and 1 ', out)) == 1
    assert 'DistributedDataParallel: 2 processes (gloo)' in out
    run = tmp_path / 'ddp'
    lines = (run / 'loss_log.txt').read_text().splitlines()
    # 8 images over 2 processes with batch 2: 2 iterations, logged by rank 0 only
    assert sum(line.startswith('====') for line in lines) == 1
    assert [LOSS_LINE.match(line).groups() for line in lines[1:]] == [('1', '1'), ('1', '2')]
    st = load_state(run / '1_train_state.pth')
    assert (st['world_size'], st['total_iters'], len(st['rng'])) == (2, 2, 2)
    assert not torch.equal(st['rng'][0]['torch'], st['rng'][1]['torch'])  # each rank's own generators
    assert same_weights(run, run, '1')


def test_several_gpu_ids_without_torchrun_name_the_command(monkeypatch):
    import argparse
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ValueError, match=r'torchrun --nproc_per_node 2 train\.py'):
        train.setup_distributed(argparse.Namespace(gpu_ids=[0, 1], batch_size=1))
