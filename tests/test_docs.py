"""Every command in README.md, docs/*.md and examples/README.md runs as written.

The commands are the lines of the fenced ``bash`` blocks (continuation lines joined, ``&&`` chains split,
comments dropped). Each one is checked by what it calls:

* ``python <script>.py ...`` (also ``.venv/bin/python``, ``python3``, ``torchrun ... train.py ...``): the arguments
  are parsed by that script's own parser (train.py and test.py: their options classes; other scripts:
  ``build_parser()``, or the parser their ``main`` builds), so that a removed or renamed flag fails here.
  Placeholders such as ``<exp>`` are replaced by dummy values.
* ``bash scripts/<x>.sh``: the script exists and is valid bash; ``make <target>``: the Makefile has the target.
* ``pip``, ``python -m venv`` and the like: the files they name exist.

The short self-contained ones (the harmony score and full-resolution harmonization on ``examples/`` with the
demo model), and the ``python`` blocks, are run. Links between the pages must point to existing files.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Optional
from unittest import mock

import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / 'README.md'] + sorted((ROOT / 'docs').glob('*.md')) + [ROOT / 'examples' / 'README.md']
README_MAX_LINES = 250
FLAG = re.compile(r'(?<![\w-])--[a-z][A-Za-z0-9_-]*')  # --name, --netG; not em dashes
PLACEHOLDER = re.compile(r'<([A-Za-z][\w .-]*)>')
PLACEHOLDER_VALUES = {'exp': 'exp', 'lr': '1e-4', 'host': 'localhost', 'n': '1'}
SHELL_OPERATORS = ('&&', '||', ';', '|')
PYTHON_MODULES_SKIPPED = ('venv', 'visdom.server')  # python -m ...: tools of other packages
RUNNABLE = ('predict_harmony_score.py', 'scripts/harmonize.py')  # fast on examples/ with the demo model


@dataclass(frozen=True)
class Command:
    """One command of a page: where it is, as written, and its arguments with placeholders replaced."""

    page: str
    line: int
    text: str
    argv: tuple[str, ...]

    @property
    def has_placeholders(self) -> bool:
        return bool(PLACEHOLDER.search(self.text))

    def __str__(self) -> str:
        return f'{self.page}:{self.line}: {self.text}'


def fenced_blocks(path: Path, languages: tuple[str, ...]) -> list[tuple[int, str]]:
    """(first line number, text) of the fenced code blocks of ``path`` in one of ``languages``."""
    blocks: list[tuple[int, str]] = []
    body: Optional[list[str]] = None  # the lines of the open block, None outside blocks
    keep, start = False, 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fence = re.match(r'^\s*```\s*(\S*)', line)
        if fence and body is None:
            body, keep, start = [], fence.group(1) in languages, number + 1
        elif fence:
            if keep:
                blocks.append((start, '\n'.join(body)))
            body = None
        elif body is not None:
            body.append(line)
    return blocks


def _fill(token: str) -> str:
    return PLACEHOLDER.sub(lambda m: PLACEHOLDER_VALUES.get(m.group(1), f'placeholder_{m.group(1)}'), token)


def page_commands(path: Path) -> list[Command]:
    """The commands of the ``bash`` blocks of one page (with ``$ `` prompts, only the prompted lines)."""
    commands = []
    for start, text in fenced_blocks(path, ('bash', 'sh', 'shell')):
        lines = text.splitlines()
        prompted = any(line.startswith('$ ') for line in lines)
        pending, first = '', start
        for offset, line in enumerate(lines):
            if prompted and not pending:
                if not line.startswith('$ '):
                    continue  # output of the previous command
                line = line[2:]
            if not pending:
                first = start + offset
            if line.rstrip().endswith('\\'):
                pending += line.rstrip()[:-1] + ' '
                continue
            joined, pending = pending + line, ''
            for part in _split_operators(shlex.split(joined, comments=True)):
                if part:
                    commands.append(Command(str(path.relative_to(ROOT)), first, joined.strip(),
                                            tuple(_fill(t) for t in part)))
    return commands


def _split_operators(tokens: list[str]) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    for token in tokens:
        if token in SHELL_OPERATORS:
            parts.append([])
        elif token.endswith(';') and len(token) > 1:
            parts[-1].append(token[:-1])
            parts.append([])
        else:
            parts[-1].append(token)
    return parts


ALL_COMMANDS = [c for page in PAGES for c in page_commands(page)]


def _strip_env(argv: tuple[str, ...]) -> list[str]:
    args = list(argv)
    while args and re.match(r'^[A-Z_][A-Z0-9_]*=', args[0]):
        args.pop(0)
    return args


def _is_python(prog: str) -> bool:
    return re.fullmatch(r'(.*/)?python3?', prog) is not None


def _load_script(path: Path) -> ModuleType:
    name = f'docs_cmd_{path.stem}'
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up there
    spec.loader.exec_module(module)
    return module


class _Parsed(Exception):
    """Raised right after a script's own parse_args accepted the arguments."""


