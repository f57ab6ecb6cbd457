"""util/visualizer.py: the released loss line, the loss curve, the HTML page per epoch, TensorBoard, visdom."""
from __future__ import annotations

import argparse
import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import train
from util import visualizer as vz
from util.image import input_to_uint8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def options(tmp_path: Path, **kw) -> argparse.Namespace:
    base = dict(name='run', checkpoints_dir=str(tmp_path), display_id=0, display_winsize=256, display_ncols=4,
                no_html=False, display_server='http://127.0.0.1', display_port=free_port(), display_env='main',
                tensorboard=False)
    base.update(kw)
    return argparse.Namespace(**base)


def visuals(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    real = (torch.randint(0, 256, (2, 3, 256, 256), generator=g).float() / 127.5 - 1)
    mask = torch.zeros(2, 1, 256, 256)
    mask[:, :, 50:150, 60:200] = 1
    return {'comp': real.flip(1), 'real': real, 'harm': real * 0.5, 'mask': mask}


def test_loss_line_is_the_released_format():
    line = vz.format_loss_line(3, 400, 0.5123, 0.0041, {'L1': 0.0814, 'tri': 0.002})
    assert line == '(epoch: 3, iters: 400, time: 0.512, data: 0.004) L1: 0.081 tri: 0.002 '


def test_loss_log_gets_a_header_per_run_and_every_line(tmp_path):
    for run in range(2):
        vis = vz.Visualizer(options(tmp_path))
        vis.print_current_losses(1, 10 * (run + 1), {'L1': 0.5, 'tri': 0.01}, 0.1, 0.01)
    lines = (tmp_path / 'run' / 'loss_log.txt').read_text().splitlines()
    assert [line.startswith('================ Training Loss (') for line in lines] == [True, False, True, False]
    assert lines[3] == '(epoch: 1, iters: 20, time: 0.100, data: 0.010) L1: 0.500 tri: 0.010 '


def test_html_page_holds_each_epoch_newest_first_with_exact_images(tmp_path):
    vis = vz.Visualizer(options(tmp_path))
    first = visuals(0)
    vis.reset()
    vis.display_current_results(first, epoch=1, save_result=False)  # the first display of an epoch is kept
    vis.display_current_results(visuals(1), epoch=1, save_result=False)  # later ones only when asked
    img_dir = tmp_path / 'run' / 'web' / 'images'
    comp = np.asarray(Image.open(img_dir / 'epoch001_comp.png'))
    assert np.array_equal(comp, input_to_uint8(first['comp'][0]))
    vis.reset()
    vis.display_current_results(visuals(2), epoch=2, save_result=False)
    vis.display_current_results(visuals(3), epoch=2, save_result=True)
    assert np.array_equal(np.asarray(Image.open(img_dir / 'epoch002_real.png')), input_to_uint8(visuals(3)['real'][0]))
    mask = np.asarray(Image.open(img_dir / 'epoch002_mask.png'))
    assert set(np.unique(mask)) == {0, 255} and mask[100, 100] == 255 and mask[10, 10] == 0
    html = (tmp_path / 'run' / 'web' / 'index.html').read_text()
    assert html.index('epoch [2]') < html.index('epoch [1]')
    for epoch in (1, 2):
        for name in ('comp', 'real', 'harm', 'mask'):
            assert f'images/epoch{epoch:03d}_{name}.png' in html


def log_losses(vis: vz.Visualizer, values: list[tuple[int, int, float, float]]) -> None:
    for epoch, iters, l1, tri in values:
        vis.print_current_losses(epoch, iters, {'L1': l1, 'tri': tri}, 0.1, 0.01)


def test_loss_curve_plots_the_logged_losses_against_epochs(tmp_path):
    vis = vz.Visualizer(options(tmp_path), iters_per_epoch=4)
    assert vis.update_loss_curve() is None  # nothing logged yet: no image
    log_losses(vis, [(1, 2, 0.5, 0.01), (1, 4, 0.4, 0.02), (2, 2, 0.3, 0.015)])
    data = vz.loss_curve_data(vis.log_name, 4)
    assert data == {'L1': ([0.5, 1.0, 1.5], [0.5, 0.4, 0.3]), 'tri': ([0.5, 1.0, 1.5], [0.01, 0.02, 0.015])}
    first = np.asarray(Image.open(vis.update_loss_curve()).convert('RGB'))
    assert first.ndim == 3 and first.shape[0] > 200 and first.shape[1] > 400

    other = vz.Visualizer(options(tmp_path, name='other'), iters_per_epoch=4)
    log_losses(other, [(1, 2, 0.5, 0.01), (1, 4, 0.1, 0.02), (2, 2, 0.45, 0.015)])  # L1 differs in two points
    second = np.asarray(Image.open(other.update_loss_curve()).convert('RGB'))
    assert first.shape == second.shape
    differ = np.any(first != second, axis=2)
    rows = np.nonzero(differ.any(axis=1))[0]
    assert differ.sum() > 100 and rows.max() < first.shape[0] // 2  # only the upper panel (L1) changed


def test_loss_curve_keeps_the_latest_timeline_of_resumed_and_restarted_runs(tmp_path):
    vis = vz.Visualizer(options(tmp_path), iters_per_epoch=10)
    log_losses(vis, [(1, 2, 0.9, 0), (1, 4, 0.8, 0), (1, 6, 0.7, 0)])
    vis = vz.Visualizer(options(tmp_path), iters_per_epoch=10)  # resumed from the save after iteration 2
    log_losses(vis, [(1, 4, 0.6, 0), (1, 6, 0.5, 0), (1, 8, 0.4, 0)])
    assert vz.loss_curve_data(vis.log_name, 10)['L1'] == ([0.2, 0.4, 0.6, 0.8], [0.9, 0.6, 0.5, 0.4])
    vis = vz.Visualizer(options(tmp_path), iters_per_epoch=10)  # a new run under the same name
    log_losses(vis, [(1, 2, 0.3, 0)])
    assert vz.loss_curve_data(vis.log_name, 10)['L1'] == ([0.2], [0.3])
    assert vz.loss_curve_data(vis.log_name)['L1'] == ([1.0], [0.3])  # without the epoch length: point numbers


def test_page_shows_the_loss_curve_on_top_once_losses_are_logged(tmp_path):
    vis = vz.Visualizer(options(tmp_path), iters_per_epoch=2)
    vis.display_current_results(visuals(0), epoch=1, save_result=True)
    page = tmp_path / 'run' / 'web' / 'index.html'
    assert 'loss_curve.png' not in page.read_text() and not (tmp_path / 'run' / 'loss_curve.png').exists()
    log_losses(vis, [(1, 1, 0.5, 0.01), (1, 2, 0.4, 0.01)])
    vis.display_current_results(visuals(1), epoch=1, save_result=True)
    html = page.read_text()
    assert html.index('<img src="../loss_curve.png"') < html.index('epoch [1]')
    before = (tmp_path / 'run' / 'loss_curve.png').read_bytes()
    log_losses(vis, [(2, 1, 0.2, 0.01)])
    vis.close()  # the end of training redraws the curve
    assert (tmp_path / 'run' / 'loss_curve.png').read_bytes() != before


def test_tensorboard_events_hold_the_losses_and_learning_rates(tmp_path):
    event_accumulator = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')
    vis = vz.Visualizer(options(tmp_path, tensorboard=True), iters_per_epoch=2)
    for step, (l1, lr) in enumerate([(0.5, 1e-3), (0.25, 5e-4)], start=1):
        vis.plot_current_losses(1, step / 2, {'L1': l1, 'tri': 0.125}, step=step, learning_rates={'G': lr, 'E': lr})
    vis.close()
    acc = event_accumulator.EventAccumulator(str(tmp_path / 'run' / 'tensorboard'))
    acc.Reload()
    assert sorted(acc.Tags()['scalars']) == ['learning_rate/E', 'learning_rate/G', 'loss/L1', 'loss/tri']
    assert [(e.step, e.value) for e in acc.Scalars('loss/L1')] == [(1, 0.5), (2, 0.25)]
    assert [e.value for e in acc.Scalars('learning_rate/G')] == pytest.approx([1e-3, 5e-4])


def test_tensorboard_missing_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'torch.utils.tensorboard', None)
    with pytest.raises(ValueError, match='--tensorboard needs the tensorboard package: pip install tensorboard'):
        vz.Visualizer(options(tmp_path, tensorboard=True))


