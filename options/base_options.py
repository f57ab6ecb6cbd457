"""Options shared by training and testing."""
from __future__ import annotations

import argparse
import logging
import math
import os
from typing import Optional, Sequence

import data
import models
from models.factory import resolve_gpu_ids
from util.cli import HelpFormatter, positive_int

logger = logging.getLogger(__name__)

NET_G_CHOICES = ('s2ad',)
NORM_CHOICES = ('batch', 'instance', 'none')
INIT_CHOICES = ('normal', 'xavier', 'kaiming', 'orthogonal')
PREPROCESS_CHOICES = ('resize_and_crop', 'resize', 'none')
AMP_CHOICES = ('none', 'bf16', 'fp16')
DEFAULT_WORKERS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1)


def _size(text: str) -> float:
    """A count that may be 'inf' (the released code's default for --max_dataset_size)."""
    value = float(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected a positive count or inf, got {text}')
    return value


def parse_gpu_ids(text: str) -> list[int]:
    """Parse ``--gpu_ids`` ('0', '0,1', '-1') into a list of non-negative ids; -1 means the CPU."""
    ids = []
    for part in text.split(','):
        part = part.strip()
        if not part:
            continue
        try:
            gid = int(part)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f'--gpu_ids takes integers like 0,1 or -1, got {text!r}') from exc
        if gid >= 0:
            ids.append(gid)
    return ids