def parse_script_args(script: str, args: list[str]) -> Optional[argparse.Namespace]:
    """Parse ``args`` with the parser of ``script`` (a path relative to the repository); pytest.fail if rejected."""
    path = ROOT / script
    assert path.is_file(), f'{script} does not exist'
    if torch.cuda.is_available() and '--gpu_ids' in args:  # the flags are checked here, not this machine's GPUs
        args = list(args)
        args[args.index('--gpu_ids') + 1] = '-1'
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            if script in ('train.py', 'test.py'):
                return parse_options(script, args)
            module = _load_script(path)
            if hasattr(module, 'build_parser'):
                return module.build_parser().parse_args(args)
            original = argparse.ArgumentParser.parse_args

            def parse_then_stop(self, arguments=None, namespace=None):
                original(self, arguments, namespace)
                raise _Parsed
            with mock.patch.object(argparse.ArgumentParser, 'parse_args', parse_then_stop):
                module.main(args)
            pytest.fail(f'{script}: main() returned without parsing its arguments')
    except _Parsed:
        return None
    except SystemExit as exc:
        pytest.fail(f'{script} rejects {shlex.join(args)} (exit {exc.code}): {stderr.getvalue().strip()[-800:]}')


def parse_options(script: str, args: list[str]) -> argparse.Namespace:
    """train.py's and test.py's options: ``parse`` (argparse and the checks after it). Where a command names an
    experiment whose weights are not here (``--name <exp>``), only the argparse step can run: the flags are
    still checked."""
    from options.test_options import TestOptions
    from options.train_options import TrainOptions
    options = TrainOptions if script == 'train.py' else TestOptions
    try:
        return options().parse(args)
    except FileNotFoundError:
        return options().gather_options(args)


def make_targets() -> set[str]:
    text = (ROOT / 'Makefile').read_text()
    return set(re.findall(r'^([A-Za-z][\w.-]*)\s*:(?!=)', text, re.M))


