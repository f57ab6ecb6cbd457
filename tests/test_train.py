"""train.py: checkpoints, learning, exact resume, crash safety, signals, NaN guard, options, torchrun."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import data
import train
from data.sampler import ResumableSampler, SeededItems, item_seed
from models import checkpoint, create_model
from models.bargainnet_model import BargainNetModel
from options.train_options import TrainOptions
from util import distributed, train_state
from util.cli import run_main

ROOT = Path(__file__).resolve().parents[1]
LOSS_LINE = re.compile(r'^\(epoch: (\d+), iters: (\d+), time: \d+\.\d{3}, data: \d+\.\d{3}\) L1: \d+\.\d{3} tri: '
                       r'\d+\.\d{3} $')


def tiny_args(dataset: Path, ckpt: Path, name: str, *extra: str) -> list[str]:
    return ['--dataset_root', str(dataset), '--checkpoints_dir', str(ckpt), '--name', name, '--gpu_ids', '-1',
            '--ngf', '8', '--ndf', '8', '--num_threads', '0', '--display_id', '0', *extra]


def load_state(path: Path) -> dict:
    return train_state.load_train_state(str(path))


def weights(run: Path, tag: str = 'latest') -> dict[str, dict[str, torch.Tensor]]:
    return {name: checkpoint.read_weights(str(run / f'{tag}_net_{name}.pth')) for name in ('G', 'E')}


def equal_states(a: dict[str, dict], b: dict[str, dict]) -> bool:
    return all(list(a[n]) == list(b[n]) and all(torch.equal(a[n][k], b[n][k]) for k in a[n]) for n in ('G', 'E'))


def same_weights(dir_a: Path, dir_b: Path, tag: str = 'latest') -> bool:
    return equal_states(weights(dir_a, tag), weights(dir_b, tag))


def subprocess_env() -> dict:
    return {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}


# ------------------------------------------------------------------------------------------------ one epoch
@pytest.fixture(scope='module')
def one_epoch(tiny_dataset, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp('ckpt')
    args = tiny_args(tiny_dataset, ckpt, 'epoch', '--batch_size', '4', '--niter', '1', '--niter_decay', '0',
                     '--print_freq', '1', '--display_freq', '1', '--save_epoch_freq', '1', '--tensorboard')
    assert train.main(args) == 0
    return ckpt / 'epoch', args


def test_one_epoch_writes_a_self_contained_state_released_weights_log_and_page(one_epoch):
    run, _ = one_epoch
    for tag in ('latest', '1'):
        exported = weights(run, tag)  # plain state dicts, loaded with weights_only
        assert all(torch.isfinite(v).all() for net in exported.values() for v in net.values() if v.is_floating_point())
        st = load_state(run / f'{tag}_train_state.pth')
        assert equal_states(st['networks'], exported)  # the state holds the very networks exported beside it
        # 8 images, batch 4: 2 iterations; the epoch is over, so the next one is 2
        assert (st['progress']['epoch'], st['progress']['epoch_iter'], st['progress']['total_iters']) == (2, 0, 2)
        assert len(st['optimizers']) == 2 and len(st['schedulers']) == 2
        assert set(st['rng'][0]) >= {'torch', 'numpy', 'python'}
    lines = (run / 'loss_log.txt').read_text().splitlines()
    assert lines[0].startswith('================ Training Loss (')
    assert [LOSS_LINE.match(line).groups() for line in lines[1:]] == [('1', '1'), ('1', '2')]
    html = (run / 'web' / 'index.html').read_text()
    assert 'epoch [1]' in html
    for visual in ('comp', 'real', 'harm', 'mask'):
        assert (run / 'web' / 'images' / f'epoch001_{visual}.png').is_file()
        assert f'images/epoch001_{visual}.png' in html
    assert html.index('src="../loss_curve.png"') < html.index('epoch [1]')  # the curve tops the page
    curve = np.asarray(Image.open(run / 'loss_curve.png').convert('RGB'))
    assert curve.shape[0] > 100 and curve.shape[1] > 100 and len(np.unique(curve.reshape(-1, 3), axis=0)) > 10
    assert not list(run.glob('.*'))  # no temporary files left


def test_tensorboard_gets_every_logged_loss_and_the_learning_rates(one_epoch):
    event_accumulator = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')
    run, _ = one_epoch
    acc = event_accumulator.EventAccumulator(str(run / 'tensorboard'))
    acc.Reload()
    assert set(acc.Tags()['scalars']) == {'loss/L1', 'loss/tri', 'learning_rate/G', 'learning_rate/E'}
    logged = [float(line.split('L1: ')[1].split()[0]) for line in (run / 'loss_log.txt').read_text().splitlines()[1:]]
    l1 = acc.Scalars('loss/L1')
    assert [e.step for e in l1] == [1, 2]
    assert [round(e.value, 3) for e in l1] == logged
    assert [e.value for e in acc.Scalars('learning_rate/G')] == pytest.approx([2e-4, 2e-4])


def test_screen_gets_a_summary_and_the_file_every_option(tiny_dataset, tmp_path, capfd):
    args = tiny_args(tiny_dataset, tmp_path, 'quiet', '--batch_size', '4', '--max_iters', '1', '--no_html')
    capfd.readouterr()
    assert train.main(args) == 0
    err = capfd.readouterr().err
    summary = [line for line in err.splitlines() if 'options: ' in line]
    assert len(summary) == 1 and 'name=quiet' in summary[0] and 'ngf=8' in summary[0] and 'lambda_tri' not in summary[0]
    assert '---- Options ----' not in err and 'CUDA' not in err
    saved = (tmp_path / 'quiet' / 'train_opt.txt').read_text()
    for option in ('lambda_tri', 'margin', 'per_image_norm', 'fused_adam', 'tensorboard', 'save_latest_freq'):
        assert re.search(rf'^ *{option}: ', saved, flags=re.MULTILINE), option


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as info:
        train.main(['--help'])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ('--triplet_distance', '--lambda_tri', '--margin', '--g_lr_ratio', '--e_lr_ratio',
                   '--lambda_f2b', '--lambda_ff2', '--per_image_norm', '--fused_adam', '--tensorboard',
                   '--continue_train', '--max_iters', '--jpeg_draft'):
        assert re.search(rf'^  {option}\b', text, flags=re.MULTILINE), option


def test_continue_with_a_mistyped_name_fails_in_one_line_and_writes_nothing(tiny_dataset, tmp_path, capsys):
    (tmp_path / 'real_run').mkdir()
    args = tiny_args(tiny_dataset, tmp_path, 'reel_run', '--continue_train')
    assert run_main(train.main, args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith('error: --continue_train: no latest_train_state.pth')
    assert 'reel_run' in err and '--name' in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['real_run']


def test_missing_tensorboard_is_one_error_line_before_anything_is_written(tiny_dataset, tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.setitem(sys.modules, 'torch.utils.tensorboard', None)  # importing it now raises ImportError
    assert run_main(train.main, tiny_args(tiny_dataset, tmp_path, 'tb', '--tensorboard')) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: --tensorboard needs the tensorboard package') and '\n' not in err
    assert not (tmp_path / 'tb').exists()


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
    assert len([line for line in err.splitlines() if 'no training state' in line and 'fresh optimizers' in line]) == 1
    st = load_state(released / 'latest_train_state.pth')
    assert (st['progress']['epoch'], st['progress']['epoch_iter'], st['progress']['total_iters']) == (2, 1, 1)
    assert st['run']['epoch_count'] == 2
    assert st['optimizers'][0]['state'][0]['step'].item() == 1  # Adam started afresh


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
RESUME_CASES = [('0', '1', ['--epoch_count', '5'], False), ('2', '2', [], True)]


@pytest.mark.parametrize('workers, batch_size, resume_extra, replace_exports', RESUME_CASES)
def test_stop_and_continue_is_bit_exact(tiny_dataset, tmp_path, workers, batch_size, resume_extra, replace_exports):
    """With 0 and 2 loader processes; a pix2pix-style --epoch_count on resume must not change the schedule; the
    resume reads the training state alone (exported network files replaced by other weights do not matter)."""
    # two iterations per epoch, two epochs; the learning rate decays after the first
    common = ['--batch_size', batch_size, '--max_dataset_size', str(2 * int(batch_size)), '--niter', '1',
              '--niter_decay', '1', '--num_threads', workers, '--save_epoch_freq', '1', '--no_html']
    assert train.main(tiny_args(tiny_dataset, tmp_path, 'full', *common)) == 0
    # stop in the middle of epoch 2 (after the scheduler stepped once), then continue
    assert train.main(tiny_args(tiny_dataset, tmp_path, 'part', *common, '--max_iters', '3')) == 0
    part = tmp_path / 'part'
    st = load_state(part / 'latest_train_state.pth')
    assert (st['progress']['epoch'], st['progress']['epoch_iter'], st['progress']['total_iters']) == (2, 1, 3)
    assert not same_weights(tmp_path / 'full', part)
    if replace_exports:
        for name in ('G', 'E'):
            shutil.copy(part / f'1_net_{name}.pth', part / f'latest_net_{name}.pth')
    assert train.main(tiny_args(tiny_dataset, tmp_path, 'part', *common, '--continue_train', *resume_extra)) == 0
    assert same_weights(tmp_path / 'full', part)
    a, b = (load_state(tmp_path / n / 'latest_train_state.pth') for n in ('full', 'part'))
    assert a['progress'] == b['progress'] and a['progress']['total_iters'] == 4
    for sa, sb in zip(a['optimizers'], b['optimizers']):
        assert all(torch.equal(sa['state'][i]['exp_avg_sq'], sb['state'][i]['exp_avg_sq']) for i in sa['state'])
        assert [g['lr'] for g in sa['param_groups']] == [g['lr'] for g in sb['param_groups']]
    assert a['schedulers'] == b['schedulers']  # same learning-rate schedule, stepped as often
    assert torch.equal(a['rng'][0]['torch'], b['rng'][0]['torch'])


def test_sampler_shards_and_resumes_the_same_order():
    full = list(ResumableSampler(10, shuffle=True, seed=3))
    assert sorted(i for i, _ in full) == list(range(10))
    sampler = ResumableSampler(10, shuffle=True, seed=3)
    sampler.set_epoch(0, start=4)
    assert list(sampler) == full[4:] and len(sampler) == 6
    sampler.set_epoch(1)
    assert [i for i, _ in sampler] != [i for i, _ in full]  # a new order every epoch
    shards = [ResumableSampler(10, shuffle=True, seed=3, rank=r, world_size=3) for r in range(3)]
    got = [[i for i, _ in s] for s in shards]
    assert all(len(g) == 4 for g in got)  # padded to 12 like DistributedSampler
    assert set().union(*got) == set(range(10))
    serial = ResumableSampler(5, shuffle=False, seed=0)
    assert [i for i, _ in serial] == [0, 1, 2, 3, 4]


def test_augmentation_depends_on_sample_and_epoch_not_on_history(tiny_dataset, tmp_path):
    opt = TrainOptions().parse(tiny_args(tiny_dataset, tmp_path, 'aug'))
    items = SeededItems(data.create_dataset(opt, 'train'))
    key = (3, item_seed(0, 1, 3))
    first = items[key]['comp']
    items[(5, item_seed(0, 1, 5))]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    assert torch.equal(items[key]['comp'], first)
    assert torch.equal(torch.get_rng_state(), state)  # the main process's generators are left alone
    assert not torch.equal(items[(3, item_seed(0, 2, 3))]['comp'], first)


# ------------------------------------------------------------------------------------------------ crash safety
class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def tiny_model(tmp_path: Path, *extra: str):
    opt = TrainOptions().parse(['--checkpoints_dir', str(tmp_path), '--name', 'k', '--gpu_ids', '-1', '--ngf', '8',
                                '--ndf', '8', '--display_id', '0', *extra])
    model = create_model(opt)
    model.setup()
    return model, opt


def perturb(model) -> None:
    with torch.no_grad():
        for net in model.nets.values():
            for p in net.parameters():
                p.add_(0.01)


@pytest.mark.parametrize('kill_at', range(1, 4))
def test_a_save_killed_at_any_file_leaves_a_complete_state_to_resume_from(tmp_path, monkeypatch, kill_at):
    """A save writes three files (the state, then G and E), each to a temporary file renamed into place; kill
    it before each rename, leaving the temporary file behind as SIGKILL would."""
    model, opt = tiny_model(tmp_path)
    ctx = distributed.DistContext()
    train.save(model, opt, ctx, train.Progress(1, 5, 5), ['latest'])
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
    monkeypatch.setattr(os, 'remove', lambda path: None)  # nothing cleans up after SIGKILL
    with pytest.raises(Killed):
        train.save(model, opt, ctx, train.Progress(1, 6, 6), ['latest'])
    monkeypatch.undo()

    state = load_state(Path(model.save_dir) / 'latest_train_state.pth')
    expected = (old, 5) if kill_at == 1 else (new, 6)  # the state is renamed first
    assert state['progress']['total_iters'] == expected[1]
    assert equal_states(state['networks'], expected[0])  # never one save's counters with another's weights
    leftovers = [p for p in os.listdir(model.save_dir) if p.startswith('.')]
    assert len(leftovers) == 1 and leftovers[0].endswith('.tmp')
    assert train_state.remove_stale_temporaries(model.save_dir) == [os.path.join(model.save_dir, leftovers[0])]
    assert not [p for p in os.listdir(model.save_dir) if p.startswith('.')]
    resumed, _ = tiny_model(tmp_path)
    resumed.load_training_state(state, 'latest_train_state.pth')
    assert equal_states({n: checkpoint.plain_state_dict(net) for n, net in resumed.nets.items()}, expected[0])


def test_a_torn_or_foreign_state_file_is_one_clear_error(tmp_path):
    path = tmp_path / 'latest_train_state.pth'
    path.write_bytes(b'PK\x03\x04truncated')
    with pytest.raises(ValueError, match='latest_train_state.pth: not a training state that loads'):
        train_state.load_train_state(str(path))
    torch.save({'format': 1, 'model': {}}, path)  # written by an older train.py
    with pytest.raises(ValueError, match='training-state format 1 is not 2.*move it away'):
        train_state.load_train_state(str(path))
    model, opt = tiny_model(tmp_path)
    train.save(model, opt, distributed.DistContext(), train.Progress(1), ['latest'])
    with pytest.raises(ValueError, match='is a training state'):  # given where a network file is expected
        checkpoint.read_weights(os.path.join(model.save_dir, 'latest_train_state.pth'))


@pytest.mark.filterwarnings('ignore:Detected call of `lr_scheduler.step\\(\\)` before')
@pytest.mark.parametrize('policy', ['linear', 'step', 'plateau', 'cosine'])
def test_training_state_of_every_lr_policy_round_trips_weights_only(tmp_path, policy):
    model, opt = tiny_model(tmp_path, '--lr_policy', policy, '--amp', 'fp16')
    model.update_learning_rate(0.5)
    train.save(model, opt, distributed.DistContext(), train.Progress(2), ['latest'])
    loaded = load_state(Path(model.save_dir) / 'latest_train_state.pth')  # weights_only=True
    other, _ = tiny_model(tmp_path, '--lr_policy', policy, '--amp', 'fp16')
    other.load_training_state(loaded, 'latest_train_state.pth')
    assert other.schedulers[0].last_epoch == 1 and other.scaler.get_scale() == model.scaler.get_scale()
    train_state.set_rng_state(loaded['rng'][0], model.device)


def test_rng_state_round_trip():
    import random
    state = train_state.rng_state(torch.device('cpu'))
    a = (torch.rand(3), np.random.rand(3), random.random(), random.gauss(0, 1))
    train_state.set_rng_state(state, torch.device('cpu'))
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
                     r'latest_train_state\.pth \(iteration 2, epoch 1\)', err), err
    st = load_state(tmp_path / 'nan' / 'latest_train_state.pth')
    assert st['progress']['total_iters'] == 2
    for net in [*weights(tmp_path / 'nan').values(), *st['networks'].values()]:
        assert all(torch.isfinite(v).all() for v in net.values() if v.is_floating_point())


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
    committed = load_state(run / 'latest_train_state.pth')['progress']['total_iters']
    target = committed + 2
    capfd.readouterr()
    args = tiny_args(tiny_dataset, tmp_path, 'kill9', '--batch_size', '1', '--niter', '50', '--niter_decay', '0',
                     '--no_html', '--continue_train', '--max_iters', str(target))
    assert train.main(args) == 0
    assert re.search(r'resumed from \S+latest_train_state\.pth: epoch \d+, \d+ iterations into it, '
                     rf'({committed}|{committed + 1}) in all', capfd.readouterr().err)
    assert load_state(run / 'latest_train_state.pth')['progress']['total_iters'] == target
    assert not list(run.glob('.*.tmp'))  # what a killed save left behind is gone


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
    assert st['progress']['total_iters'] == logged_iterations(run) >= 2  # every finished iteration is saved
    assert equal_states(st['networks'], weights(run))


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
    assert (st['run']['world_size'], st['progress']['total_iters'], len(st['rng'])) == (2, 2, 2)
    assert not torch.equal(st['rng'][0]['torch'], st['rng'][1]['torch'])  # each rank's own generators
    assert equal_states(st['networks'], weights(run, '1'))


def test_several_gpu_ids_without_torchrun_name_the_command(monkeypatch):
    import argparse
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ValueError, match=r'torchrun --nproc_per_node 2 train\.py'):
        distributed.setup(argparse.Namespace(gpu_ids=[0, 1], batch_size=1))
