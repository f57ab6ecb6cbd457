"""Check an iHarmony4-layout dataset before training on it: one report, exit status 2 when anything is wrong.

Counts composites per sub-dataset and split, and finds: missing list files, malformed or duplicate lines,
composites listed in both splits, missing composites, masks or real images (with the list line), unreadable
or truncated images, masks whose size differs from their composite, composites whose size differs from
their real image, and (``--deep``) masks without foreground.

By default it reads image headers only (size and mode, no pixels), plus the last bytes of each JPEG and PNG:
a file without its end marker is decoded to confirm that it is truncated. ``--deep`` decodes every image,
which also finds masks with an empty foreground (no pixel at 255) and masks with grey values (pixels
between 0 and 255 count as background); it takes minutes on the full iHarmony4.

Warnings (printed, exit status unaffected): per-subset lists (``<Sub>/<Sub>_<split>.txt``) that disagree
with ``IHD_<split>.txt``, and real images used by both splits.

Usage::

    python scripts/check_dataset.py --dataset_root datasets/iHarmony4 [--deep]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from data.iharmony4_dataset import LIST_FILES, SUBSETS, Sample, decode, mask_array, open_image, read_list  # noqa: E402,E501
from util.cli import EXIT_BAD_INPUT, HelpFormatter, run_main, setup_logging  # noqa: E402

logger = logging.getLogger('check_dataset')

PROBLEM_ORDER = ('list file missing', 'empty list', 'malformed line', 'duplicate line', 'in both splits',
                 'composite missing', 'mask missing', 'real image missing', 'unreadable image',
                 'mask size differs', 'real size differs', 'empty foreground')
JPEG_END = b'\xff\xd9'
PNG_END = b'IEND\xaeB`\x82'


@dataclass
class ImageInfo:
    """What was learnt about one image file: its size (W, H), or why it cannot be read."""

    size: Optional[tuple[int, int]] = None
    error: Optional[str] = None
    foreground: Optional[int] = None  # masks, --deep: pixels at 255
    grey: Optional[int] = None  # masks, --deep: pixels strictly between 0 and 255


@dataclass
class Report:
    """The result of :func:`check_dataset`."""

    root: str
    deep: bool
    counts: dict[str, Counter] = field(default_factory=dict)  # split -> subset -> composites
    files: Counter = field(default_factory=Counter)  # 'composites', 'masks', 'real images' checked
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    def add(self, kind: str, message: str) -> None:
        self.problems[kind].append(message)


def _ends_properly(path: str) -> bool:
    """False when a JPEG or PNG file lacks its end marker (a sign of truncation); True for other formats."""
    ext = os.path.splitext(path)[1].lower()
    marker = JPEG_END if ext in ('.jpg', '.jpeg') else PNG_END if ext == '.png' else None
    if marker is None:
        return True
    with open(path, 'rb') as f:
        f.seek(0, os.SEEK_END)
        n = f.tell()
        f.seek(max(0, n - 4096))
        tail = f.read()
    return marker in tail


def inspect_image(path: str, is_mask: bool, deep: bool) -> ImageInfo:
    """Read an image's header (and its pixels with ``deep`` or when its end marker is missing)."""
    try:
        with open_image(path) as img:
            info = ImageInfo(size=img.size)
            if deep or not _ends_properly(path):
                decode(img)
                if is_mask and deep:
                    info.foreground = int(mask_array(img).sum())
                    if img.mode == 'L':
                        a = np.asarray(img)
                        info.grey = int(((a > 0) & (a < 255)).sum())
            return info
    except (ValueError, OSError) as exc:
        return ImageInfo(error=str(exc))