class BaseOptions:
    """Defines the options used by train.py and test.py and resolves them.

    Subclasses add their phase's options in :meth:`initialize` and set ``is_train``. The chosen model and
    dataset add theirs through ``modify_commandline_options``, as in pix2pix.
    """

    is_train = False

    def initialize(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """Add the options shared by every phase."""
        g = parser.add_argument_group('experiment')
        g.add_argument('--dataset_root', '--dataroot', dest='dataset_root', type=str, default='',
                       help='iHarmony4 root (the folder that holds IHD_train.txt and IHD_test.txt)')
        g.add_argument('--name', type=str, default='experiment_name',
                       help='experiment name: weights go to <checkpoints_dir>/<name>/')
        g.add_argument('--gpu_ids', type=str, default='0',
                       help='GPU ids, e.g. 0 or 0,1 (one per torchrun process); -1 for the CPU (also used when no '
                            'GPU is found)')
        g.add_argument('--checkpoints_dir', type=str, default='./checkpoints', help='where models are saved')
        g.add_argument('--is_train', type=int, default=None,
                       help='accepted for compatibility with the released commands; the script sets the phase')
        g.add_argument('--seed', type=int, default=0, help='seed for every random number generator')
        g.add_argument('--verbose', action='store_true', help='print network details and full tracebacks')
        g.add_argument('--suffix', type=str, default='',
                       help='customized suffix: opt.name = opt.name + suffix, e.g. {model}_{netG}_size{load_size}')

        g = parser.add_argument_group('model')
        g.add_argument('--model', type=str, default='bargainnet', choices=sorted(models.MODELS),
                       help='which model to use')
        g.add_argument('--input_nc', type=int, default=20,
                       help='generator input channels: composite RGB (3) + mask (1) + domain code (style_dim)')
        g.add_argument('--output_nc', type=int, default=3, help='generator output channels')
        g.add_argument('--ngf', type=positive_int, default=64, help='generator filters in the outermost layer')
        g.add_argument('--ndf', type=positive_int, default=64,
                       help='domain code extractor filters in its first layer (64 in the released model)')
        g.add_argument('--style_dim', type=positive_int, default=16, help='length of the domain code')
        g.add_argument('--netG', type=str, default='s2ad', choices=NET_G_CHOICES, help='generator architecture')
        g.add_argument('--norm', type=str, default='instance', choices=NORM_CHOICES,
                       help='normalization layers (the bargainnet model sets batch)')
        g.add_argument('--init_type', type=str, default='normal', choices=INIT_CHOICES, help='weight init')
        g.add_argument('--init_gain', type=float, default=0.02, help='scale of the weight init')
        g.add_argument('--no_dropout', action='store_true', help='no dropout in the generator')
        g.add_argument('--epoch', type=str, default='latest', help='which checkpoint to load: latest or a number')
        g.add_argument('--load_iter', type=int, default=0,
                       help='if > 0, load iter_<load_iter> checkpoints instead of --epoch')
        g.add_argument('--amp', type=str, default='none', choices=AMP_CHOICES,
                       help='mixed precision with autocast (off by default: the released numerics)')
        g.add_argument('--channels_last', action='store_true', help='channels-last memory format on GPUs')
        g.add_argument('--compile', action='store_true', help='torch.compile the networks (opt-in)')

        g = parser.add_argument_group('data')
        g.add_argument('--dataset_mode', type=str, default='iharmony4', choices=sorted(data.DATASETS),
                       help='dataset loader')
        g.add_argument('--serial_batches', action='store_true', help='take images in order instead of shuffling')
        g.add_argument('--num_threads', type=int, default=DEFAULT_WORKERS,
                       help='data loading worker processes (default: 4, or the CPUs if fewer)')
        g.add_argument('--batch_size', type=positive_int, default=1, help='batch size (per process under torchrun)')
        g.add_argument('--load_size', type=positive_int, default=256, help='scale images to this size')
        g.add_argument('--crop_size', type=positive_int, default=256, help='then crop to this size')
        g.add_argument('--max_dataset_size', type=_size, default=math.inf,
                       help='use at most this many images of the list')
        g.add_argument('--preprocess', type=str, default='resize_and_crop', choices=PREPROCESS_CHOICES,
                       help='resize_and_crop (training augmentation), resize (test protocol) or none')
        g.add_argument('--no_flip', action='store_true', help='no horizontal flip in training')
        g.add_argument('--display_winsize', type=int, default=256, help='display window size for visdom and HTML')
        return parser

    def build_parser(self, add_help: bool = True) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(formatter_class=HelpFormatter, add_help=add_help)
        return self.initialize(parser)

    def gather_options(self, args: Optional[Sequence[str]] = None) -> argparse.Namespace:
        """Parse basic options, then add the model's and dataset's options and parse again.

        The first passes run without ``--help``, so that the help lists the model's and dataset's options too.
        """
        first = self.build_parser(add_help=False)
        opt, _ = first.parse_known_args(args)
        parser = self.build_parser()
        parser = models.get_option_setter(opt.model)(parser, self.is_train)
        parser = data.get_option_setter(opt.dataset_mode)(parser, self.is_train)
        self.parser = parser
        return parser.parse_args(args)

    def given(self, args: Optional[Sequence[str]], names: Sequence[str]) -> set[str]:
        """The option names among ``names`` that the command line sets (in any form argparse accepts)."""
        unset = object()
        saved = {name: self.parser.get_default(name) for name in names}
        self.parser.set_defaults(**{name: unset for name in names})
        try:
            parsed, _ = self.parser.parse_known_args(args)
        finally:
            self.parser.set_defaults(**saved)
        return {name for name in names if getattr(parsed, name, unset) is not unset}

    def parse(self, args: Optional[Sequence[str]] = None) -> argparse.Namespace:
        """Parse and resolve the options; validate them; nothing is written to disk here."""
        opt = self.gather_options(args)
        opt.is_train = self.is_train
        if opt.suffix:
            opt.name = opt.name + '_' + opt.suffix.format(**vars(opt))
        requested = 'gpu_ids' in self.given(args, ['gpu_ids'])
        opt.gpu_ids = resolve_gpu_ids(parse_gpu_ids(opt.gpu_ids), requested)
        if opt.input_nc != 4 + opt.style_dim:
            self.parser.error(f'--input_nc {opt.input_nc} does not match the generator input: composite (3) + '
                              f'mask (1) + domain code (--style_dim {opt.style_dim}) = {4 + opt.style_dim}')
        self.opt = opt
        return opt

    def format_options(self, opt: argparse.Namespace) -> str:
        lines = ['----------------- Options ---------------']
        for key, value in sorted(vars(opt).items()):
            default = self.parser.get_default(key)
            comment = f'\t[default: {default}]' if value != default else ''
            lines.append(f'{key:>25}: {str(value):<30}{comment}')
        lines.append('----------------- End -------------------')
        return '\n'.join(lines)

    def summary(self, opt: argparse.Namespace) -> str:
        """One line of the options that differ from their defaults (the full list goes to the options file)."""
        defaults = vars(self.parser.parse_args([]))
        shown = {**vars(opt), 'gpu_ids': ','.join(map(str, opt.gpu_ids)) or '-1 (CPU)'}
        changed = [f'{key}={value}' for key, value in sorted(shown.items())
                   if key in defaults and key != 'is_train' and str(value) != str(defaults[key])]
        return 'options: ' + (', '.join(changed) if changed else 'all defaults')

    def save(self, opt: argparse.Namespace, folder: Optional[str] = None) -> str:
        """Write the resolved options to ``<folder>/<phase>_opt.txt`` and return the path.

        ``folder`` defaults to the experiment folder ``<checkpoints_dir>/<name>``.
        """
        expr_dir = folder or os.path.join(opt.checkpoints_dir, opt.name)
        os.makedirs(expr_dir, exist_ok=True)
        path = os.path.join(expr_dir, f'{opt.phase}_opt.txt')
        with open(path, 'w') as f:
            f.write(self.format_options(opt) + '\n')
        return path
