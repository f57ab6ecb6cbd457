"""scripts/make_synthetic_dataset.py and scripts/check_dataset.py: the builder's output and every check."""
from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.iharmony4_dataset import SUBSETS, derive_paths, mask_array
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


make = load_script('make_synthetic_dataset')
check = load_script('check_dataset')

NAME_STYLES = {'HCOCO': r'c\d{6}_\d+_\d+\.jpg', 'HAdobe5k': r'a\d{4}_\d+_\d+\.jpg', 'HFlickr': r'f\d+_\d+_\d+\.jpg',
               'Hday2night': r'd\d{5}-2012\d{4}-\d{6}_\d+_\d+\.jpg'}


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """A small dataset from scikit-image's photos: 6 training and 2 test photos, 2 views each."""
    out = tmp_path_factory.mktemp('synthetic') / 'ds'
    res = make.build_dataset(out, seed=3, per_photo=4, views=2, per_mask=2, test_photos=2, large_side=720,
                             max_side=720)
    rows = list(csv.DictReader(open(out / 'synthetic_manifest.csv')))
    return out, res, rows


def read_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert('RGB')).astype(int)


def test_layout_names_and_split(built):
    out, res, rows = built
    assert make.SUBSETS == SUBSETS
    assert len(res.train_photos) == 6 and len(res.test_photos) == 2
    assert not set(res.train_photos) & set(res.test_photos)
    for split in ('train', 'test'):
        lines = (out / f'IHD_{split}.txt').read_text().split()
        assert len(lines) == sum(res.counts[split].values()) == {'train': 24, 'test': 8}[split]
        for sub in SUBSETS:
            assert res.counts[split][sub] >= 2  # every sub-dataset in both splits
            names = (out / sub / f'{sub}_{split}.txt').read_text().split()
            assert names == [ln.split('/')[-1] for ln in lines if ln.startswith(sub + '/')]
            assert all(re.fullmatch(NAME_STYLES[sub], n) for n in names), names
    # test composites come from photos that training never saw
    photos = {split: {r['photo'] for r in rows if r['split'] == split} for split in ('train', 'test')}
    assert photos['test'] == set(res.test_photos) and photos['train'] == set(res.train_photos)


def test_sizes_are_like_iharmony4(built):
    out, _, rows = built
    sizes = {r['real']: tuple(map(int, r['size'].split('x'))) for r in rows}
    assert sum(w != h for w, h in sizes.values()) == len(sizes)  # non-square
    assert all(320 <= max(s) <= 720 for s in sizes.values())
    assert {max(s) for r, s in sizes.items() if r.startswith('HAdobe5k')} == {720}  # the large ones
    for real, (w, h) in sizes.items():
        assert Image.open(out / real).size == (w, h)


def test_check_dataset_accepts_the_built_dataset(built):
    out, res, _ = built
    report = check.check_dataset(out, deep=True, workers=2)
    assert report.ok, check.format_report(report)
    assert not report.warnings
    assert {k: dict(v) for k, v in report.counts.items()} == res.counts
    assert report.files['composites'] == 32 and report.files['real images'] == res.n_real == 16
    assert report.files['masks'] == res.n_masks == 16


