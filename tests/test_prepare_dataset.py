"""scripts/prepare_dataset.py: the capped copy of a dataset, its resume after an interruption, its refusals."""
from __future__ import annotations

import filecmp
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from conftest import write_tiny_iharmony4
from data.iharmony4_dataset import read_list
from util.cli import run_main
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
SIZE = (700, 520)
MAX_SIDE = 256
CAPPED = (256, 190)  # 520 * 256 / 700 = 190.2


prep = load_script('prepare_dataset')
check = load_script('check_dataset')


def files_of(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` but the options record: relative path -> bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob('*'))
            if p.is_file() and p.name != prep.SETTINGS_FILE}


@pytest.fixture(scope='module')
def source(tmp_path_factory) -> Path:
    return write_tiny_iharmony4(tmp_path_factory.mktemp('src') / 'ihd', per_subset=2, size=SIZE, seed=4)


@pytest.fixture(scope='module')
def prepared(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('dst') / 'ihd_256'
    assert prep.main(['--dataset_root', str(source), '--out', str(out), '--max_side', str(MAX_SIDE),
                      '--workers', '2']) == 0
    return out


def test_same_layout_and_list_files(source, prepared):
    src, dst = files_of(source), files_of(prepared)
    assert sorted(src) == sorted(dst)
    lists = [k for k in src if k.endswith('.txt')]
    assert len(lists) == 2 + 2 * 4  # IHD_train/test and the per-subset lists
    for rel in lists:
        assert dst[rel] == src[rel], rel


def test_training_images_capped_consistently(source, prepared):
    samples, problems = read_list(prepared, 'train')
    assert not problems and len(samples) == 8
    for s in samples:
        sizes = {Image.open(p).size for p in (s.comp, s.real, s.mask)}
        assert sizes == {CAPPED}, s.line
        for path in (s.comp, s.real):
            with Image.open(path) as img, Image.open(source / os.path.relpath(path, prepared)) as orig:
                assert img.format == 'JPEG' and JpegImagePlugin.get_sampling(img) == JpegImagePlugin.get_sampling(orig)
        # the content is the source's, downscaled: close to an area resize of the source pixels
        orig = np.asarray(Image.open(source / os.path.relpath(s.comp, prepared)).convert('RGB'))
        ref = cv2.resize(orig, CAPPED, interpolation=cv2.INTER_AREA).astype(float)
        assert np.abs(np.asarray(Image.open(s.comp).convert('RGB')) - ref).mean() < 3
        # masks stay binary and cover the same region as the source mask
        mask = np.asarray(Image.open(s.mask))
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        orig_mask = np.asarray(Image.open(source / os.path.relpath(s.mask, prepared)))
        ref_mask = cv2.resize(orig_mask, CAPPED, interpolation=cv2.INTER_AREA) >= 128
        fg = mask == 255
        assert (fg & ref_mask).sum() / (fg | ref_mask).sum() > 0.97


def test_test_images_byte_identical_and_check_passes(source, prepared):
    samples, _ = read_list(prepared, 'test')
    assert len(samples) == 8
    for s in samples:
        for path in (s.comp, s.real, s.mask):
            assert filecmp.cmp(path, source / os.path.relpath(path, prepared), shallow=False), path
    report = check.check_dataset(prepared, deep=True)
    assert report.ok, check.format_report(report)


def test_small_enough_images_copied_unchanged(source, tmp_path):
    out = tmp_path / 'copy'
    counts = prep.prepare(source, out, max_side=max(SIZE))
    assert counts['copied'] == 48 and counts['resized'] == 0
    assert files_of(out) == files_of(source)


def test_resize_test_resizes_the_test_split(source, tmp_path):
    out = tmp_path / 'all'
    prep.prepare(source, out, max_side=MAX_SIDE, resize_test=True)
    samples, _ = read_list(out, 'test')
    assert {Image.open(p).size for s in samples for p in (s.comp, s.real, s.mask)} == {CAPPED}


def test_resume_after_interruption(source, prepared, tmp_path, monkeypatch):
    out = tmp_path / 'resumed'
    real_save = prep.save_atomic
    calls = {'n': 0}

    def save_then_stop(img, dst, quality):
        calls['n'] += 1
        if calls['n'] == 5:
            raise KeyboardInterrupt  # stopped in the middle of the fifth file
        real_save(img, dst, quality)

    monkeypatch.setattr(prep, 'save_atomic', save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(source, out, max_side=MAX_SIDE, workers=1)
    monkeypatch.undo()
    partial = files_of(out)
    assert 0 < len(partial) < len(files_of(prepared))
    assert not (out / 'IHD_train.txt').exists()  # the list files come last: a copy with lists is complete
    # a temporary file left by a killed writer, and an output lost since
    sub_dir = out / 'HCOCO' / 'real_images'
    stale = sub_dir / f'.x.jpg.abc{prep.TMP_SUFFIX}'
    stale.write_bytes(b'partial')
    done = [p for p in out.rglob('*.jpg')]
    done[0].unlink()

    counts = prep.prepare(source, out, max_side=MAX_SIDE, workers=2)
    assert counts['stale temporaries'] == 1 and not stale.exists()
    assert counts['present'] == len(partial) - 1
    assert files_of(out) == files_of(prepared)  # same bytes as the uninterrupted run


def test_refuses_other_options_on_resume(source, prepared, tmp_path):
    out = tmp_path / 'c'
    shutil.copytree(prepared, out)
    with pytest.raises(ValueError, match='max_side 256'):
        prep.prepare(source, out, max_side=512)
    other = tmp_path / 'not_empty'
    other.mkdir()
    (other / 'notes.txt').write_text('mine')
    with pytest.raises(ValueError, match='not empty'):
        prep.prepare(source, other, max_side=512)


def test_refuses_to_write_into_the_source(source, capsys):
    before = files_of(source)
    for out in (source, source / 'cache'):
        capsys.readouterr()
        assert run_main(prep.main, ['--dataset_root', str(source), '--out', str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('error: ') and 'inside it' in err[0]
    assert files_of(source) == before and not (source / 'cache').exists()


def test_real_shared_with_test_split_kept_whole(tmp_path):
    src = write_tiny_iharmony4(tmp_path / 'src', per_subset=1, size=SIZE, seed=1)
    train_line = (src / 'IHD_train.txt').read_text().splitlines()[0]  # HCOCO/composite_images/c1000_1_1.jpg
    shared = train_line.replace('_1.jpg', '_9.jpg')
    shutil.copy(src / train_line, src / shared)
    with open(src / 'IHD_test.txt', 'a') as f:
        f.write(shared + '\n')
    out = tmp_path / 'dst'
    counts = prep.prepare(src, out, max_side=MAX_SIDE)
    assert counts['kept whole'] == 1
    for rel in (train_line, shared, 'HCOCO/real_images/c1000.jpg', 'HCOCO/masks/c1000_1.png'):
        assert filecmp.cmp(src / rel, out / rel, shallow=False), rel
    assert Image.open(out / 'HFlickr' / 'real_images' / 'f1000.jpg').size == CAPPED
    assert check.check_dataset(out).ok


def test_size_mismatch_is_one_line_naming_the_file(tmp_path, capsys):
    src = write_tiny_iharmony4(tmp_path / 'src', per_subset=1, size=SIZE, seed=2)
    mask = src / 'HFlickr' / 'masks' / 'f1000_1.png'
    Image.open(mask).resize((300, 200)).save(mask)
    assert run_main(prep.main, ['--dataset_root', str(src), '--out', str(tmp_path / 'dst'), '--workers', '2',
                                 '--max_side', str(MAX_SIDE)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(mask) in err[0] and '300x200' in err[0]


def test_loader_benchmark_runs_and_reports_the_cache(capsys):
    bench = load_script('benchmark_loading')
    assert bench.main(['--total', '8', '--scale', '0.15', '--repeats', '1', '--max_sides', '256', '--batch_size', '2',
                       '--workers', '0']) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith('| original') or line.startswith('| cache 256')]
    assert rows and any(line.startswith('| cache 256') for line in rows)
    assert 'logical cores' in out.splitlines()[0]
