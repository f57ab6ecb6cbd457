"""Options of test.py."""
from __future__ import annotations

import argparse
import math

from .base_options import BaseOptions


class TestOptions(BaseOptions):
    """Evaluation options: the test protocol, the outputs and the baselines."""

    is_train = False

    def initialize(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser = super().initialize(parser)
        g = parser.add_argument_group('evaluation')
        g.add_argument('--results_dir', type=str, default='./results/', help='where results are saved')
        g.add_argument('--aspect_ratio', type=float, default=1.0, help='aspect ratio of saved images')
        g.add_argument('--phase', type=str, default='test', help='train, val, test, ...')
        g.add_argument('--eval', action='store_true',
                       help='BatchNorm with running statistics and no dropout (the released test did not)')
        g.add_argument('--num_test', type=float, default=math.inf, help='evaluate the first N composites only')
        g.add_argument('--psnr_peak', type=str, default='255', choices=('255', 'dynamic'),
                       help="PSNR peak: 255, or 'dynamic' = the output's max - min per image (the released code)")
        g.add_argument('--baseline', type=str, default='none', choices=('none', 'composite'),
                       help='composite: evaluate the input composites themselves, no weights loaded')
        g.add_argument('--invert_mask', action='store_true',
                       help='background harmonization: feed the inverted mask to G and E')
        g.add_argument('--batched_forward', action='store_true',
                       help='run the networks on whole batches: faster on GPUs, but results may differ in a few '
                            'truncated uint8 pixels between batch sizes (default: one image per forward, identical)')
        g.add_argument('--no_prepack', action='store_true',
                       help="on the CPU, run the networks' large convolutions with PyTorch's per-call weight "
                            'reorder instead of weights prepacked once (same results, slower; see models/prepack.py)')
        g.add_argument('--num_html', type=int, default=20,
                       help='images with the largest and the smallest gains shown in index.html')
        parser.set_defaults(preprocess='resize')
        return parser