def test_composites_equal_real_outside_the_mask_and_differ_inside(built):
    out, _, rows = built
    for r in rows:
        comp, real = read_rgb(out / r['composite']), read_rgb(out / r['real'])
        mask = mask_array(Image.open(out / r['mask']))
        assert 0.05 <= mask.mean() <= 0.5
        assert abs(mask.mean() - float(r['fg_fraction'])) < 1e-4
        # JPEG codes 8x8 blocks one by one (no chroma subsampling): blocks the mask does not touch are equal
        h, w = mask.shape
        blocks = np.zeros(((h + 7) // 8, (w + 7) // 8), bool)
        ys, xs = np.nonzero(mask)
        blocks[ys // 8, xs // 8] = True
        touched = np.repeat(np.repeat(blocks, 8, 0), 8, 1)[:h, :w]
        assert (~touched).mean() > 0.3
        assert np.array_equal(comp[~touched], real[~touched])
        assert np.abs(comp[mask] - real[mask]).mean() >= 4  # min_change 6, less JPEG's rounding


def test_make_composite_changes_the_foreground_only():
    rng = np.random.default_rng(0)
    real = make.skimage_photos()[2].pixels  # coffee
    h, w = real.shape[:2]
    ref = make.reference_pixels(make.skimage_photos()[0].pixels, rng)
    for sub in SUBSETS:
        mask = make.generate_mask(h, w, 0.05, 0.5, rng)
        comp, desc, change = make.make_composite(real, mask, sub, rng, ref, min_change=6, max_change=45)
        assert np.array_equal(comp[~mask], real[~mask])
        assert 6 <= change <= 45, (sub, desc, change)
        assert change == pytest.approx(np.abs(comp[mask].astype(int) - real[mask]).mean())


def test_generated_masks_are_objects_of_the_asked_size():
    rng = np.random.default_rng(1)
    from skimage.measure import label
    fill = []
    for i in range(24):
        h, w = (300, 451) if i % 2 else (700, 520)
        mask = make.generate_mask(h, w, 0.02, 0.6, rng)
        assert mask.shape == (h, w) and 0.02 <= mask.mean() <= 0.6
        lab = label(mask)
        assert np.bincount(lab.ravel())[1:].max() >= 0.8 * mask.sum()  # essentially one piece
        ys, xs = np.nonzero(mask)
        fill.append(mask.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1)))
    assert max(fill) < 0.97  # not rectangles
    assert np.ptp(fill) > 0.1  # and of varied shapes


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    rng = np.random.default_rng(0)
    photos = [make.Photo(f'p{i}', rng.integers(0, 256, size=(200 + 10 * i, 300, 3), dtype=np.uint8))
              for i in range(3)]
    kw = dict(per_photo=2, views=1, per_mask=1, test_photos=1, large_side=0)
    make.build_dataset(tmp_path / 'a', photos, seed=5, **kw)
    make.build_dataset(tmp_path / 'b', photos, seed=5, **kw)
    make.build_dataset(tmp_path / 'c', photos, seed=6, **kw)

    def files(d):
        return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob('*')) if p.is_file()}

    assert files(tmp_path / 'a') == files(tmp_path / 'b')
    assert files(tmp_path / 'a') != files(tmp_path / 'c')
    with pytest.raises(ValueError, match='not an empty folder'):
        make.build_dataset(tmp_path / 'a', photos, seed=5, **kw)
    with pytest.raises(ValueError, match='--test_photos 3'):
        make.build_dataset(tmp_path / 'd', photos, test_photos=3)
    with pytest.raises(ValueError, match='--fg_min'):
        make.build_dataset(tmp_path / 'e', photos, fg_min=0.5, fg_max=0.2)


def test_recolour_view_changes_colours_globally_and_colours_grey_photos():
    rng = np.random.default_rng(0)
    pixels = rng.integers(30, 220, size=(40, 50, 3), dtype=np.uint8)
    assert np.array_equal(make.recolour_view(pixels, rng, 0.0, gray=False), pixels)  # strength 0: untouched
    means = []
    for seed in range(6):
        out = make.recolour_view(pixels, np.random.default_rng(seed), 1.0, gray=False)
        assert out.shape == pixels.shape and out.dtype == np.uint8
        # a global change: one smooth colour mapping, so equal input pixels stay equal
        assert np.array_equal(out[0, 0], make.recolour_view(np.broadcast_to(pixels[0, 0], (2, 2, 3)).copy(),
                                                             np.random.default_rng(seed), 1.0, gray=False)[1, 1])
        means.append(out.reshape(-1, 3).mean(0))
    assert np.ptp(np.array(means), axis=0).min() > 5  # each channel's mean moves from one view to another
    grey = np.repeat(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], 3, axis=2)
    toned = make.recolour_view(grey, np.random.default_rng(1), 0.0, gray=True).astype(int)
    assert np.abs(toned[..., 0] - toned[..., 2]).max() > 10  # coloured
    lum = toned @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(lum[0]) >= -1)  # the tones keep their order


