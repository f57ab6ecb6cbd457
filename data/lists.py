"""The list files of an iHarmony4-layout dataset, and the composite, mask and real paths each line names.

Layout::

    <root>/IHD_train.txt, IHD_test.txt     lines like HCOCO/composite_images/c100300_1602094_1.jpg
    <root>/<Sub>/composite_images/<real>_<maskid>_<k>.jpg
    <root>/<Sub>/masks/<real>_<maskid>.png
    <root>/<Sub>/real_images/<real>.jpg

The mask and real paths are derived from the composite name by splitting off the last two ``_`` fields, so
real names may hold hyphens or underscores (``d18897-20120428-164138_1_2.jpg``). A real image is looked up
as ``<real>.jpg`` first and, for datasets of one's own with PNG composites, ``<real>`` + the composite's
extension.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

SUBSETS = ('HCOCO', 'HAdobe5k', 'HFlickr', 'Hday2night')
LIST_FILES = {'train': 'IHD_train.txt', 'test': 'IHD_test.txt'}


@dataclass(frozen=True)
class Sample:
    """One line of a list file and the three files it names (absolute paths)."""

    line_no: int
    line: str
    subset: str
    comp: str
    mask: str
    real: str


@dataclass(frozen=True)
class ListProblem:
    """A problem found while reading a list file: its kind and a one-line message naming file and line."""

    kind: str
    message: str


def derive_paths(line: str) -> tuple[str, str, str, str]:
    """Split a list line into (subset, composite, mask, real stem), paths relative to the dataset root.

    ``HCOCO/composite_images/c100300_1602094_1.jpg`` gives ``('HCOCO', 'HCOCO/composite_images/
    c100300_1602094_1.jpg', 'HCOCO/masks/c100300_1602094.png', 'HCOCO/real_images/c100300')``; the real
    image's extension is resolved against the files on disk (:func:`real_candidates`).

    Raises:
        ValueError: the line is not ``<Sub>/composite_images/<real>_<maskid>_<k>.<ext>``.
    """
    text = line.strip().replace('\\', '/')
    if text.startswith('./'):
        text = text[2:]
    parts = text.split('/')
    if len(parts) != 3 or parts[1] != 'composite_images' or not parts[0] or not parts[2]:
        raise ValueError('expected <Sub>/composite_images/<real>_<maskid>_<k>.jpg')
    subset, _, name = parts
    stem, dot, ext = name.rpartition('.')
    if not dot or not stem:
        raise ValueError(f'composite name {name!r} has no extension')
    fields = stem.rsplit('_', 2)
    if len(fields) != 3 or not all(fields):
        raise ValueError(f'composite name {name!r} is not <real>_<maskid>_<k>.{ext}')
    real, mask_id, _k = fields
    return (subset, f'{subset}/composite_images/{name}', f'{subset}/masks/{real}_{mask_id}.png',
            f'{subset}/real_images/{real}')


def real_candidates(real_stem: str, comp_path: str) -> list[str]:
    """File names tried, in order, for the real image: ``.jpg``, then the composite's own extension."""
    exts = ['.jpg']
    comp_ext = os.path.splitext(comp_path)[1]
    if comp_ext and comp_ext != '.jpg':
        exts.append(comp_ext)
    return [real_stem + e for e in exts]


class _DirIndex:
    """Existence checks through one directory listing per folder (fast for tens of thousands of files)."""

    def __init__(self) -> None:
        self._names: dict[str, frozenset[str]] = {}

    def exists(self, path: str) -> bool:
        folder, name = os.path.split(path)
        if folder not in self._names:
            try:
                self._names[folder] = frozenset(os.listdir(folder))
            except OSError:
                self._names[folder] = frozenset()
        return name in self._names[folder]


def read_list(root: str | os.PathLike, phase: str, limit: Optional[int] = None,
              check_files: bool = True) -> tuple[list[Sample], list[ListProblem]]:
    """Read ``IHD_<phase>.txt`` under ``root``; return the samples and every problem found.

    Args:
        root: the dataset root.
        phase: 'train' or 'test'.
        limit: read only the first ``limit`` non-empty lines (``--max_dataset_size``).
        check_files: check that each line's composite, mask and real image exist.

    Returns:
        The well-formed samples whose files exist, and the problems (missing list file, malformed lines,
        missing files), each naming the list file, the line number and the path.
    """
    if phase not in LIST_FILES:
        raise ValueError(f'phase must be one of {", ".join(LIST_FILES)}, got {phase!r}')
    root = os.path.abspath(os.fspath(root))
    list_path = os.path.join(root, LIST_FILES[phase])
    if not os.path.isfile(list_path):
        hint = ('--dataset_root must be the iHarmony4 folder that holds IHD_train.txt and IHD_test.txt'
                if os.path.isdir(root) else f'the dataset root {root} does not exist')
        return [], [ListProblem('list file missing', f'{list_path} not found: {hint}')]
    with open(list_path, encoding='utf-8', errors='replace') as f:
        raw_lines = f.read().splitlines()
    samples: list[Sample] = []
    problems: list[ListProblem] = []
    index = _DirIndex()
    n_lines = 0
    for line_no, raw in enumerate(raw_lines, start=1):
        line = raw.strip()
        if not line:
            continue
        n_lines += 1
        if limit is not None and n_lines > limit:
            break
        where = f'{list_path} line {line_no}'
        try:
            subset, comp_rel, mask_rel, real_stem = derive_paths(line)
        except ValueError as exc:
            problems.append(ListProblem('malformed line', f'{where}: {exc}, got {line!r}'))
            continue
        comp = os.path.join(root, *comp_rel.split('/'))
        mask = os.path.join(root, *mask_rel.split('/'))
        cands = [os.path.join(root, *c.split('/')) for c in real_candidates(real_stem, comp_rel)]
        real = cands[0]
        ok = True
        if check_files:
            if not index.exists(comp):
                problems.append(ListProblem('composite missing', f'{where}: composite {comp} does not exist'))
                ok = False
            if not index.exists(mask):
                problems.append(ListProblem('mask missing', f'{where}: mask {mask} (derived from the composite '
                                                            f'name) does not exist'))
                ok = False
            found = [c for c in cands if index.exists(c)]
            if found:
                real = found[0]
            else:
                problems.append(ListProblem('real image missing', f'{where}: real image {real} (derived from the '
                                                                  f'composite name) does not exist'))
                ok = False
        if ok:
            samples.append(Sample(line_no, line, subset, comp, mask, real))
    if n_lines == 0:
        problems.append(ListProblem('empty list', f'{list_path} lists no composites'))
    return samples, problems
