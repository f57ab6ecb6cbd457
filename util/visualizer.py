"""What a user watches during training: the loss log and its curve, an HTML page of results, TensorBoard, visdom.

:class:`Visualizer` keeps the released file formats: every loss line goes to
``<checkpoints_dir>/<name>/loss_log.txt`` as ``(epoch: 3, iters: 400, time: 0.512, data: 0.004) L1: 0.081
tri: 0.002 `` and the images go to ``<checkpoints_dir>/<name>/web/index.html``. ``loss_curve.png`` beside the
log plots the logged losses (matplotlib); it is redrawn with the page and at the end of training, and shown at
the top of the page. ``--tensorboard`` also writes the losses and learning rates to ``<name>/tensorboard/``.
Visdom is optional: when it is not installed or no server answers at ``--display_server``/``--display_port``,
one warning is logged and training goes on without it. A visdom server is never started from here.
"""
from __future__ import annotations

import argparse
import glob
import logging
import os
import re
import socket
import time
from typing import Any, Mapping, Optional, Sequence
from urllib.parse import urlsplit

import numpy as np
import torch

from .html import HTML
from .image import input_to_uint8, mask_to_uint8, output_to_uint8, save_png

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0  # a visdom server on the same network answers a TCP connect within milliseconds
REQUEST_TIMEOUT_S = 10.0  # no single plot request may stall training for longer than this
LOSS_CURVE = 'loss_curve.png'
_LOSS_LINE = re.compile(r'^\(epoch: (\d+), iters: (\d+), time: [^,]*, data: [^)]*\) (.*)$')


def format_loss_line(epoch: int, iters: int, t_comp: float, t_data: float, losses: Mapping[str, float]) -> str:
    """The released loss line: ``(epoch: 3, iters: 400, time: 0.512, data: 0.004) L1: 0.081 tri: 0.002 ``."""
    message = f'(epoch: {epoch}, iters: {iters}, time: {t_comp:.3f}, data: {t_data:.3f}) '
    for name, value in losses.items():
        message += f'{name}: {value:.3f} '
    return message


def read_loss_log(path: str) -> list[tuple[int, int, dict[str, float]]]:
    """The ``(epoch, iters, losses)`` of the loss lines of the run's latest timeline, in training order.

    A line at or before the position of the previous one starts a new timeline (a run resumed from an earlier
    save, or a new run under the same name): the points it goes back over are dropped.
    """
    points: list[tuple[int, int, dict[str, float]]] = []
    if not os.path.isfile(path):
        return points
    with open(path, encoding='utf-8', errors='replace') as f:
        for line in f:
            match = _LOSS_LINE.match(line.rstrip('\n'))
            if not match:
                continue
            epoch, iters = int(match.group(1)), int(match.group(2))
            words = match.group(3).split()
            losses = {name.rstrip(':'): float(value) for name, value in zip(words[::2], words[1::2])}
            while points and points[-1][:2] >= (epoch, iters):
                points.pop()
            points.append((epoch, iters, losses))
    return points


def loss_curve_data(path: str, iters_per_epoch: Optional[int] = None) -> dict[str, tuple[list[float], list[float]]]:
    """Each loss of ``loss_log.txt`` as ``(x, y)``: x in epochs trained (``epoch - 1 + iters / iters_per_epoch``).

    Without ``iters_per_epoch`` x counts the logged points.
    """
    series: dict[str, tuple[list[float], list[float]]] = {}
    for i, (epoch, iters, losses) in enumerate(read_loss_log(path)):
        x = epoch - 1 + iters / iters_per_epoch if iters_per_epoch else float(i + 1)
        for name, value in losses.items():
            xs, ys = series.setdefault(name, ([], []))
            xs.append(x)
            ys.append(value)
    return series


def _smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over ``window`` points (shorter at the start)."""
    v = np.asarray(values, dtype=np.float64)
    sums = np.cumsum(np.concatenate([[0.0], v]))
    starts = np.maximum(np.arange(1, len(v) + 1) - window, 0)
    return (sums[1:] - sums[starts]) / (np.arange(1, len(v) + 1) - starts)


def plot_loss_curve(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str, title: str,
                    xlabel: str = 'epoch') -> Optional[str]:
    """Draw one panel per loss (the logged points and their running mean) to the PNG ``path``, atomically.

    Returns ``path``, or None when there is nothing to plot yet.
    """
    if not series:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # the Agg canvas: no display, no pyplot state
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 2.2 * len(series) + 0.6), dpi=100, layout='constrained')
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, (xs, ys)) in zip(axes, series.items()):
        window = max(1, len(ys) // 50)
        ax.plot(xs, ys, color='tab:blue', alpha=0.35 if window > 1 else 1.0, linewidth=0.8, label='logged')
        if window > 1:
            ax.plot(xs, _smooth(ys, window), color='tab:blue', linewidth=1.6, label=f'mean of {window}')
            ax.legend(loc='upper right', fontsize='small')
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
    axes[0].set_title(title)
    axes[-1].set_xlabel(xlabel)
    tmp = path + '.tmp'
    fig.savefig(tmp, format='png')
    os.replace(tmp, path)
    return path


def require_tensorboard() -> None:
    """Raise one clear ValueError when ``--tensorboard`` cannot work (the package is missing)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ValueError('--tensorboard needs the tensorboard package: pip install tensorboard (or leave out '
                         '--tensorboard; the loss curve is drawn to loss_curve.png anyway)') from None


