"""The iHarmony4 dataset: path derivation, augmentation geometry, redraw rule, padding, bad input, loader workers."""
from __future__ import annotations

import argparse
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import data
from data import iharmony4_dataset as ihd
from data.iharmony4_dataset import IHarmony4Dataset, derive_paths
from util.cli import error_message, run_main


def make_opt(root: Path, **kw) -> argparse.Namespace:
    opt = dict(dataset_root=str(root), dataset_mode='iharmony4', preprocess='resize_and_crop', crop_size=256,
               load_size=256, no_flip=False, max_dataset_size=math.inf, seed=0, batch_size=1, serial_batches=True,
               num_threads=0, gpu_ids=[])
    opt.update(kw)
    return argparse.Namespace(**opt)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    assert x.dtype == torch.uint8
    return x.numpy()


def write_one(root: Path, real: np.ndarray, comp: np.ndarray, mask: np.ndarray, subset: str = 'HCOCO',
              name: str = 'c1', ext: str = '.png', phase: str = 'train') -> None:
    """A dataset of one composite with lossless files (PNG composites and reals are found by extension)."""
    for d in ('composite_images', 'masks', 'real_images'):
        (root / subset / d).mkdir(parents=True, exist_ok=True)
    Image.fromarray(real).save(root / subset / 'real_images' / f'{name}{ext}')
    Image.fromarray(comp).save(root / subset / 'composite_images' / f'{name}_1_1{ext}')
    Image.fromarray(mask).save(root / subset / 'masks' / f'{name}_1.png')
    (root / f'IHD_{phase}.txt').write_text(f'{subset}/composite_images/{name}_1_1{ext}\n')


# ----------------------------------------------------------------------------------------------- paths
@pytest.mark.parametrize('line, expected', [
    ('HCOCO/composite_images/c100300_1602094_1.jpg',
     ('HCOCO', 'HCOCO/masks/c100300_1602094.png', 'HCOCO/real_images/c100300')),
    ('HAdobe5k/composite_images/a0001_1_3.jpg',
     ('HAdobe5k', 'HAdobe5k/masks/a0001_1.png', 'HAdobe5k/real_images/a0001')),
    ('HFlickr/composite_images/f1234_2_1.jpg', ('HFlickr', 'HFlickr/masks/f1234_2.png', 'HFlickr/real_images/f1234')),
    ('Hday2night/composite_images/d18897-20120428-164138_1_2.jpg',
     ('Hday2night', 'Hday2night/masks/d18897-20120428-164138_1.png',
      'Hday2night/real_images/d18897-20120428-164138')),
    ('Mine/composite_images/my_photo_v2_7_1.png',
     ('Mine', 'Mine/masks/my_photo_v2_7.png', 'Mine/real_images/my_photo_v2')),
    ('  ./HCOCO/composite_images/c1_2_3.jpg \r', ('HCOCO', 'HCOCO/masks/c1_2.png', 'HCOCO/real_images/c1')),
])
def test_derive_paths_every_naming_style(line, expected):
    subset, comp, mask, real = derive_paths(line)
    assert (subset, mask, real) == expected
    assert comp == line.strip().removeprefix('./')


@pytest.mark.parametrize('line', ['HCOCO/c1_1_1.jpg', 'HCOCO/masks/c1_1_1.jpg', 'HCOCO/composite_images/c1_1.jpg',
                                  'HCOCO/composite_images/c1_1_1', 'HCOCO/composite_images/_1_1.jpg',
                                  'a/b/composite_images/c1_1_1.jpg'])
def test_derive_paths_rejects_malformed_lines(line):
    with pytest.raises(ValueError):
        derive_paths(line)


def test_real_image_extension_follows_jpg_then_the_composite():
    assert ihd.real_candidates('S/real_images/x', 'S/composite_images/x_1_1.jpg') == ['S/real_images/x.jpg']
    assert ihd.real_candidates('S/real_images/x', 'S/composite_images/x_1_1.png') == ['S/real_images/x.jpg',
                                                                                      'S/real_images/x.png']


