"""What a user watches during training: the loss log, an HTML page of results per epoch, live visdom plots.

:class:`Visualizer` keeps the released file formats: every loss line goes to
``<checkpoints_dir>/<name>/loss_log.txt`` as ``(epoch: 3, iters: 400, time: 0.512, data: 0.004) L1: 0.081
tri: 0.002 `` and the images go to ``<checkpoints_dir>/<name>/web/index.html``. Visdom is optional: when it
is not installed or no server answers at ``--display_server``/``--display_port``, one warning is logged and
training goes on without it. A visdom server is never started from here.
"""
from __future__ import annotations

import argparse
import glob
import logging
import os
import re
import socket
import time
from typing import Any, Mapping, Optional
from urllib.parse import urlsplit

import numpy as np
import torch

from .html import HTML
from .image import input_to_uint8, mask_to_uint8, output_to_uint8, save_png

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0  # a visdom server on the same network answers a TCP connect within milliseconds
REQUEST_TIMEOUT_S = 10.0  # no single plot request may stall training for longer than this


def format_loss_line(epoch: int, iters: int, t_comp: float, t_data: float, losses: Mapping[str, float]) -> str:
    """The released loss line: ``(epoch: 3, iters: 400, time: 0.512, data: 0.004) L1: 0.081 tri: 0.002 ``."""
    message = f'(epoch: {epoch}, iters: {iters}, time: {t_comp:.3f}, data: {t_data:.3f}) '
    for name, value in losses.items():
        message += f'{name}: {value:.3f} '
    return message


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
        opt: training options (``name``, ``checkpoints_dir``, ``display_*``, ``no_html``, ``display_winsize``).
    """

    def __init__(self, opt: argparse.Namespace) -> None:
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
        self.vis: Any = None
        self.plot_started = False
        self.saved = False  # images of the current epoch written to the HTML page already
        os.makedirs(self.run_dir, exist_ok=True)
        if self.use_html:
            os.makedirs(self.img_dir, exist_ok=True)
        with open(self.log_name, 'a') as log_file:
            log_file.write(f'================ Training Loss ({time.strftime("%c")}) ================\n')
        if self.display_id > 0:
            self.vis = self._connect()

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

    def plot_current_losses(self, epoch: int, counter_ratio: float, losses: Mapping[str, float]) -> None:
        """Add a point per loss to the visdom line plot (x = epoch + fraction of the epoch done)."""
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

    def write_html(self, names: list[str]) -> str:
        """Rewrite ``web/index.html`` with every epoch whose images are on disk, newest first."""
        epochs = set()
        for path in glob.glob(os.path.join(self.img_dir, 'epoch*_*.png')):
            match = re.fullmatch(r'epoch(\d+)_(.+)\.png', os.path.basename(path))
            if match:
                epochs.add(int(match.group(1)))
        page = HTML(self.web_dir, f'Experiment name = {self.name}', refresh=0)
        for epoch in sorted(epochs, reverse=True):
            page.add_header(f'epoch [{epoch}]')
            shown = [n for n in names if os.path.isfile(os.path.join(self.img_dir, f'epoch{epoch:03d}_{n}.png'))]
            ims = [f'images/epoch{epoch:03d}_{n}.png' for n in shown]
            page.add_images(ims, shown, ims, width=self.win_size)
        return page.save()
