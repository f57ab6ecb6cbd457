"""Evaluation inputs: the dataset's ``--preprocess resize`` items are the released test code's inputs, bit for bit."""
from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

import released_protocol as rp
from data.iharmony4_dataset import IHarmony4Dataset
from models import networks
from util.image import to_unit_range


def make_opt(root: Path, **kw) -> argparse.Namespace:
    opt = dict(dataset_root=str(root), dataset_mode='iharmony4', preprocess='resize', crop_size=256, load_size=256,
               no_flip=True, max_dataset_size=math.inf, seed=0, batch_size=1, serial_batches=True, num_threads=0,
               gpu_ids=[])
    opt.update(kw)
    return argparse.Namespace(**opt)


def assert_items_are_released_inputs(root: Path, load_size: int = 256) -> int:
    """Compare every test item with the released code's inputs; returns the number of images compared."""
    ds = IHarmony4Dataset(make_opt(root, load_size=load_size), 'test')
    files = rp.listed_files(root)
    assert len(ds) == len(files)
    for i, (subset, comp, mask, real) in enumerate(files):
        item, ref = ds[i], rp.released_inputs(comp, mask, real, load_size)
        assert item['comp_path'] == comp and item['subset'] == subset
        for key in ('comp', 'real'):  # the model's scaling of the item: the released tensor
            assert item[key].dtype == torch.uint8 and torch.equal(to_unit_range(item[key]), ref[key][0]), (key, comp)
        assert torch.equal(item['mask'].float(), ref['mask'][0]), comp
        assert np.array_equal(item['mask_metric'][0].numpy(), ref['mask_metric']), comp
    return len(files)


def write_dataset(root: Path, sizes: list[tuple[int, int]], seed: int = 0) -> Path:
    """Test composites of the given (W, H): smooth JPEG photos, masks with soft (grey) edges.

    Masks hold every grey level at their edges, so that the 255-only network mask, OpenCV's resizing of the
    {0, 1} mask and PIL's dithering of the fMSE mask all matter.
    """
    rng = np.random.default_rng(seed)
    lines = []
    for d in ('composite_images', 'masks', 'real_images'):
        (root / 'HCOCO' / d).mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w]
        base = rng.uniform(30, 220, size=3) + rng.uniform(-60, 60, size=3) * (xx[..., None] / w)
        real = np.clip(base + rng.normal(0, 20, size=(h, w, 3)), 0, 255).astype(np.uint8)
        r = ((xx - rng.uniform(0.3, 0.7) * w) / (0.25 * w)) ** 2 + ((yy - rng.uniform(0.3, 0.7) * h) / (0.3 * h)) ** 2
        mask = np.clip((1.4 - r) * 255 / 0.8, 0, 255).astype(np.uint8)
        comp = np.where(mask[..., None] > 0, np.clip(real * rng.uniform(0.6, 1.4, 3), 0, 255), real).astype(np.uint8)
        Image.fromarray(real).save(root / 'HCOCO' / 'real_images' / f'c{i}.jpg', quality=90)
        Image.fromarray(comp).save(root / 'HCOCO' / 'composite_images' / f'c{i}_1_1.jpg', quality=90)
        Image.fromarray(mask).save(root / 'HCOCO' / 'masks' / f'c{i}_1.png')
        lines.append(f'HCOCO/composite_images/c{i}_1_1.jpg')
    (root / 'IHD_test.txt').write_text('\n'.join(lines) + '\n')
    return root


# ----------------------------------------------------------------------------------------------- inputs
def test_items_are_the_released_inputs_on_the_tiny_dataset(tiny_dataset):
    assert assert_items_are_released_inputs(tiny_dataset) == 8  # 320x272: non-square, resized


def test_items_are_the_released_inputs_at_256_and_pass_unchanged(tmp_path):
    root = write_dataset(tmp_path, [(256, 256)] * 3)
    assert assert_items_are_released_inputs(root) == 3
    item = IHarmony4Dataset(make_opt(root), 'test')[0]
    real = cv2.cvtColor(cv2.imread(str(root / 'HCOCO' / 'real_images' / 'c0.jpg')), cv2.COLOR_BGR2RGB)
    assert np.array_equal(item['real'].numpy().transpose(1, 2, 0), real)


def test_items_are_the_released_inputs_at_random_sizes(tmp_path):
    rng = np.random.default_rng(7)
    sizes = [(int(w), int(h)) for w, h in rng.integers(5, 640, size=(14, 2))] + [(1, 1), (700, 3), (255, 257)]
    root = write_dataset(tmp_path, sizes, seed=1)
    assert assert_items_are_released_inputs(root) == len(sizes)
    assert assert_items_are_released_inputs(root, load_size=512) == len(sizes)


def test_odd_masks_follow_opencvs_decoding(tmp_path):
    """Colour and 16-bit masks: the first channel of OpenCV's BGR decoding, 16 bits reduced to the high byte."""
    root = write_dataset(tmp_path, [(300, 200), (300, 200)])
    colour = np.zeros((200, 300, 3), np.uint8)
    colour[20:80, 20:80, 2] = 255  # blue: OpenCV's first channel
    colour[100:180, 100:180, 0] = 255  # red: ignored by the network mask
    Image.fromarray(colour).save(root / 'HCOCO' / 'masks' / 'c0_1.png')
    deep = np.zeros((200, 300), np.uint16)
    deep[0:50, 0:60], deep[60:100, 0:60], deep[110:150, 0:60] = 65535, 65280, 65279
    Image.fromarray(deep).save(root / 'HCOCO' / 'masks' / 'c1_1.png')
    assert assert_items_are_released_inputs(root) == 2
    ds = IHarmony4Dataset(make_opt(root, preprocess='none'), 'test')  # reads alike, at the original size
    for i, foreground in ((0, 60 * 60), (1, (50 + 40) * 60)):  # 65535 and 65280 are 255 in the high byte
        item = ds[i]
        left, top, right, bottom = item['pad'].tolist()
        assert item['mask'][0, top:256 - bottom, left:512 - right].sum() == foreground


