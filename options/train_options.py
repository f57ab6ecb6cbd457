"""Options of train.py."""
from __future__ import annotations

import argparse

from .base_options import BaseOptions

LR_POLICIES = ('linear', 'step', 'plateau', 'cosine')


class TrainOptions(BaseOptions):
    """Training options: visualization, saving, schedule and optimizer."""

    is_train = True

    def initialize(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser = super().initialize(parser)
        g = parser.add_argument_group('visualization')
        g.add_argument('--display_freq', type=int, default=400, help='iterations between result images')
        g.add_argument('--display_ncols', type=int, default=4, help='images per row in visdom')
        g.add_argument('--display_id', type=int, default=1, help='visdom window id; 0 turns visdom off')
        g.add_argument('--display_server', type=str, default='http://localhost', help='visdom server')
        g.add_argument('--display_env', type=str, default='main', help='visdom environment')
        g.add_argument('--display_port', type=int, default=8097, help='visdom port')
        g.add_argument('--update_html_freq', type=int, default=1000, help='iterations between HTML updates')
        g.add_argument('--print_freq', type=int, default=100, help='iterations between loss lines')
        g.add_argument('--no_html', action='store_true', help='do not write checkpoints/<name>/web/')
        g.add_argument('--tensorboard', action='store_true',
                       help='also log losses and learning rates to checkpoints/<name>/tensorboard/ (needs the '
                            'tensorboard package)')

        g = parser.add_argument_group('saving and resuming')
        g.add_argument('--save_latest_freq', type=int, default=5000, help='iterations between latest saves')
        g.add_argument('--save_epoch_freq', type=int, default=5, help='epochs between <epoch> saves')
        g.add_argument('--save_by_iter', action='store_true', help='also keep iter_<n> checkpoints')
        g.add_argument('--continue_train', action='store_true',
                       help='resume from <epoch>_train_state.pth (--epoch, --load_iter), or from the network files '
                            'alone with fresh optimizers')
        g.add_argument('--epoch_count', type=int, default=1, help='first epoch number')
        g.add_argument('--phase', type=str, default='train', help='train, val, test, ...')

        g = parser.add_argument_group('schedule and optimizer')
        g.add_argument('--niter', type=int, default=100, help='epochs at the starting learning rate')
        g.add_argument('--niter_decay', type=int, default=100, help='epochs of linear decay to zero')
        g.add_argument('--beta1', type=float, default=0.5, help='Adam beta1')
        g.add_argument('--lr', type=float, default=0.0002, help='initial learning rate')
        g.add_argument('--lr_policy', type=str, default='linear', choices=LR_POLICIES, help='learning rate policy')
        g.add_argument('--lr_decay_iters', type=int, default=50, help='step policy: multiply by 0.1 every N epochs')
        g.add_argument('--max_iters', type=int, default=0,
                       help='stop after this many iterations in all (0: run every epoch); saves latest first')

        g = parser.add_argument_group('data loading')
        g.add_argument('--jpeg_draft', action='store_true',
                       help='decode large JPEG composites and real images at 1/2, 1/4 or 1/8 scale (DCT scaling) '
                            'when their short side stays at least 2 x --crop_size: several times faster loading '
                            "of HAdobe5k's large photos, slightly different pixels from a full decode")
        return parser
