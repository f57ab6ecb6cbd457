"""Options of test.py."""
from __future__ import annotations

import argparse
import logging
import math
import os
from typing import Optional, Sequence

from models.checkpoint import read_weights
from models.factory import checkpoint_paths, checkpoint_tag, model_defaults

from .base_options import BaseOptions

logger = logging.getLogger(__name__)

# what a model's folder provides when the command line does not say (see models.factory.model_defaults)
FROM_MODEL = ('ngf', 'ndf', 'style_dim', 'norm', 'no_dropout', 'eval')


class TestOptions(BaseOptions):
    """Evaluation options: the test protocol, the outputs and the baselines."""

    is_train = False

    def initialize(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser = super().initialize(parser)
        g = parser.add_argument_group('evaluation')
        g.add_argument('--results_dir', type=str, default='./results/', help='where results are saved')
        g.add_argument('--aspect_ratio', type=float, default=1.0, help='aspect ratio of saved images')
        g.add_argument('--phase', type=str, default='test', help='train, val, test, ...')
        g.add_argument('--eval', dest='eval', action='store_const', const=True, default=None,
                       help='BatchNorm with running statistics and no dropout (default: what the model folder '
                            'says, see --no_eval; the released test ran without --eval)')
        g.add_argument('--no_eval', dest='eval', action='store_const', const=False,
                       help='BatchNorm with each image\'s own statistics and dropout active (the released test)')
        g.add_argument('--num_test', type=float, default=math.inf, help='evaluate the first N composites only')
        g.add_argument('--psnr_peak', type=str, default='255', choices=('255', 'dynamic'),
                       help="PSNR peak: 255, or 'dynamic' = the output's max - min per image (the released code)")
        g.add_argument('--baseline', type=str, default='none', choices=('none', 'composite'),
                       help='composite: evaluate the input composites themselves, no weights loaded')
        g.add_argument('--num_html', type=int, default=20,
                       help='images with the largest improvements and the largest regressions in index.html')
        parser.set_defaults(preprocess='resize')
        return parser

    def parse(self, args: Optional[Sequence[str]] = None) -> argparse.Namespace:
        """Parse, then take what the command line leaves unset from the model's folder (and say so)."""
        opt = super().parse(args)
        if opt.baseline == 'none':
            given = self.given(args, FROM_MODEL)
            folder = os.path.join(opt.checkpoints_dir, opt.name)
            paths = checkpoint_paths(folder, checkpoint_tag(opt.epoch, opt.load_iter))
            found = model_defaults(folder, {net: read_weights(path) for net, path in paths.items()})
            used = {k: v for k, v in found.items() if k not in given}
            for key, value in used.items():
                setattr(opt, key, value)
            if used:
                logger.info('settings of the model in %s: %s (command-line flags win)', folder,
                            ', '.join(f'{k} {v}' for k, v in used.items()))
            opt.input_nc = 4 + opt.style_dim
        if opt.eval is None:
            opt.eval = False
        return opt