def check_command(command: Command) -> None:
    """Check one command by what it calls (see the module docstring)."""
    argv = _strip_env(command.argv)
    prog, args = argv[0], argv[1:]
    if _is_python(prog):
        if args[0] == '-m':
            assert args[1] in PYTHON_MODULES_SKIPPED, f'{command}: python -m {args[1]} is not known to this test'
            return
        parse_script_args(args[0], args[1:])
    elif prog == 'torchrun':
        script = next(i for i, a in enumerate(args) if a.endswith('.py'))
        from torch.distributed.run import get_args_parser
        with contextlib.redirect_stderr(io.StringIO()):
            get_args_parser().parse_args(args[:script + 1])
        parse_script_args(args[script], args[script + 1:])
    elif prog == 'bash':
        assert (ROOT / args[0]).is_file(), f'{command}: {args[0]} does not exist'
        res = subprocess.run(['bash', '-n', args[0]], cwd=ROOT, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
    elif prog == 'make':
        missing = set(args) - make_targets()
        assert not missing, f'{command}: the Makefile has no target {", ".join(sorted(missing))}'
    elif prog.endswith('pytest'):
        files = [a.split('::')[0] for a in args if a.split('::')[0].endswith('.py')]
        assert files and all((ROOT / f).is_file() for f in files), f'{command}: no such test file'
    elif prog == 'pip':
        for i, arg in enumerate(args):
            if arg in ('-r', '--requirement'):
                assert (ROOT / args[i + 1]).is_file(), f'{command}: {args[i + 1]} does not exist'
    elif prog in ('.', 'source'):
        return
    else:
        pytest.fail(f'{command}: {prog} is not known to tests/test_docs.py; teach it how to check this command')


def test_pages_have_commands():
    """The extraction finds the commands (the released train and test commands among them)."""
    texts = [c.text for c in ALL_COMMANDS]
    assert len(ALL_COMMANDS) >= 20
    assert any(t.startswith('python train.py --name <exp> --model bargainnet') for t in texts)
    assert any(t.startswith('python test.py --name <exp> --model bargainnet') for t in texts)


@pytest.mark.parametrize('command', ALL_COMMANDS, ids=[f'{c.page}:{c.line}' for c in ALL_COMMANDS])
def test_command_arguments_are_accepted(command: Command):
    check_command(command)


def _runnable(command: Command) -> bool:
    argv = _strip_env(command.argv)
    if command.has_placeholders or not _is_python(argv[0]) or len(argv) < 2 or argv[1] not in RUNNABLE:
        return False
    if argv[1] == 'scripts/harmonize.py':  # runs only with weights at hand (the demo model; not the released ones)
        args = argv[2:]
        folder = ROOT / args[args.index('--checkpoints_dir') + 1] / args[args.index('--name') + 1]
        return (folder / 'latest_net_G.pth').is_file()
    return True


RUNNABLE_COMMANDS = [c for i, c in enumerate(ALL_COMMANDS)  # each distinct command once
                     if _runnable(c) and c.argv not in {d.argv for d in ALL_COMMANDS[:i]}]


@pytest.mark.parametrize('command', RUNNABLE_COMMANDS, ids=[f'{c.page}:{c.line}' for c in RUNNABLE_COMMANDS])
def test_short_command_runs(command: Command, tmp_path, monkeypatch, capsys):
    """The harmony score and harmonization commands on examples/ run as written (in this process, for speed;
    outputs redirected to tmp_path), exit with status 0 and give one result per composite."""
    from util.cli import run_main
    argv = _strip_env(command.argv)
    script, args = argv[1], argv[2:] + ['--gpu', '-1']
    out = None
    if '--out' in args:
        i = args.index('--out') + 1
        out = tmp_path / Path(args[i]).name
        args[i] = str(out)
    monkeypatch.chdir(ROOT)
    status = run_main(_load_script(ROOT / script).main, args)
    captured = capsys.readouterr()
    assert status == 0, f'{command}\n{captured.err[-2000:]}'
    assert 'error:' not in captured.err
    lines = [line for line in captured.out.splitlines() if line.strip()]
    if script == 'predict_harmony_score.py':
        if '--format' not in args:
            assert lines and all(re.fullmatch(r'The harmony score of \S+ is [01]\.\d{3}', s) for s in lines), lines
        else:
            assert len(lines) >= 2, lines  # a header and a row per composite
    else:
        produced = [out] if out.suffix else sorted(out.iterdir())
        assert produced and all(p.is_file() for p in produced)
        for path in produced:
            source = next((ROOT / 'examples' / 'composite').glob(f'{path.stem}.*'))
            assert Image.open(path).size == Image.open(source).size


PYTHON_BLOCKS = [(page, line, text) for page in PAGES for line, text in fenced_blocks(page, ('python',))]


@pytest.mark.parametrize('block', PYTHON_BLOCKS,
                         ids=[f'{p.relative_to(ROOT)}:{n}' for p, n, _ in PYTHON_BLOCKS])
def test_python_block_runs(block, monkeypatch, capsys):
    """The Python examples run as written (in this process, from the repository root)."""
    page, line, text = block
    monkeypatch.chdir(ROOT)
    exec(compile(text, f'{page.relative_to(ROOT)}:{line}', 'exec'), {'__name__': '__docs__'})
    assert capsys.readouterr().out.strip()  # every example prints what it computed


EXTERNAL_FLAGS = {'--index-url', '--no-build-isolation', '--requirement', '--nproc_per_node', '--nnodes',
                  '--node_rank', '--master_addr', '--master_port', '--logdir', '--help'}


def project_flags() -> set[str]:
    """Every option string that the project's entry points accept."""
    from options.test_options import TestOptions
    from options.train_options import TrainOptions
    parsers = []
    for options in (TrainOptions(), TestOptions()):
        options.gather_options([])
        parsers.append(options.parser)
    for path in [ROOT / 'predict_harmony_score.py'] + sorted((ROOT / 'scripts').glob('*.py')):
        if "__name__ == '__main__'" not in path.read_text():
            continue  # a library module of the scripts, not an entry point
        module = _load_script(path)
        if hasattr(module, 'build_parser'):
            parsers.append(module.build_parser())
            continue

        def capture(self, arguments=None, namespace=None):
            parsers.append(self)
            raise _Parsed
        with mock.patch.object(argparse.ArgumentParser, 'parse_args', capture), contextlib.suppress(_Parsed):
            module.main([])
    return {flag for parser in parsers for flag in parser._option_string_actions}


def test_flags_named_in_the_pages_exist():
    """A flag named anywhere in the pages, prose included, is accepted by one of the project's scripts."""
    known = project_flags() | EXTERNAL_FLAGS
    named = {(page, flag) for page in PAGES for flag in FLAG.findall(page.read_text())}
    unknown = sorted(f'{page.relative_to(ROOT)}: {flag}' for page, flag in named if flag not in known)
    assert not unknown, unknown


def test_links_point_to_existing_files():
    broken = []
    for page in PAGES:
        for target in re.findall(r'\]\(([^)\s]+)\)', page.read_text()):
            if re.match(r'[a-z]+://', target) or target.startswith('#'):
                continue
            path = target.split('#')[0]
            if not (page.parent / path).exists():
                broken.append(f'{page.relative_to(ROOT)}: {target}')
    assert not broken, broken


def test_readme_is_the_front_door():
    text = (ROOT / 'README.md').read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    linked = set(re.findall(r'\]\(docs/([\w-]+\.md)\)', text))
    assert {p.name for p in (ROOT / 'docs').glob('*.md')} <= linked, 'every docs/ page is linked from README.md'
    assert 'SPEC' not in text and not any('SPEC' in p.read_text() for p in PAGES)
