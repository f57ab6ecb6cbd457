"""scripts/make_outside_composites.py: a test set of other photos and other composite recipes."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import load_script
from data.lists import read_list

outside = load_script('make_outside_composites')


def textured_photo(seed: int, h: int = 300, w: int = 400) -> np.ndarray:
    """Smooth colour gradients, a few flat shapes and grain: SLIC finds regions, every recipe has colours to move."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = 60 + 120 * np.stack([xx, yy, 1 - xx * yy], -1) + rng.normal(0, 6, (h, w, 3))
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(20, 70)
        img[(np.mgrid[0:h, 0:w][0] - cy) ** 2 + (np.mgrid[0:h, 0:w][1] - cx) ** 2 < r * r] = rng.uniform(20, 235, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize('recipe', outside.RECIPES)
def test_each_recipe_changes_the_foreground_only_by_the_asked_amount(recipe):
    rng = np.random.default_rng(1)
    real = textured_photo(0)
    mask = outside.region_mask(real, rng)
    assert 0.04 <= mask.mean() <= 0.45  # 5-40% of the view, in whole superpixels
    ref = textured_photo(1).reshape(-1, 3).astype(np.float64) / 255
    comp, change = outside.composite(real, mask, recipe, rng, ref, min_change=8, max_change=40)
    assert np.array_equal(comp[~mask], real[~mask])
    assert change == pytest.approx(np.abs(comp[mask].astype(int) - real[mask]).mean())
    assert 8 <= change <= 40, (recipe, change)


def test_mkl_transfer_gives_the_reference_mean_and_covariance():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (5000, 3)) @ np.array([[0.6, 0.2, 0.1], [0.1, 0.5, 0.1], [0.0, 0.2, 0.3]])
    ref = rng.normal([0.6, 0.4, 0.2], 0.1, (7000, 3)) @ np.array([[1.0, 0.3, 0.0], [0.0, 0.8, 0.2], [0.1, 0.0, 0.6]])
    moved = outside.mkl_transfer(x, ref)
    np.testing.assert_allclose(moved.mean(0), ref.mean(0), atol=1e-12)
    np.testing.assert_allclose(np.cov(moved.T), np.cov(ref.T), atol=1e-9)
    # the map is symmetric positive definite (no rotation of the colours): the least displacement
    t = np.linalg.lstsq(x - x.mean(0), moved - moved.mean(0), rcond=None)[0]
    assert np.allclose(t, t.T, atol=1e-9) and np.linalg.eigvalsh(t).min() > 0


def test_curves_are_monotone_per_channel_and_fix_black_and_white():
    x = np.repeat(np.linspace(0, 1, 101)[:, None], 3, axis=1)
    for seed in range(5):
        y = outside.curves(x, np.random.default_rng(seed), x)
        assert (np.diff(y, axis=0) >= -1e-12).all() and np.allclose(y[[0, -1]], [[0] * 3, [1] * 3])


def test_the_set_is_an_iharmony4_test_split_written_once(tmp_path):
    photos = {'a': textured_photo(2), 'b': textured_photo(3, 360, 240)}
    records = outside.make_outside(tmp_path / 'out', photos, per_recipe=1, seed=4)
    assert len(records) == len(outside.RECIPES) * 2
    samples, problems = read_list(str(tmp_path / 'out'), 'test')
    assert not problems and [s.subset for s in samples] == [r['recipe'] for r in records]
    for s, r in zip(samples, records):
        with Image.open(s.comp) as comp, Image.open(s.real) as real, Image.open(s.mask) as mask:
            assert comp.size == real.size == mask.size and max(comp.size) == outside.VIEW_SIDE
            fg = np.asarray(mask) == 255
            assert abs(fg.mean() - r['fg_ratio']) < 1e-4 and set(np.unique(mask)) <= {0, 255}
            diff = np.abs(np.asarray(comp, dtype=int) - np.asarray(real, dtype=int)).mean(-1)
            assert diff[fg].mean() > 4 * diff[~fg].mean()  # the edit is in the foreground (JPEG noise elsewhere)
    assert len({s.comp.rsplit('/', 1)[1] for s in samples}) == len(samples)  # test.py names outputs by stem
    again = outside.make_outside(tmp_path / 'again', photos, per_recipe=1, seed=4)
    assert again == records  # the seed decides everything
    with pytest.raises(FileExistsError, match='not empty'):
        outside.make_outside(tmp_path / 'out', photos, per_recipe=1)


def test_the_bundled_photos_are_colour_photographs_the_builder_does_not_use():
    photos = outside.bundled_photos()
    assert sorted(photos) == ['china', 'flower', 'grace_hopper']
    synthetic = load_script('synthetic_photos')
    used = set(synthetic.SKIMAGE_PHOTOS) | set(synthetic.SKIMAGE_GRAY_PHOTOS)
    assert not used & set(photos)
    for img in photos.values():
        assert img.dtype == np.uint8 and img.ndim == 3 and min(img.shape[:2]) >= 400
        assert np.abs(img.astype(int) - img.mean(-1, keepdims=True)).mean() > 5  # colour, not grey


def test_command_line_writes_the_set_and_names_the_next_step(tmp_path, capsys):
    photos = tmp_path / 'photos'
    photos.mkdir()
    Image.fromarray(textured_photo(5)).save(photos / 'p.png')
    assert outside.main(['--out', str(tmp_path / 'o'), '--photos', str(photos), '--per_recipe', '1']) == 0
    assert 'wrote 5 composites' in capsys.readouterr().out
    assert len((tmp_path / 'o' / 'IHD_test.txt').read_text().split()) == 5
    with pytest.raises(FileNotFoundError, match='no .jpg'):
        outside.folder_photos(tmp_path / 'o')  # list files and folders, no photo