# ----------------------------------------------------------------------------------------------- items
def test_train_and_test_items_follow_the_contract(tiny_dataset):
    train = data.create_dataset(make_opt(tiny_dataset), 'train')
    test = data.create_dataset(make_opt(tiny_dataset, preprocess='resize'), 'test')
    assert len(train) == len(test) == 8
    assert dict(train.subset_counts) == {'HCOCO': 2, 'HAdobe5k': 2, 'HFlickr': 2, 'Hday2night': 2}
    for ds, phase in ((train, 'train'), (test, 'test')):
        item = ds[5]
        assert item['index'] == 5
        assert item['comp'].shape == item['real'].shape == (3, 256, 256)
        assert item['mask'].shape == (1, 256, 256)
        for k in ('comp', 'real', 'mask'):
            assert item[k].dtype == torch.uint8  # a quarter of float32's bytes between processes
        assert set(item['mask'].unique().tolist()) <= {0, 1}
        assert Path(item['comp_path']).is_file()
        listed = (tiny_dataset / f'IHD_{phase}.txt').read_text().split()[5]
        assert item['comp_path'] == str(tiny_dataset / listed)
        assert item['subset'] == listed.split('/')[0]
    item = test[0]
    assert item['mask_metric'].shape == (1, 256, 256) and item['mask_metric'].dtype == torch.uint8
    assert set(item['mask_metric'].unique().tolist()) <= {0, 1}


def test_uint8_images_convert_one_way():
    from util.image import input_to_uint8, to_unit_range
    u = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).expand(1, 3, 16, 16)
    assert np.array_equal(input_to_uint8(u), input_to_uint8(to_unit_range(u)))  # the loaded pixels, either way
    assert np.array_equal(input_to_uint8(u)[0, ..., 1], u[0, 1].numpy())
    with pytest.raises(TypeError, match='uint8'):
        to_unit_range(to_unit_range(u))  # scaling twice is refused


def test_options_and_registry_build_the_dataset(tiny_dataset):
    from options.test_options import TestOptions
    from options.train_options import TrainOptions
    opt = TrainOptions().parse(['--dataset_root', str(tiny_dataset), '--gpu_ids', '-1', '--max_dataset_size', '3'])
    assert len(data.create_dataset(opt, 'train')) == 3
    opt = TestOptions().parse(['--dataset_root', str(tiny_dataset), '--gpu_ids', '-1', '--baseline', 'composite'])
    assert opt.preprocess == 'resize' and 'mask_metric' in data.create_dataset(opt, 'test')[0]


def test_loader_with_workers_is_reproducible_under_the_seed(tiny_dataset):
    def first_batch(seed):
        opt = make_opt(tiny_dataset, seed=seed, batch_size=4, num_threads=2, serial_batches=False)
        ds = data.create_dataset(opt, 'train')
        batch = next(iter(data.create_dataloader(opt, ds, shuffle=True)))
        return batch['index'], batch['comp']

    i0, c0 = first_batch(1)
    i1, c1 = first_batch(1)
    i2, c2 = first_batch(2)
    assert torch.equal(i0, i1) and torch.equal(c0, c1)
    assert not (torch.equal(i0, i2) and torch.equal(c0, c2))


