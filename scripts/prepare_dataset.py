"""Write a copy of an iHarmony4-layout dataset whose training images are at most ``--max_side`` pixels long.

Training decodes every composite and real image at full size before cropping 256×256 out of it; HAdobe5k's
photos reach 6048 pixels, so most of a loader's time goes to pixels the crop throws away. This script writes
the dataset once at the size training can use (long side 1024 by default, as later harmonization work does):

* training composites, real images and masks whose long side exceeds ``--max_side`` are resized to it,
  the three alike: images with an antialiased Lanczos filter (large JPEGs are first decoded at a reduced DCT
  scale that stays at least twice the target size), masks with an area filter and thresholded at 128, so
  that they stay 0/255; JPEGs are written at ``--jpeg_quality`` with the source's chroma subsampling (none
  when unknown), other formats (PNG masks) in their own format;
* test images are copied byte for byte (resized only with ``--resize_test``: the test protocol resizes the
  original images, so resizing them first changes the metrics), and so are images already small enough
  (hard links where the file system allows it);
* a real image shared by several composites is processed once; a real image used by a test composite is
  kept whole unless ``--resize_test``, together with its training composites;
* the list files (``IHD_train.txt``, ``IHD_test.txt``, ``<Sub>/<Sub>_<split>.txt``) are copied last, so a
  copy that has them is complete.

Every file is written to a temporary name and renamed, and files already in ``--out`` are skipped: an
interrupted run continues where it stopped when started again with the same options (the options are kept
in ``--out``/prepare_dataset.json and a run with other ones is refused). The source is never written to.

Usage::

    python scripts/prepare_dataset.py --dataset_root datasets/iHarmony4 --out datasets/iHarmony4_1024 --workers 8
    python train.py --dataset_root datasets/iHarmony4_1024 ...
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections import Counter
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, JpegImagePlugin
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from data.iharmony4_dataset import LIST_FILES, SUBSETS, mask_array, open_image, read_list, rgb_array  # noqa: E402
from util.cli import positive_int, run_main, setup_logging  # noqa: E402

logger = logging.getLogger('prepare_dataset')

SETTINGS_FILE = 'prepare_dataset.json'
TMP_SUFFIX = '.prepare.tmp'
DRAFT_GAP = 2  # JPEGs are decoded at a DCT scale of at least twice the target size, then Lanczos-resized
MASK_THRESHOLD = 128
IMAGE_FOLDERS = ('composite_images', 'masks', 'real_images')


@dataclass
class Group:
    """A real image and the composites and masks made from it: the unit of work, processed once."""

    real: str  # path relative to the dataset root, '/'-separated
    comps: list[str] = field(default_factory=list)
    masks: list[str] = field(default_factory=list)
    train: int = 0  # composites of each split
    test: int = 0


@dataclass(frozen=True)
class Job:
    """What to do with a group: resize it to at most ``max_side`` or copy it."""

    src: str
    dst: str
    group: Group
    resize: bool
    max_side: int
    jpeg_quality: int


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--dataset_root', '--dataroot', dest='dataset_root', required=True,
                   help='the source dataset (the folder that holds IHD_train.txt and IHD_test.txt); only read')
    p.add_argument('--out', required=True, help='the folder to write the copy to (new, or a partial copy to finish)')
    p.add_argument('--max_side', type=positive_int, default=1024, help='largest long side of the training images')
    p.add_argument('--resize_test', action='store_true', help='resize the test images too (changes test metrics)')
    p.add_argument('--jpeg_quality', type=int, default=95, help='quality of the JPEGs written')
    p.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1),
                   help='worker processes (0 or 1: in this process)')
    p.add_argument('--verbose', action='store_true', help='debug logging and full tracebacks')
    args = p.parse_args(argv)
    if not 1 <= args.jpeg_quality <= 100:
        raise ValueError(f'--jpeg_quality {args.jpeg_quality}: expected 1 to 100')
    return args


# ----------------------------------------------------------------------------------------------- planning
def check_paths(src: str, dst: str) -> None:
    """Refuse a destination that is the source or lies inside it.

    Raises:
        FileNotFoundError: the source is not a folder.
        ValueError: ``dst`` is ``src`` or inside it.
    """
    if not os.path.isdir(src):
        raise FileNotFoundError(f'--dataset_root {src}: no such folder')
    real_src, real_dst = os.path.realpath(src), os.path.realpath(dst)
    if real_dst == real_src or real_dst.startswith(real_src.rstrip(os.sep) + os.sep):
        raise ValueError(f'--out {dst} is the source dataset {src} or inside it: choose a folder outside the source, '
                         'which is never written to')


def plan_groups(src: str) -> list[Group]:
    """Read both list files of ``src`` and group their composites and masks by real image.

    Raises:
        FileNotFoundError, ValueError: a list file is missing, or a line is malformed or names a missing file
            (the first problem, with the count of the others).
    """
    groups: dict[str, Group] = {}
    for phase in LIST_FILES:
        samples, problems = read_list(src, phase)
        if problems:
            more = f' (and {len(problems) - 1} more: run scripts/check_dataset.py --dataset_root {src})' \
                if len(problems) > 1 else ''
            exc_type = FileNotFoundError if problems[0].kind.endswith('missing') else ValueError
            raise exc_type(problems[0].message + more)
        for s in samples:
            real = _rel(src, s.real)
            g = groups.setdefault(real, Group(real))
            comp, mask = _rel(src, s.comp), _rel(src, s.mask)
            if comp in g.comps:
                continue  # listed twice (check_dataset.py reports it)
            g.comps.append(comp)
            if mask not in g.masks:
                g.masks.append(mask)
            setattr(g, phase, getattr(g, phase) + 1)
    return list(groups.values())


def _rel(root: str, path: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, '/')


# ----------------------------------------------------------------------------------------------- one group
def target_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(W, H) scaled so that the long side is ``max_side``; unchanged when it is not longer already."""
    w, h = size
    long = max(w, h)
    if long <= max_side:
        return w, h
    if w >= h:
        return max_side, max(1, round(h * max_side / w))
    return max(1, round(w * max_side / h)), max_side