def check_dataset(root: str | Path, deep: bool = False, workers: int = 8) -> Report:
    """Check the dataset under ``root`` and return the report (see the module docstring for what is checked).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise FileNotFoundError(f'--dataset_root {root}: no such folder')
    report = Report(root, deep)
    samples: dict[str, list[Sample]] = {}  # lines whose three files exist
    listed: dict[str, list[Sample]] = {}  # every well-formed line
    for phase, list_name in LIST_FILES.items():
        found, problems = read_list(root, phase)
        for p in problems:
            report.add(p.kind, p.message)
        samples[phase] = found
        listed[phase], _ = read_list(root, phase, check_files=False)
        report.counts[phase] = Counter(s.subset for s in listed[phase])
        first_seen: dict[str, int] = {}
        for s in listed[phase]:
            if s.line in first_seen:
                report.add('duplicate line', f'{os.path.join(root, list_name)} line {s.line_no}: {s.line} (first at '
                                             f'line {first_seen[s.line]})')
            else:
                first_seen[s.line] = s.line_no

    train_lines = {s.line: s for s in listed['train']}
    for s in listed['test']:
        if s.line in train_lines:
            report.add('in both splits', f'{s.line} is in {LIST_FILES["train"]} (line {train_lines[s.line].line_no})'
                                         f' and {LIST_FILES["test"]} (line {s.line_no})')
    shared_reals = {s.real for s in listed['train']} & {s.real for s in listed['test']}
    if shared_reals:
        report.warnings.append(f'{len(shared_reals)} real images are used by both splits, e.g. '
                               f'{sorted(shared_reals)[0]}')
    _compare_subset_lists(root, listed, report)

    # every distinct file once, in threads (file reading releases the GIL)
    kinds: dict[str, bool] = {}
    for phase in samples:
        for s in samples[phase]:
            kinds[s.comp] = False
            kinds[s.real] = False
            kinds[s.mask] = True
    report.files['composites'] = len({s.comp for v in samples.values() for s in v})
    report.files['masks'] = len({s.mask for v in samples.values() for s in v})
    report.files['real images'] = len({s.real for v in samples.values() for s in v})
    paths = sorted(kinds)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        infos = dict(zip(paths, pool.map(lambda p: inspect_image(p, kinds[p], deep), paths, chunksize=64)))

    for path in paths:
        if infos[path].error:
            report.add('unreadable image', infos[path].error)
    grey_masks = 0
    for phase in samples:
        for s in samples[phase]:
            where = f'{LIST_FILES[phase]} line {s.line_no}'
            c, m, r = infos[s.comp], infos[s.mask], infos[s.real]
            if c.size and m.size and m.size != c.size:
                report.add('mask size differs', f'{where}: mask {s.mask} is {m.size[0]}x{m.size[1]} but composite '
                                                f'{s.comp} is {c.size[0]}x{c.size[1]}')
            if c.size and r.size and r.size != c.size:
                report.add('real size differs', f'{where}: composite {s.comp} is {c.size[0]}x{c.size[1]} but real '
                                                f'image {s.real} is {r.size[0]}x{r.size[1]}')
            if m.foreground == 0:
                report.add('empty foreground', f'{where}: mask {s.mask} has no foreground pixel (value 255)')
    for path in paths:
        if kinds[path] and infos[path].grey:
            grey_masks += 1
    if grey_masks:
        report.warnings.append(f'{grey_masks} masks hold grey values (neither 0 nor 255); they count as background')
    return report


def _compare_subset_lists(root: str, samples: dict[str, list[Sample]], report: Report) -> None:
    """Warn where ``<Sub>/<Sub>_<split>.txt`` (when present) disagrees with ``IHD_<split>.txt``."""
    for phase, found in samples.items():
        by_subset: dict[str, set[str]] = defaultdict(set)
        for s in found:
            by_subset[s.subset].add(os.path.basename(s.comp))
        for subset in sorted(set(by_subset) | set(SUBSETS)):
            path = os.path.join(root, subset, f'{subset}_{phase}.txt')
            if not os.path.isfile(path):
                continue
            with open(path, encoding='utf-8', errors='replace') as f:
                names = {line.strip().rsplit('/', 1)[-1] for line in f if line.strip()}
            extra, missing = names - by_subset[subset], by_subset[subset] - names
            if extra or missing:
                report.warnings.append(f'{path}: {len(extra)} names not in {LIST_FILES[phase]}, {len(missing)} '
                                       f'{LIST_FILES[phase]} lines of {subset} not in it')


def format_report(report: Report, show: int = 10) -> str:
    """The report as text: counts table, files checked, problems by kind (``show`` examples each; 0 = all)."""
    subsets = [s for s in SUBSETS if any(report.counts[p][s] for p in report.counts)]
    subsets += sorted({s for c in report.counts.values() for s in c} - set(subsets))
    lines = [f'dataset root: {report.root}', '']
    width = max([len(s) for s in subsets] + [6])
    lines.append('split  ' + ''.join(f'{s:>{width + 2}}' for s in subsets) + f'{"all":>{width + 2}}')
    for phase, counts in report.counts.items():
        lines.append(f'{phase:<7}' + ''.join(f'{counts[s]:>{width + 2}}' for s in subsets)
                     + f'{sum(counts.values()):>{width + 2}}')
    lines.append('')
    mode = 'pixels decoded (--deep)' if report.deep else 'headers read; add --deep to decode pixels and find ' \
                                                         'empty foregrounds'
    lines.append(f'checked {report.files["composites"]} composites, {report.files["masks"]} masks, '
                 f'{report.files["real images"]} real images: {mode}')
    for w in report.warnings:
        lines.append(f'warning: {w}')
    kinds = [k for k in PROBLEM_ORDER if report.problems.get(k)]
    kinds += sorted(k for k in report.problems if report.problems[k] and k not in PROBLEM_ORDER)
    if not kinds:
        lines.append('OK: no problems found')
        return '\n'.join(lines)
    total = sum(len(report.problems[k]) for k in kinds)
    lines.append(f'FAILED: {total} problem{"" if total == 1 else "s"}')
    for k in kinds:
        msgs = report.problems[k]
        lines.append(f'  {k}: {len(msgs)}')
        shown = msgs if show <= 0 else msgs[:show]
        lines += [f'    {m}' for m in shown]
        if len(shown) < len(msgs):
            lines.append(f'    ... {len(msgs) - len(shown)} more (--show 0 lists all)')
    return '\n'.join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=HelpFormatter)
    p.add_argument('--dataset_root', '--dataroot', dest='dataset_root', required=True,
                   help='the folder that holds IHD_train.txt and IHD_test.txt')
    p.add_argument('--deep', action='store_true', help='decode every image: truncation, empty foregrounds')
    p.add_argument('--workers', type=int, default=8, help='threads reading files')
    p.add_argument('--show', type=int, default=10, help='examples shown per kind of problem (0: all)')
    p.add_argument('--verbose', action='store_true', help='debug logging and full tracebacks')
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    report = check_dataset(args.dataset_root, deep=args.deep, workers=args.workers)
    print(format_report(report, show=args.show))
    return 0 if report.ok else EXIT_BAD_INPUT


if __name__ == '__main__':
    sys.exit(run_main(main))