def test_unit_range_is_to_tensor_and_normalize_bit_for_bit():
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    ours = to_unit_range(torch.from_numpy(levels.transpose(2, 0, 1).copy()))
    assert torch.equal(ours, rp.TO_TENSOR(levels))


def test_the_float_bilinear_would_differ(tiny_dataset):
    """OpenCV's fixed-point result is within one level of the exact bilinear value but not always rounded like
    it: a float path would fail the comparisons above."""
    item = IHarmony4Dataset(make_opt(tiny_dataset), 'test')[0]
    real = cv2.cvtColor(cv2.imread(rp.listed_files(tiny_dataset)[0][3]), cv2.COLOR_BGR2RGB)
    exact = TF.resize(torch.from_numpy(real.transpose(2, 0, 1).copy()).float(), [256, 256],
                      interpolation=InterpolationMode.BILINEAR, antialias=False).round()
    ours = item['real'].float()
    diff = (ours - exact).abs()
    assert diff.max() == 1 and (diff > 0).float().mean() > 0.01


# ----------------------------------------------------------------------------------------------- bad files
@pytest.mark.parametrize('which, cut', [('composite', 0.5), ('composite', -2), ('real', 0.7), ('mask', 0.5)])
def test_truncated_files_are_named_and_opencv_stays_quiet(tiny_dataset, tmp_path, capfd, which, cut):
    root = Path(shutil.copytree(tiny_dataset, tmp_path / 'ihd'))
    _, comp, mask, real = rp.listed_files(root)[2]
    path = Path({'composite': comp, 'mask': mask, 'real': real}[which])
    blob = path.read_bytes()
    path.write_bytes(blob[: int(len(blob) * cut) if cut > 0 else cut])
    ds = IHarmony4Dataset(make_opt(root), 'test')
    capfd.readouterr()
    with pytest.raises(ValueError, match=f'^{path}: cannot decode the image, it is truncated'):
        ds[2]
    assert capfd.readouterr().err == ''  # no libjpeg or libpng warning on the terminal
    ds[1]  # the other items still load


def test_files_opencv_cannot_decode_are_named(tiny_dataset, tmp_path):
    root = Path(shutil.copytree(tiny_dataset, tmp_path / 'ihd'))
    comp = Path(rp.listed_files(root)[0][1])
    comp.write_bytes(b'this is not an image')
    with pytest.raises(ValueError, match=f'^{comp}: cannot read the image'):
        IHarmony4Dataset(make_opt(root), 'test')[0]


# ----------------------------------------------------------------------------------------------- the reference
def test_released_metrics_by_hand():
    real = np.full((4, 4, 3), 100, np.uint8)
    out = real.copy()
    out[0, 0] = [103, 100, 96]  # squared errors 9 + 16 over 48 values
    out[3, 3] = [110, 110, 110]  # outside the foreground: 3 * 100
    fg = np.zeros((4, 4), np.uint8)
    fg[0, :2] = 1  # two foreground pixels
    got = rp.released_metrics(out, real, fg)
    assert got['mse'] == pytest.approx(325 / 48)
    assert got['fmse'] == pytest.approx(25 / 48 * 16 / 2)  # an MSE over 48 values times H*W / N_fg
    assert got['psnr'] == pytest.approx(10 * math.log10(14 ** 2 / (325 / 48)))  # data range 110 - 96


@pytest.mark.parametrize('per_image', [True, False])
def test_released_evaluate_runs_the_networks_and_leaves_them_alone(tiny_dataset, per_image):
    torch.manual_seed(0)
    netG = networks.S2ADGenerator(20, 3, ngf=8, use_dropout=False).eval()
    netE = networks.StyleEncoder(16, ndf=8).eval()
    for net in (netG, netE):
        networks.init_weights(net)
    before = {k: v.clone() for k, v in netG.state_dict().items()}
    rows = rp.released_evaluate(tiny_dataset, netG, netE, per_image=per_image, max_images=2)
    assert [r['image'] for r in rows] == [Path(f[1]).stem for f in rp.listed_files(tiny_dataset)[:2]]
    assert rows[0]['output'].shape == (256, 256, 3) and rows[0]['output'].dtype == np.uint8
    assert all(np.isfinite([r['mse'], r['psnr'], r['fmse']]).all() for r in rows)
    again = rp.released_evaluate(tiny_dataset, netG, netE, per_image=per_image, max_images=2)
    assert all(np.array_equal(a['output'], b['output']) for a, b in zip(rows, again))
    assert not netG.training and all(torch.equal(v, before[k]) for k, v in netG.state_dict().items())
    x = rp.released_inputs(*rp.listed_files(tiny_dataset)[0][1:])
    code = netE.train(per_image)(x['real'], 1 - x['mask'])
    assert np.array_equal(rows[0]['output'], rp.tensor2im(netG.train(per_image)(x['comp'], x['mask'], code)))
    baseline = rp.released_evaluate(tiny_dataset, None, None, per_image=per_image, max_images=1)[0]
    assert np.array_equal(baseline['output'], rp.tensor2im(x['comp']))