def visual_to_uint8(name: str, image: torch.Tensor) -> np.ndarray:
    """One image of a batch of visuals (3,H,W or 1,H,W) as a uint8 H×W×3 (or H×W for masks) array.

    Network outputs use the released truncating conversion; dataset inputs are recovered exactly; masks
    become 0/255.
    """
    if name == 'mask' or image.shape[0] == 1:
        return mask_to_uint8(image)
    if name in ('comp', 'real'):
        return input_to_uint8(image)
    return output_to_uint8(image)


def _probe(host: str, port: int, timeout: float) -> bool:
    """True when a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _make_visdom_client(server: str, port: int, env: str) -> Any:
    """A visdom client whose requests time out and raise instead of printing tracebacks."""
    import visdom  # optional dependency: the caller handles ImportError

    class _Client(visdom.Visdom):
        def _handle_post(self, url: str, data: Optional[str] = None) -> str:
            response = self.session.post(url, data=data if data is not None else {}, timeout=REQUEST_TIMEOUT_S)
            return response.text

    # visdom logs "Setting up a new session..." and a socket notice at WARNING on every client
    logging.getLogger('visdom').setLevel(logging.ERROR)
    return _Client(server=server, port=port, env=env, raise_exceptions=True, use_incoming_socket=False)


class Visualizer:
    """Loss log, HTML results page and (optional) visdom display of one training run.

    Only the process that logs (rank 0 under DDP) should create one.

    Args:
        opt: training options (``name``, ``checkpoints_dir``, ``display_*``, ``no_html``, ``display_winsize``,
            ``tensorboard``).
        iters_per_epoch: iterations per epoch, for the loss curve's x axis (in epochs); None counts log lines.
    """

    def __init__(self, opt: argparse.Namespace, iters_per_epoch: Optional[int] = None) -> None:
        self.opt = opt
        self.name = opt.name
        self.display_id = int(opt.display_id)
        self.win_size = int(opt.display_winsize)
        self.ncols = int(getattr(opt, 'display_ncols', 4))
        self.use_html = not opt.no_html
        self.run_dir = os.path.join(opt.checkpoints_dir, opt.name)
        self.web_dir = os.path.join(self.run_dir, 'web')
        self.img_dir = os.path.join(self.web_dir, 'images')
        self.log_name = os.path.join(self.run_dir, 'loss_log.txt')
        self.curve_path = os.path.join(self.run_dir, LOSS_CURVE)
        self.iters_per_epoch = iters_per_epoch
        self.vis: Any = None
        self.tensorboard: Any = None
        self.plot_started = False
        self.saved = False  # images of the current epoch written to the HTML page already
        self._shown: list[str] = []  # the visual names on the page
        os.makedirs(self.run_dir, exist_ok=True)
        if self.use_html:
            os.makedirs(self.img_dir, exist_ok=True)
        with open(self.log_name, 'a') as log_file:
            log_file.write(f'================ Training Loss ({time.strftime("%c")}) ================\n')
        if self.display_id > 0:
            self.vis = self._connect()
        if getattr(opt, 'tensorboard', False):
            require_tensorboard()
            from torch.utils.tensorboard import SummaryWriter
            self.tensorboard = SummaryWriter(log_dir=os.path.join(self.run_dir, 'tensorboard'))

    # ----------------------------------------------------------------- visdom
    def _connect(self) -> Any:
        server, port = self.opt.display_server, int(self.opt.display_port)
        try:
            import visdom  # noqa: F401
        except ImportError:
            logger.warning('visdom is not installed: live plots are off (the loss log and the HTML page are still '
                           'written). Install it with: pip install "setuptools<81" && pip install '
                           '--no-build-isolation visdom; or pass --display_id 0')
            return None
        host = urlsplit(server if '://' in server else 'http://' + server).hostname or 'localhost'
        if not _probe(host, port, PROBE_TIMEOUT_S):
            logger.warning('no visdom server answers at %s:%d: live plots are off (the loss log and the HTML page '
                           'are still written). Start one with `python -m visdom.server -port %d`, or pass '
                           '--display_id 0', server, port, port)
            return None
        try:
            client = _make_visdom_client(server, port, self.opt.display_env)
        except Exception as exc:  # any failure of an optional display must not stop training
            self._warn_lost(exc)
            return None
        logger.info('visdom: plotting to %s:%d, environment %r', server, port, self.opt.display_env)
        return client

    def _warn_lost(self, exc: BaseException) -> None:
        logger.warning('visdom at %s:%s stopped answering (%s): live plots are off for the rest of the run',
                       self.opt.display_server, self.opt.display_port, exc)
        self.vis = None

    @property
    def visdom_enabled(self) -> bool:
        """Whether plots and images are being sent to a visdom server."""
        return self.vis is not None

    # ----------------------------------------------------------------- per epoch
    def reset(self) -> None:
        """Start a new epoch: its first displayed results will be written to the HTML page."""
        self.saved = False

    # ----------------------------------------------------------------- losses
    def print_current_losses(self, epoch: int, iters: int, losses: Mapping[str, float], t_comp: float,
                             t_data: float) -> str:
        """Log the released loss line and append it to ``loss_log.txt``; return it."""
        message = format_loss_line(epoch, iters, t_comp, t_data, losses)
        logger.info('%s', message)
        with open(self.log_name, 'a') as log_file:
            log_file.write(message + '\n')
        return message

    def plot_current_losses(self, epoch: int, counter_ratio: float, losses: Mapping[str, float],
                            step: Optional[int] = None, learning_rates: Optional[Mapping[str, float]] = None) -> None:
        """Add a point per loss to the visdom line plot (x = epoch + fraction of the epoch done).

        With ``--tensorboard``, also write the losses (``loss/<name>``) and ``learning_rates``
        (``learning_rate/<name>``) at iteration ``step``.
        """
        if self.tensorboard is not None and step is not None:
            for name, value in losses.items():
                self.tensorboard.add_scalar(f'loss/{name}', value, step)
            for name, value in (learning_rates or {}).items():
                self.tensorboard.add_scalar(f'learning_rate/{name}', value, step)
        if self.vis is None:
            return
        names = list(losses)
        x = np.array([[epoch + counter_ratio] * len(names)])
        y = np.array([[losses[k] for k in names]])
        opts = {'title': f'{self.name} loss over time', 'legend': names, 'xlabel': 'epoch', 'ylabel': 'loss'}
        try:
            self.vis.line(X=x, Y=y, win=self.loss_window, opts=opts,
                          update='append' if self.plot_started else None)
            self.plot_started = True
        except Exception as exc:
            self._warn_lost(exc)

    @property
    def loss_window(self) -> str:
        """The visdom window of the loss plot (``--display_id``, as in pix2pix)."""
        return str(self.display_id)

    # ----------------------------------------------------------------- images
    def display_current_results(self, visuals: Mapping[str, torch.Tensor], epoch: int, save_result: bool) -> None:
        """Show the first image of each visual in visdom and, once per epoch or when asked, on the HTML page."""
        images = {name: visual_to_uint8(name, tensor[0]) for name, tensor in visuals.items()}
        if self.vis is not None:
            self._show_visdom(images)
        if self.use_html and (save_result or not self.saved):
            self.saved = True
            self._shown = list(images)
            for name, image in images.items():
                save_png(image, os.path.join(self.img_dir, f'epoch{epoch:03d}_{name}.png'))
            self.write_html(list(images))

    def _show_visdom(self, images: Mapping[str, np.ndarray]) -> None:
        chw = []
        for image in images.values():
            if image.ndim == 2:
                image = np.repeat(image[..., None], 3, axis=2)
            chw.append(image.transpose(2, 0, 1))
        try:
            self.vis.images(np.stack(chw), nrow=min(self.ncols, len(chw)), win=str(self.display_id + 1),
                            padding=2, opts={'title': f'{self.name} images: ' + ' '.join(images)})
        except Exception as exc:
            self._warn_lost(exc)

    def update_loss_curve(self) -> Optional[str]:
        """Redraw ``loss_curve.png`` from ``loss_log.txt``; return its path (None before the first loss line)."""
        xlabel = 'epoch' if self.iters_per_epoch else 'logged point'
        return plot_loss_curve(loss_curve_data(self.log_name, self.iters_per_epoch), self.curve_path,
                               f'{self.name}: training losses', xlabel)

    def close(self) -> None:
        """End of training: the final loss curve (and page), TensorBoard files flushed."""
        if self.use_html and self._shown:
            self.write_html(self._shown)  # redraws the curve too
        else:
            self.update_loss_curve()
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None

    def write_html(self, names: list[str]) -> str:
        """Rewrite ``web/index.html``: the loss curve (redrawn), then each epoch's images on disk, newest first."""
        epochs = set()
        for path in glob.glob(os.path.join(self.img_dir, 'epoch*_*.png')):
            match = re.fullmatch(r'epoch(\d+)_(.+)\.png', os.path.basename(path))
            if match:
                epochs.add(int(match.group(1)))
        page = HTML(self.web_dir, f'Experiment name = {self.name}', refresh=0)
        if self.update_loss_curve():
            page.add_header('loss curve')
            page.add_images([f'../{LOSS_CURVE}'], [f'{LOSS_CURVE}: the losses of loss_log.txt'], width=800)
        for epoch in sorted(epochs, reverse=True):
            page.add_header(f'epoch [{epoch}]')
            shown = [n for n in names if os.path.isfile(os.path.join(self.img_dir, f'epoch{epoch:03d}_{n}.png'))]
            ims = [f'images/epoch{epoch:03d}_{n}.png' for n in shown]
            page.add_images(ims, shown, ims, width=self.win_size)
        return page.save()