def test_gray_photos_train_only_and_view_jitter_spares_the_test_split(tmp_path):
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, 320)[None, :, None] * np.linspace(0.3, 1, 240)[:, None, None]
    colour = [make.Photo(f'p{i}', (ramp * rng.uniform(60, 250, size=3)).astype(np.uint8)) for i in range(2)]
    grey = [make.Photo(f'g{i}', np.repeat(rng.integers(0, 256, size=(200, 300, 1), dtype=np.uint8), 3, axis=2),
                       gray=True) for i in range(3)]
    res = make.build_dataset(tmp_path / 'ds', colour + grey, seed=1, per_photo=2, views=1, per_mask=2,
                             test_photos=2, large_side=0, view_jitter=1.0)  # every colour photo may be a test one
    assert res.test_photos == ['p0', 'p1'] and res.train_photos == ['g0', 'g1', 'g2']
    rows = list(csv.DictReader(open(tmp_path / 'ds' / 'synthetic_manifest.csv')))
    for r in rows:
        real = read_rgb(tmp_path / 'ds' / r['real'])
        if r['split'] == 'test':  # the photo's own pixels (first view: the whole photo), up to JPEG coding
            photo = next(p for p in colour if p.name == r['photo']).pixels.astype(int)
            assert np.abs(real - photo).mean() < 3
        else:
            assert np.abs(real[..., 0] - real[..., 2]).mean() > 3  # a greyscale photo, coloured
    with pytest.raises(ValueError, match='--test_photos 3: with 2 colour photos'):
        make.build_dataset(tmp_path / 'e', colour + grey, test_photos=3)
    with pytest.raises(ValueError, match='--view_jitter'):
        make.build_dataset(tmp_path / 'f', colour + grey, test_photos=1, view_jitter=-1)


def test_user_photos_and_masks_from_the_command_line(tmp_path, capsys):
    photos, masks = tmp_path / 'photos', tmp_path / 'masks'
    photos.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, size=(330, 400, 3), dtype=np.uint8)).save(photos / f'pic{i}.png')
    user = np.zeros((330, 400), np.uint8)
    user[100:200, 150:300] = 255
    Image.fromarray(user).save(masks / 'pic1_a.png')
    out = tmp_path / 'out'
    rc = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'make_synthetic_dataset.py'), '--out', str(out),
                         '--photos', str(photos), '--masks', str(masks), '--per_photo', '2', '--views', '1',
                         '--test_photos', '1', '--seed', '2', '--large_side', '0'],
                        capture_output=True, text=True, timeout=120)
    assert rc.returncode == 0, rc.stderr
    rows = list(csv.DictReader(open(out / 'synthetic_manifest.csv')))
    assert len(rows) == 6
    for r in rows:
        mask = np.asarray(Image.open(out / r['mask']))
        if r['photo'] == 'pic1':
            assert np.array_equal(mask, user)  # the user's mask, untouched (first view = the whole photo)
        else:
            assert 0.05 <= (mask == 255).mean() <= 0.5
    assert check.main(['--dataset_root', str(out)]) == 0
    # bad input: one line on stderr, exit status 2
    capsys.readouterr()
    assert make.run_main(make.main, ['--out', str(out), '--photos', str(photos)]) == 2
    assert capsys.readouterr().err == f'error: --out {out} exists and is not an empty folder; choose a new one\n'
    Image.fromarray(user[:100]).save(masks / 'pic2.png')
    assert make.run_main(make.main, ['--out', str(tmp_path / 'o2'), '--photos', str(photos), '--masks',
                                     str(masks)]) == 2
    assert capsys.readouterr().err == f'error: mask {masks / "pic2.png"} is 400x100 but photo pic2 is 400x330\n'