# ----------------------------------------------------------------------------------------------- geometry
def _pattern(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An image of 32-pixel cells in random colours, and the mask of its cells whose red is above 127."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, size=(h // 32 + 1, w // 32 + 1, 3), dtype=np.uint8)
    img = np.repeat(np.repeat(cells, 32, axis=0), 32, axis=1)[:h, :w]
    return img, ((img[..., 0] > 127) * 255).astype(np.uint8)


def test_crop_and_flip_apply_the_same_geometry_to_composite_real_and_mask(tmp_path):
    real, mask = _pattern(272, 352)
    write_one(tmp_path, real, 255 - real, mask)  # composite = negative of real, mask = red(real) > 127
    ds = IHarmony4Dataset(make_opt(tmp_path), 'train')
    torch.manual_seed(0)
    for _ in range(12):
        item = ds[0]
        r, c, m = to_uint8(item['real']), to_uint8(item['comp']), item['mask'][0].numpy()
        # the same crop: composite + real = 255 up to rounding, pixel for pixel
        assert np.abs(r.astype(int) + c.astype(int) - 255).max() <= 1
        # the same crop for the mask (nearest) as for the images (bilinear): disagreement only at cell edges
        agree = ((r[0] > 127) == (m > 0.5)).mean()
        assert agree > 0.95


def test_jpeg_draft_decodes_large_images_reduced_and_keeps_the_mask_aligned(tmp_path):
    real, mask = _pattern(1100, 2100)  # short side 1100 >= 2 x 2 x 256: decoded at 1/2 scale
    write_one(tmp_path, real, 255 - real, mask, ext='.jpg')
    full = IHarmony4Dataset(make_opt(tmp_path), 'train')
    draft = IHarmony4Dataset(make_opt(tmp_path, jpeg_draft=True), 'train')
    c_full, r_full, m_full = full.load(0)
    c, r, m = draft.load(0)
    assert c_full.shape == (1100, 2100, 3) and c.shape == r.shape == (550, 1050, 3) and m.shape == (550, 1050)
    box = r_full.reshape(550, 2, 1050, 2, 3).mean(axis=(1, 3))  # what a 1/2-scale decode approximates
    assert np.abs(r.astype(float) - box).mean() < 4
    assert (m == m_full[::2, ::2]).mean() > 0.99 and ((r[..., 0] > 127) == m).mean() > 0.97
    agree = {}
    for name, ds in (('full', full), ('draft', draft)):
        torch.manual_seed(0)
        item = ds[0]  # the crop: the same geometry for all three, as aligned as with a full decode
        r8, c8, m8 = to_uint8(item['real']), to_uint8(item['comp']), item['mask'][0].numpy()
        assert r8.shape == (3, 256, 256) and np.abs(r8.astype(int) + c8.astype(int) - 255).mean() < 3
        agree[name] = ((r8[0] > 127) == (m8 > 0.5)).mean()  # 8-pixel cells: edges disagree
    assert agree['draft'] > 0.9 and agree['draft'] > agree['full'] - 0.01
    # small images, PNG files and the test protocol decode at full size
    assert IHarmony4Dataset(make_opt(tmp_path, jpeg_draft=True, crop_size=512), 'train').load(0)[0].shape[0] == 1100
    assert IHarmony4Dataset(make_opt(tmp_path, jpeg_draft=True, preprocess='resize'), 'train').load(0)[0].shape[0] \
        == 1100
    png = tmp_path / 'png'
    write_one(png, real, 255 - real, mask)
    assert IHarmony4Dataset(make_opt(png, jpeg_draft=True), 'train').load(0)[0].shape[0] == 1100


def test_no_flip_keeps_orientation_and_flip_mirrors_all_three_together(tmp_path):
    w = 320
    ramp = np.tile(np.linspace(0, 255, w).round().astype(np.uint8)[None, :, None], (272, 1, 3))
    mask = np.zeros((272, w), np.uint8)
    mask[:, : w // 2] = 255  # the dark half of the real image
    write_one(tmp_path, ramp, 255 - ramp, mask)

    def directions(no_flip):
        ds = IHarmony4Dataset(make_opt(tmp_path, no_flip=no_flip), 'train')
        torch.manual_seed(3)
        out = []
        for _ in range(16):
            item = ds[0]
            real, comp = to_uint8(item['real'])[0].astype(int), to_uint8(item['comp'])[0].astype(int)
            m = item['mask'][0].numpy() > 0.5
            direction = np.sign(real[128, -1] - real[128, 0])
            assert np.sign(comp[128, -1] - comp[128, 0]) == -direction  # mirrored together
            if m.any() and (~m).any():  # and the mask still covers the dark part of the real image
                assert real[m].mean() < real[~m].mean()
            out.append(direction)
        return out

    assert set(directions(True)) == {1}
    assert set(directions(False)) == {1, -1}


# ----------------------------------------------------------------------------------------------- redraws
def test_train_crops_contain_foreground_except_at_the_allowed_rate(tmp_path):
    h, w = 272, 352
    real, _ = _pattern(h, w)
    mask = np.zeros((h, w), np.uint8)
    mask[4:20, 4:20] = 255  # a small foreground in a corner: many crops miss it
    write_one(tmp_path, real, real, mask)
    ds = IHarmony4Dataset(make_opt(tmp_path), 'train')
    torch.manual_seed(0)
    n = 150
    raw = torch.tensor(mask[None] > 0, dtype=torch.uint8)
    from torchvision import tv_tensors
    miss_once = sum(int(ds.train_transform(tv_tensors.Mask(raw)).sum() <= 1) for _ in range(n)) / n
    assert miss_once > 0.3  # without the rule, a third of the crops would have no foreground
    empty = sum(int(ds[0]['mask'].sum() <= 1) for _ in range(n)) / n
    # kept empty crops: p*0.05 / (1 - p*0.95) (< 5%), so far fewer than without the rule
    p = miss_once
    expected = p * 0.05 / (1 - p * 0.95)
    assert empty <= expected + 0.05
    assert empty < miss_once / 4


def test_redraws_are_bounded_and_keep_empty_crops_with_probability_five_percent(tmp_path, monkeypatch):
    real, _ = _pattern(256, 256)
    write_one(tmp_path, real, real, np.zeros((256, 256), np.uint8))  # no foreground at all
    ds = IHarmony4Dataset(make_opt(tmp_path, preprocess='resize_and_crop'), 'train')
    calls = []
    transform = ds.train_transform

    def counting(*args):
        calls.append(1)
        return transform(*args)

    monkeypatch.setattr(ds, 'train_transform', counting)
    torch.manual_seed(0)
    draws = []
    for _ in range(60):
        calls.clear()
        assert ds[0]['mask'].sum() == 0
        draws.append(len(calls))
    assert max(draws) <= ihd.MAX_REDRAWS + 1
    # each empty crop is kept with probability 0.05: the number of draws is geometric, capped at 51
    expected = (1 - 0.95 ** (ihd.MAX_REDRAWS + 1)) / 0.05
    assert abs(np.mean(draws) - expected) < 6


# ----------------------------------------------------------------------------------------------- padding
def test_preprocess_none_pads_to_256_and_records_the_padding(tmp_path):
    real, mask = _pattern(300, 451)
    write_one(tmp_path, real, real, mask, phase='test')
    item = IHarmony4Dataset(make_opt(tmp_path, preprocess='none'), 'test')[0]
    assert item['real'].shape == (3, 512, 512) and item['mask'].shape == (1, 512, 512)
    left, top, right, bottom = item['pad'].tolist()
    assert (left + right, top + bottom) == (512 - 451, 512 - 300)
    assert item['orig_size'].tolist() == [300, 451]
    inner = to_uint8(item['real'])[:, top:512 - bottom, left:512 - right].transpose(1, 2, 0)
    assert np.array_equal(inner, real)
    assert np.array_equal(item['mask_metric'][0, top:512 - bottom, left:512 - right].numpy() > 0, mask == 255)
    # reflect padding: the column left of the image mirrors column 1
    assert np.array_equal(to_uint8(item['real'])[:, top:512 - bottom, left - 1].T, real[:, 1])
    with pytest.raises(ValueError, match='--batch_size 1'):
        IHarmony4Dataset(make_opt(tmp_path, preprocess='none', batch_size=2), 'test')


# ----------------------------------------------------------------------------------------------- conversions
def test_training_reads_grayscale_rgba_palette_and_16_bit_inputs_with_pil(tmp_path):
    real, _ = _pattern(256, 256)
    write_one(tmp_path, real, real, np.zeros((256, 256), np.uint8))
    sub = tmp_path / 'HCOCO'
    Image.fromarray(real).convert('L').save(sub / 'composite_images' / 'c1_1_1.png')
    Image.fromarray(real).convert('RGBA').save(sub / 'real_images' / 'c1.png')
    mask3 = np.zeros((256, 256, 3), np.uint8)
    mask3[50:100, 50:100, 0] = 255  # first channel (red) is the mask
    mask3[150:200, 150:200, 2] = 255  # other channels are ignored
    Image.fromarray(mask3).save(sub / 'masks' / 'c1_1.png')
    ds = IHarmony4Dataset(make_opt(tmp_path), 'train')
    comp, got_real, mask = ds.load(0)
    assert comp.shape == (256, 256, 3) and np.array_equal(comp[..., 0], comp[..., 1])
    assert np.array_equal(comp[..., 0], np.asarray(Image.fromarray(real).convert('L')))
    assert np.array_equal(got_real, real)
    assert mask.sum() == 50 * 50 and mask[50:100, 50:100].all()

    m16 = np.zeros((256, 256), np.uint16)
    m16[10:30, 10:40] = 65535
    m16[40:50, 40:50] = 65534  # not the maximum: background
    Image.fromarray(m16).save(sub / 'masks' / 'c1_1.png')
    assert ds.load(0)[2].sum() == 20 * 30
    Image.fromarray(real).convert('P').save(sub / 'composite_images' / 'c1_1_1.png')
    assert ds.load(0)[0].shape == (256, 256, 3)
    soft = np.zeros((256, 256), np.uint8)
    soft[0:10] = 254
    soft[10:20] = 255
    Image.fromarray(soft).save(sub / 'masks' / 'c1_1.png')
    assert ds.load(0)[2].sum() == 10 * 256  # only 255 is foreground
    assert ds[0]['mask'].shape == (1, 256, 256)


# ----------------------------------------------------------------------------------------------- bad input
@pytest.fixture
def ihd_copy(tiny_dataset, tmp_path):
    return Path(shutil.copytree(tiny_dataset, tmp_path / 'ihd'))


def _first(root: Path, phase: str = 'train') -> tuple[str, Path, Path, Path]:
    line = (root / f'IHD_{phase}.txt').read_text().split()[0]
    subset, comp, mask, real = derive_paths(line)
    return line, root / comp, root / mask, root / (real + '.jpg')


def test_missing_list_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'IHD_train.txt not found.*--dataset_root'):
        IHarmony4Dataset(make_opt(tmp_path), 'train')
    with pytest.raises(ValueError, match='--dataset_root is empty'):
        IHarmony4Dataset(make_opt(''), 'train')


@pytest.mark.parametrize('which, words', [(1, 'composite'), (2, 'mask'), (3, 'real image')])
def test_missing_files_name_the_line_and_the_path(ihd_copy, which, words):
    path = _first(ihd_copy)[which]
    path.unlink()
    with pytest.raises(FileNotFoundError) as err:
        IHarmony4Dataset(make_opt(ihd_copy), 'train')
    msg = str(err.value)
    assert msg.startswith(f'{ihd_copy / "IHD_train.txt"} line 1: {words} {path} ')
    assert msg.endswith('does not exist') and '\n' not in msg


def test_malformed_line_is_named(ihd_copy):
    lst = ihd_copy / 'IHD_train.txt'
    lst.write_text(lst.read_text() + '\nHCOCO/composite_images/broken.jpg\n')
    with pytest.raises(ValueError, match=r'IHD_train.txt line 10: .*broken.jpg'):
        IHarmony4Dataset(make_opt(ihd_copy), 'train')


def test_unreadable_and_truncated_images_are_named(ihd_copy):
    ds = IHarmony4Dataset(make_opt(ihd_copy), 'train')
    comp = Path(ds.samples[0].comp)
    comp.write_bytes(b'this is not an image')
    with pytest.raises(ValueError, match=f'{comp}: cannot read the image'):
        ds[0]
    real = Path(ds.samples[1].real)
    blob = real.read_bytes()
    real.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=f'{real}: cannot decode the image, it may be truncated'):
        ds[1]