def resized_image(path: str, size: tuple[int, int]) -> Image.Image:
    """The image at ``path`` resized to ``size`` (W, H) with Lanczos, after a reduced JPEG decode where it helps."""
    with open_image(path) as img:
        sampling = JpegImagePlugin.get_sampling(img) if img.format == 'JPEG' else -1
        img.draft(None, (size[0] * DRAFT_GAP, size[1] * DRAFT_GAP))  # a no-op for other formats
        pixels = Image.fromarray(rgb_array(img))
    out = pixels.resize(size, Image.Resampling.LANCZOS)
    out.info['subsampling'] = sampling
    return out


def resized_mask(path: str, size: tuple[int, int]) -> Image.Image:
    """The mask at ``path`` as 0/255, area-resized to ``size`` (W, H) and thresholded at 128."""
    with open_image(path) as img:
        fg = mask_array(img)
    area = Image.fromarray(fg.astype(np.uint8) * 255).resize(size, Image.Resampling.BOX)
    return Image.fromarray(np.where(np.asarray(area) >= MASK_THRESHOLD, 255, 0).astype(np.uint8))


def save_atomic(img: Image.Image, dst: str, jpeg_quality: int) -> None:
    """Write ``img`` to ``dst`` through a temporary file in the same folder and ``os.replace``."""
    ext = os.path.splitext(dst)[1].lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise ValueError(f'{dst}: no image format writes {ext!r} files')
    kwargs = {}
    if fmt == 'JPEG':  # the source's chroma subsampling; none when it is unknown (not a JPEG)
        sampling = img.info.get('subsampling', -1)
        kwargs = {'quality': jpeg_quality, 'subsampling': sampling if sampling in (0, 1, 2) else 0}
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dst), prefix='.' + os.path.basename(dst) + '.',
                               suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, 'wb') as f:
            img.save(f, format=fmt, **kwargs)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def copy_file(src: str, dst: str) -> None:
    """A byte-for-byte copy: a hard link where possible, else a copy written atomically."""
    try:
        os.link(src, dst)
        return
    except FileExistsError:
        return
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dst), prefix='.' + os.path.basename(dst) + '.', suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def process(job: Job) -> Counter:
    """Write the files of one group that are not in the destination yet; return counts by action.

    Raises:
        ValueError: a composite or mask whose size differs from its real image (naming both files), or an
            unreadable image.
    """
    g = job.group
    counts: Counter = Counter()
    files = [g.real, *g.masks, *g.comps]
    todo = [rel for rel in files if not os.path.exists(os.path.join(job.dst, rel))]
    counts['present'] = len(files) - len(todo)
    if not todo:
        return counts
    src_of = {rel: os.path.join(job.src, rel) for rel in files}
    size = _size(src_of[g.real])
    for rel in files[1:]:
        other = _size(src_of[rel])
        if other != size:
            raise ValueError(f'{src_of[rel]} is {other[0]}x{other[1]} but its real image {src_of[g.real]} is '
                             f'{size[0]}x{size[1]}: they must have the same size (scripts/check_dataset.py lists '
                             'every such file)')
    new_size = target_size(size, job.max_side) if job.resize else size
    masks = set(g.masks)
    for rel in todo:
        dst = os.path.join(job.dst, rel)
        if new_size == size:
            copy_file(src_of[rel], dst)
            counts['copied'] += 1
            continue
        img = resized_mask(src_of[rel], new_size) if rel in masks else resized_image(src_of[rel], new_size)
        save_atomic(img, dst, job.jpeg_quality)
        counts['resized'] += 1
    return counts


def _size(path: str) -> tuple[int, int]:
    with open_image(path) as img:
        return img.size