# ----------------------------------------------------------------------------------------------- check_dataset
@pytest.fixture
def broken(tiny_dataset, tmp_path):
    """The tiny dataset with one of every problem; returns the root and the paths involved."""
    root = Path(shutil.copytree(tiny_dataset, tmp_path / 'ihd'))
    lines = (root / 'IHD_train.txt').read_text().split()
    paths = [derive_paths(ln) for ln in lines]
    p = {i: (root / c, root / m, root / (r + '.jpg')) for i, (_, c, m, r) in enumerate(paths)}
    p[0][0].unlink()  # line 1: composite missing
    p[1][1].unlink()  # line 2: mask missing
    p[2][2].unlink()  # line 3: real missing
    p[3][0].write_bytes(b'garbage')  # line 4: unreadable composite
    blob = p[4][2].read_bytes()
    p[4][2].write_bytes(blob[: len(blob) // 2])  # line 5: truncated real image
    Image.open(p[5][1]).resize((100, 100)).save(p[5][1])  # line 6: mask size
    Image.open(p[6][2]).crop((0, 0, 300, 272)).save(p[6][2])  # line 7: real size
    Image.fromarray(np.zeros((272, 320), np.uint8)).save(p[7][1])  # line 8: empty foreground
    test_first = (root / 'IHD_test.txt').read_text().split()[0]
    (root / 'IHD_train.txt').write_text('\n'.join(lines + [lines[7], 'HCOCO/oops.jpg', test_first]) + '\n')
    return root, p


def test_check_dataset_reports_every_problem(broken):
    root, p = broken
    report = check.check_dataset(root, deep=False, workers=2)
    text = check.format_report(report, show=0)
    lst = root / 'IHD_train.txt'
    expected = {
        'composite missing': f'{lst} line 1: composite {p[0][0]} does not exist',
        'mask missing': f'{lst} line 2: mask {p[1][1]}',
        'real image missing': f'{lst} line 3: real image {p[2][2]}',
        'unreadable image': f'{p[3][0]}: cannot read the image',
        'mask size differs': f'IHD_train.txt line 6: mask {p[5][1]} is 100x100 but composite {p[5][0]} is 320x272',
        'real size differs': f'IHD_train.txt line 7: composite {p[6][0]} is 320x272 but real image {p[6][2]} is '
                             '300x272',
        'duplicate line': f'{lst} line 9: ',
        'malformed line': f'{lst} line 10: ',
        'in both splits': 'IHD_train.txt (line 11) and IHD_test.txt (line 1)',
    }
    for kind, words in expected.items():
        assert any(words in m for m in report.problems[kind]), (kind, report.problems[kind])
        assert words in text
    # the truncated JPEG is found from its missing end marker, without --deep
    assert any(f'{p[4][2]}: cannot decode the image' in m for m in report.problems['unreadable image'])
    assert 'empty foreground' not in report.problems  # needs pixels
    assert report.warnings  # HCOCO_train.txt disagrees with IHD_train.txt now
    deep = check.check_dataset(root, deep=True, workers=2)
    assert any(f'line 8: mask {p[7][1]} has no foreground' in m for m in deep.problems['empty foreground'])
    assert len(deep.problems['empty foreground']) == 2  # line 8 and its duplicate, line 9


def test_check_dataset_exit_status_and_missing_lists(broken, tmp_path, tiny_dataset):
    root, _ = broken
    assert check.main(['--dataset_root', str(root)]) == 2
    (root / 'IHD_test.txt').unlink()
    report = check.check_dataset(root)
    assert any('IHD_test.txt not found' in m for m in report.problems['list file missing'])
    assert check.run_main(check.main, ['--dataset_root', str(tmp_path / 'nowhere')]) == 2
    rc = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'check_dataset.py'), '--dataset_root',
                         str(tiny_dataset)], capture_output=True, text=True, timeout=120)
    assert rc.returncode == 0, rc.stdout + rc.stderr
    assert 'OK: no problems found' in rc.stdout
    assert re.search(r'train\s+2\s+2\s+2\s+2\s+8', rc.stdout)