def test_no_server_warns_once_and_training_goes_on(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    start = time.monotonic()
    vis = vz.Visualizer(options(tmp_path, display_id=1))  # nothing listens on that port
    assert time.monotonic() - start < vz.PROBE_TIMEOUT_S + 2
    assert not vis.visdom_enabled
    for i in range(3):
        vis.plot_current_losses(1, i / 3, {'L1': 0.5, 'tri': 0.0})
        vis.display_current_results(visuals(0), 1, save_result=True)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and 'no visdom server answers' in warnings[0].getMessage()


def test_visdom_not_installed_warns_once(tmp_path, caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, 'visdom', None)  # import visdom now raises ImportError
    caplog.set_level(logging.WARNING)
    vis = vz.Visualizer(options(tmp_path, display_id=1))
    vis.plot_current_losses(1, 0.5, {'L1': 0.5})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and 'visdom is not installed' in warnings[0]


@pytest.fixture
def visdom_server(tmp_path):
    pytest.importorskip('visdom', reason='visdom is not installed (pip install "setuptools<81" && '
                                         'pip install --no-build-isolation visdom)')
    port = free_port()
    env_dir = tmp_path / 'visdom_env'
    env_dir.mkdir()
    proc = subprocess.Popen([sys.executable, '-c', 'from visdom.server.run_server import main; main()',
                             '-port', str(port), '-bind_local', '-env_path', str(env_dir) + '/',
                             '-logging_level', 'WARNING'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not vz._probe('127.0.0.1', port, 0.5):
            if proc.poll() is not None:
                pytest.fail(f'the visdom server did not start: {proc.stderr.read().decode()[-2000:]}')
            if time.monotonic() > deadline:
                pytest.fail('the visdom server did not answer within 60 s')
            time.sleep(0.2)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.filterwarnings('ignore:The .warn. method is deprecated')
def test_training_plots_losses_and_images_on_a_real_visdom_server(tiny_dataset, tmp_path, visdom_server):
    import visdom

    port, server = visdom_server
    env = 'bargainnet_test'
    args = ['--dataset_root', str(tiny_dataset), '--checkpoints_dir', str(tmp_path), '--name', 'vis',
            '--gpu_ids', '-1', '--ngf', '8', '--ndf', '8', '--num_threads', '0', '--batch_size', '4', '--niter', '1',
            '--niter_decay', '0', '--print_freq', '1', '--display_freq', '1', '--display_id', '1',
            '--display_server', 'http://127.0.0.1', '--display_port', str(port), '--display_env', env]
    assert train.main(args) == 0
    client = visdom.Visdom(server='http://127.0.0.1', port=port, env=env, raise_exceptions=True,
                           use_incoming_socket=False)
    assert client.win_exists('1', env=env) and client.win_exists('2', env=env)  # loss plot, images
    plot = json.loads(client.get_window_data('1', env=env))
    traces = {trace['name']: trace for trace in plot['content']['data']}
    assert set(traces) == {'L1', 'tri'}
    # two iterations (8 images, batch 4), one point each, at x = epoch + fraction of the epoch
    assert traces['L1']['x'] == [1.5, 2.0]
    log = (tmp_path / 'vis' / 'loss_log.txt').read_text().splitlines()[1:]
    assert [f'{y:.3f}' for y in traces['L1']['y']] == [line.split('L1: ')[1].split()[0] for line in log]

    # the server goes away in the middle of a run: one warning, then silence
    vis = vz.Visualizer(argparse.Namespace(name='gone', checkpoints_dir=str(tmp_path), display_id=1,
                                           display_winsize=256, display_ncols=4, no_html=True,
                                           display_server='http://127.0.0.1', display_port=port, display_env=env))
    assert vis.visdom_enabled
    server.terminate()
    server.wait(timeout=10)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # train.main reconfigured the root logger, so caplog sees nothing here
    logging.getLogger(vz.__name__).addHandler(handler)
    try:
        for i in range(3):
            vis.plot_current_losses(1, i / 3, {'L1': 0.5, 'tri': 0.0})
    finally:
        logging.getLogger(vz.__name__).removeHandler(handler)
    assert len(records) == 1 and 'stopped answering' in records[0].getMessage()
    assert not vis.visdom_enabled