# ----------------------------------------------------------------------------------------------- the copy
def write_settings(dst: str, settings: dict) -> None:
    """Record the options in ``dst``; refuse to continue a copy that was made with other options.

    Raises:
        ValueError: ``dst`` holds a copy made with other options, or files but no record of the options.
    """
    path = os.path.join(dst, SETTINGS_FILE)
    if os.path.isfile(path):
        with open(path, encoding='utf-8') as f:
            old = json.load(f)
        if old != settings:
            diff = ', '.join(f'{k} {old.get(k)!r} (now {v!r})' for k, v in settings.items() if old.get(k) != v)
            raise ValueError(f'{dst} was prepared with other options ({diff}): start it again with the same options '
                             'to finish it, or choose another --out')
        return
    if os.path.isdir(dst) and os.listdir(dst):
        raise ValueError(f'--out {dst} is not empty and holds no {SETTINGS_FILE}: choose a new or empty folder')
    os.makedirs(dst, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst, prefix='.' + SETTINGS_FILE + '.', suffix=TMP_SUFFIX)
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
        json.dump(settings, f, indent=1)
    os.replace(tmp, path)


def remove_stale_temporaries(dst: str, folders: Sequence[str]) -> int:
    """Delete temporary files an interrupted run left in ``folders`` of ``dst``; return how many."""
    n = 0
    for folder in folders:
        path = os.path.join(dst, folder)
        if not os.path.isdir(path):
            continue
        for name in os.listdir(path):
            if name.startswith('.') and name.endswith(TMP_SUFFIX):
                os.remove(os.path.join(path, name))
                n += 1
    return n


def copy_lists(src: str, dst: str) -> list[str]:
    """Copy ``IHD_<split>.txt`` and every ``<Sub>/<Sub>_<split>.txt`` (atomically); return the paths copied."""
    names = list(LIST_FILES.values())
    subsets = sorted(set(SUBSETS) | {d for d in os.listdir(src) if os.path.isdir(os.path.join(src, d))})
    for sub in subsets:
        names += [f'{sub}/{sub}_{split}.txt' for split in LIST_FILES if
                  os.path.isfile(os.path.join(src, sub, f'{sub}_{split}.txt'))]
    for rel in names:
        out = os.path.join(dst, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(out), prefix='.' + os.path.basename(out) + '.',
                                   suffix=TMP_SUFFIX)
        os.close(fd)
        shutil.copy2(os.path.join(src, rel), tmp)
        os.replace(tmp, out)
    return names


def prepare(src: str | Path, dst: str | Path, max_side: int = 1024, resize_test: bool = False,
            jpeg_quality: int = 95, workers: int = 1) -> Counter:
    """Write the copy of ``src`` into ``dst`` (see the module docstring); return counts by action.

    Counts: 'resized', 'copied' (or hard-linked), 'present' (already in ``dst``), 'kept whole' (training
    composites whose real image a test composite uses), 'stale temporaries' (removed).

    Raises:
        FileNotFoundError, ValueError: see :func:`check_paths`, :func:`plan_groups`, :func:`write_settings`
            and :func:`process`.
    """
    src, dst = os.path.abspath(os.fspath(src)), os.path.abspath(os.fspath(dst))
    check_paths(src, dst)
    groups = plan_groups(src)
    write_settings(dst, {'source': src, 'max_side': max_side, 'resize_test': resize_test,
                         'jpeg_quality': jpeg_quality})
    folders = sorted({os.path.dirname(rel) for g in groups for rel in (g.real, *g.masks, *g.comps)})
    counts: Counter = Counter()
    counts['stale temporaries'] = remove_stale_temporaries(dst, folders)
    for folder in folders:
        os.makedirs(os.path.join(dst, folder), exist_ok=True)
    jobs = []
    for g in groups:
        resize = resize_test or not g.test
        if g.test and not resize_test:
            counts['kept whole'] += g.train
        jobs.append(Job(src, dst, g, resize, max_side, jpeg_quality))
    if counts['kept whole']:
        logger.warning('%d training composites keep their full size: their real image is used by the test split, '
                       'whose images are copied unchanged (--resize_test resizes them too)', counts['kept whole'])
    total = sum(1 + len(g.masks) + len(g.comps) for g in groups)
    # the largest groups first, so that the pool does not end on one long job
    jobs.sort(key=lambda j: -len(j.group.comps))
    with tqdm(total=total, unit='file', desc='prepare_dataset', disable=None) as bar:
        if workers <= 1:
            for job in jobs:
                counts += process(job)
                bar.update(1 + len(job.group.masks) + len(job.group.comps))
        else:
            _run_pool(jobs, workers, counts, bar)
    copy_lists(src, dst)
    return counts


def _run_pool(jobs: list[Job], workers: int, counts: Counter, bar: tqdm) -> None:
    """Process ``jobs`` in ``workers`` processes; the first error cancels the rest and is raised."""
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending = {pool.submit(process, job): job for job in jobs}
        while pending:
            done, _ = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in done:
                job = pending.pop(fut)
                exc = fut.exception()
                if exc is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise exc
                counts += fut.result()
                bar.update(1 + len(job.group.masks) + len(job.group.comps))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    counts = prepare(args.dataset_root, args.out, args.max_side, args.resize_test, args.jpeg_quality, args.workers)
    print(f'{args.out}: {counts["resized"]} files resized to a long side of at most {args.max_side}, '
          f'{counts["copied"]} copied unchanged, {counts["present"]} already there')
    if counts['stale temporaries']:
        print(f'removed {counts["stale temporaries"]} temporary files of an interrupted run')
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