@pytest.mark.parametrize('preprocess', ['resize_and_crop', 'resize', 'none'])  # PIL and OpenCV reading
def test_size_mismatches_are_named(ihd_copy, preprocess):
    ds = IHarmony4Dataset(make_opt(ihd_copy, preprocess=preprocess), 'train')
    _, comp, mask, real = _first(ihd_copy)
    Image.open(mask).resize((100, 80)).save(mask)
    with pytest.raises(ValueError, match=f'mask {mask} is 100x80 but its composite {comp} is 320x272'):
        ds[0]
    Image.open(comp).resize((100, 80)).save(comp)
    Image.open(real).resize((90, 80)).save(real)
    with pytest.raises(ValueError, match=f'composite {comp} is 100x80 but its real image {real} is 90x80'):
        ds[0]


def test_sizes_the_generator_cannot_take_are_rejected(tiny_dataset):
    with pytest.raises(ValueError, match='--crop_size 200 is not a multiple of 256'):
        IHarmony4Dataset(make_opt(tiny_dataset, crop_size=200), 'train')
    with pytest.raises(ValueError, match='--load_size 300 is not a multiple of 256'):
        IHarmony4Dataset(make_opt(tiny_dataset, preprocess='resize', load_size=300), 'test')


# ----------------------------------------------------------------------------------------------- loader workers
def test_a_worker_error_is_the_same_one_line_and_what_was_written_stays(ihd_copy, tmp_path, capfd):
    opt = make_opt(ihd_copy, preprocess='resize', num_threads=1)
    ds = data.create_dataset(opt, 'test')
    bad = Path(ds.samples[1].real)
    blob = bad.read_bytes()
    bad.write_bytes(blob[: len(blob) // 2])
    message = f'{bad}: cannot decode the image, it is truncated (the JPEG data ends before its end marker)'
    with pytest.raises(ValueError) as err:
        ds[1]
    assert str(err.value) == message  # in the main process
    out = tmp_path / 'out'
    out.mkdir()

    def main(argv):
        loader = data.create_dataloader(opt, ds, shuffle=False)
        assert loader.num_workers == 1
        for batch in loader:
            (out / f'{int(batch["index"])}.txt').write_text('harmonized')
        return 0

    with pytest.raises(ValueError, match='Caught ValueError in DataLoader worker process 0') as err:
        main([])
    assert error_message(err.value) == message
    capfd.readouterr()
    assert run_main(main, []) == 2
    assert capfd.readouterr().err == f'error: {message}\n'
    assert (out / '0.txt').read_text() == 'harmonized' and not (out / '1.txt').exists()
    bad.unlink()  # a file removed after the list was read: FileNotFoundError, recovered the same way
    with pytest.raises(FileNotFoundError) as err:
        main([])
    assert error_message(err.value) == f'{bad} does not exist'


def test_error_message_recovers_the_worker_message_only():
    wrapped = ('Caught UnidentifiedImageError in DataLoader worker process 3.\n'
               'Original Traceback (most recent call last):\n'
               '  File "x.py", line 1, in <module>\n'
               '    raise UnidentifiedImageError("not this: UnidentifiedImageError: one")\n'
               'PIL.UnidentifiedImageError: cannot identify image file a.jpg\n')
    from PIL import UnidentifiedImageError
    assert error_message(UnidentifiedImageError(wrapped)) == 'cannot identify image file a.jpg'
    assert error_message(ValueError('Caught nothing: a plain message')) == 'Caught nothing: a plain message'
    assert error_message(ValueError('a: b\nValueError: c')) == 'a: b\nValueError: c'


def test_loader_workers_never_exceed_the_cpus(tiny_dataset):
    cpus = data.usable_cpus()
    opt = make_opt(tiny_dataset, num_threads=cpus + 3)
    loader = data.create_dataloader(opt, data.create_dataset(opt, 'train'), shuffle=False)
    assert loader.num_workers == cpus
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # PyTorch's "exceeds the CPUs" warning
        loader.check_worker_number_rationality()
    opt.num_threads = 1
    assert data.create_dataloader(opt, loader.dataset, shuffle=False).num_workers == 1
