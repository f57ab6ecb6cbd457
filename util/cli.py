"""Entry-point helpers: logging set up once, and bad input turned into one-line errors."""
from __future__ import annotations

import argparse
import logging
import re
import sys
from typing import Callable, Optional, Sequence

EXIT_BAD_INPUT = 2  # bad arguments or input (scripts of many inputs: after processing the others)
EXIT_INTERRUPTED = 130


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default, left out where there is none to show (None, False, '')."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, '') or action.default is argparse.SUPPRESS:
            return action.help or ''
        return super()._get_help_string(action)


def flag_given(argv: Sequence[str], *flags: str) -> bool:
    """Whether one of ``flags`` (``--gpu``) is in ``argv``, alone or as ``--gpu=1`` (parsers built with
    ``allow_abbrev=False``, whose flags cannot be abbreviated)."""
    return any(arg.split('=', 1)[0] in flags for arg in argv)


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {text}')
    return value


def setup_logging(verbose: bool = False) -> None:
    """Configure the root logger once: INFO (DEBUG with ``--verbose``) on stderr."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format='%(levelname)s: %(message)s', stream=sys.stderr, force=True)


_WORKER_TRACEBACK = '\nOriginal Traceback (most recent call last):\n'


def error_message(exc: BaseException) -> str:
    """The message of ``exc``; for an error re-raised from a DataLoader worker, the worker's own message.

    PyTorch re-raises a worker's exception in the main process as the same type with the text
    ``Caught <Type> in DataLoader worker process N.`` + the worker's traceback, whose last line is
    ``<Type>: <message>``.
    """
    text = str(exc)
    head, sep, traceback = text.partition(_WORKER_TRACEBACK)
    if not (sep and head.startswith('Caught ')):
        return text
    name = re.escape(type(exc).__name__)  # the traceback qualifies it with its module unless it is built in
    lines = list(re.finditer(rf'^(?:[\w.]+\.)?{name}: ', traceback, flags=re.MULTILINE))
    return traceback[lines[-1].end():].rstrip('\n') if lines else text


def run_main(main: Callable[[Optional[Sequence[str]]], int | None], argv: Optional[Sequence[str]] = None) -> int:
    """Run ``main(argv)``; ValueError/FileNotFoundError/OSError become ``error: <message>`` and exit status 2.

    The same one line whether the error happened in the main process or in a DataLoader worker. With
    ``--verbose`` among the arguments the full traceback is shown instead.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        return int(main(args) or 0)
    except (ValueError, FileNotFoundError, OSError) as exc:
        if '--verbose' in args:
            raise
        print(f'error: {error_message(exc)}', file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return EXIT_INTERRUPTED


def add_pair_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--image``, ``--mask`` and ``--input_dir``: the composite + mask inputs of ``util.pairs.find_pairs``."""
    parser.add_argument('--image', action='append', default=[],
                        help='a composite, or a folder of composites; repeat with --mask')
    parser.add_argument('--mask', action='append', default=[],
                        help='the mask of the --image of the same position (white = foreground), or a folder of '
                             'masks named like the composites')
    parser.add_argument('--input_dir', action='append', default=[],
                        help='a folder of composites with masks beside them (x.jpg + x_mask.png) or in masks/ '
                             '(masks/x.png); repeatable')
