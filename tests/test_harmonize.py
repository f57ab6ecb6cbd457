"""Full-resolution harmonization: the API and scripts/harmonize.py (size, untouched pixels, the change carried back)."""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from models import Architecture, BargainNetModel, Harmonizer, create_networks
from models.checkpoint import atomic_save, plain_state_dict
from models.harmonizer import fit_colour_transform
from util.cli import run_main
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
harmonize_script = load_script('harmonize')


def write_tiny_model(folder: Path, ngf: int = 8, use_dropout: bool = True, seed: int = 0) -> None:
    """``<folder>/latest_net_{G,E}.pth`` of a tiny BargainNet (ngf, ndf = ngf), E with codes that differ."""
    torch.manual_seed(seed)
    netG, _ = create_networks(Architecture(ngf=ngf, ndf=ngf, use_dropout=use_dropout))
    _, netE = create_networks(Architecture(ngf=ngf, ndf=ngf), init_gain=0.2)
    for name, net in (('G', netG), ('E', netE)):
        atomic_save(plain_state_dict(net), str(folder / f'latest_net_{name}.pth'))


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory) -> Path:
    """``<dir>/tiny/latest_net_{G,E}.pth`` of a tiny BargainNet (ngf 8, ndf 8), no train_opt.txt; returns <dir>."""
    folder = tmp_path_factory.mktemp('checkpoints')
    write_tiny_model(folder / 'tiny')
    return folder


@pytest.fixture(scope='module')
def harmonizer(ckpt) -> Harmonizer:
    return Harmonizer.from_checkpoints(str(ckpt), 'tiny')


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = rng.uniform(60, 190, 3) + 50 * np.sin(xx[..., None] / 9.0 + yy[..., None] / 17.0)
    img = img + rng.normal(0, 12, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def soft_ellipse(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((xx - 0.45 * w) / (0.3 * w), (yy - 0.55 * h) / (0.3 * h))
    return np.clip((1.05 - r) * 255 / 0.1, 0, 255).astype(np.uint8)


def load(path) -> np.ndarray:
    return np.array(Image.open(path).convert('RGB'))


@pytest.mark.parametrize('grid', [8, 1])
@pytest.mark.parametrize('mode', ['foreground', 'background'])
def test_full_size_and_every_pixel_outside_the_region_bit_identical(harmonizer, tmp_path, mode, grid):
    h, w = 300, 451
    mask = soft_ellipse(h, w)
    assert ((mask > 0) & (mask < 255)).sum() > 200  # a soft edge
    Image.fromarray(photo(h, w)).save(tmp_path / 'comp.jpg', quality=90)
    Image.fromarray(mask).save(tmp_path / 'mask.png')
    orig = load(tmp_path / 'comp.jpg')
    out = harmonizer.harmonize(str(tmp_path / 'comp.jpg'), str(tmp_path / 'mask.png'), mode, grid)
    assert out.shape == orig.shape and out.dtype == np.uint8
    keep, change = (mask == 0, mask == 255) if mode == 'foreground' else (mask == 255, mask == 0)
    assert np.array_equal(out[keep], orig[keep])
    assert np.abs(out[change].astype(int) - orig[change]).mean() > 3  # the region did change


def model_opt(ckpt: Path, eval_mode: bool) -> SimpleNamespace:
    return SimpleNamespace(
        is_train=False, gpu_ids=[], checkpoints_dir=str(ckpt), name='tiny', epoch='latest', load_iter=0, input_nc=20,
        output_nc=3, ngf=8, ndf=8, style_dim=16, netG='s2ad', norm='batch', no_dropout=False, init_type='normal',
        init_gain=0.02, channels_last=False, amp='none', compile=False, verbose=False, eval=eval_mode, seed=0,
        protocol='deploy', invert_mask=False, continue_train=False)


@pytest.mark.parametrize('eval_mode', [False, True])
def test_network_pass_is_the_models_test_path(ckpt, eval_mode):
    """The harmonizer's network pass is test.py's with --protocol deploy (the code read from the composite)."""
    model = BargainNetModel(model_opt(ckpt, eval_mode))
    model.setup()
    comp = torch.rand(1, 3, 256, 256) * 2 - 1
    mask = torch.zeros(1, 1, 256, 256)
    mask[..., 60:200, 40:150] = 1
    model.set_input({'comp': comp, 'mask': mask, 'index': torch.tensor([3])})  # dropout seed (0 << 32) + 3
    model.test()
    ours = Harmonizer.from_checkpoints(str(ckpt), 'tiny', eval_mode=eval_mode, seed=3)
    assert torch.equal(ours.run_network(comp, mask), model.harm)
    other_seed = Harmonizer(ours.netG, ours.netE, per_image=not eval_mode, seed=4).run_network(comp, mask)
    assert torch.equal(other_seed, model.harm) == eval_mode  # dropout masks follow the seed, unless --eval


@pytest.mark.parametrize('mode', ['foreground', 'background'])
def test_the_network_sees_the_resized_composite_and_the_mask_rules_region(harmonizer, mode):
    h, w = 300, 451
    img, mask = photo(h, w, 4), soft_ellipse(h, w)
    seen = {}
    spy = Harmonizer(harmonizer.netG, harmonizer.netE)

    def run_network(comp, region):
        seen['comp'], seen['region'] = comp, region
        return comp

    spy.run_network = run_network
    assert np.array_equal(spy.harmonize(img, mask, mode), img)  # no change made, none applied
    resized = np.array(Image.fromarray(mask).resize((256, 256), Image.BILINEAR))
    assert ((resized > 0) & (resized < 255)).sum() > 100
    fg = torch.from_numpy(resized >= 128).float()[None, None]
    assert torch.equal(seen['region'], fg if mode == 'foreground' else 1 - fg)
    comp = np.array(Image.fromarray(img).resize((256, 256), Image.BILINEAR))
    expected = (torch.from_numpy(comp).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    torch.testing.assert_close(seen['comp'][0], expected, atol=1e-6, rtol=0)


def with_fake_network(harmonizer: Harmonizer, change) -> Harmonizer:
    """A harmonizer whose network makes a known change ``change(comp, x)`` inside the mask (x: column in [0, 1])."""
    fake = Harmonizer(harmonizer.netG, harmonizer.netE)
    x = (torch.arange(256) + 0.5) / 256
    fake.run_network = lambda comp, mask: torch.where(mask > 0, change(comp, x), comp)
    return fake


def textured_composite(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    img = photo(h, w, 7)
    img[::3, ::2] //= 2  # fine detail, well below the 256x256 scale
    yy, xx = np.mgrid[0:h, 0:w]
    mask = np.where(np.hypot((xx - w / 2) / (0.35 * w), (yy - h / 2) / (0.35 * h)) < 1, 255, 0).astype(np.uint8)
    return img, mask


@pytest.mark.parametrize('grid', [8, 1])
def test_an_additive_change_reaches_every_region_pixel_boundary_included(harmonizer, grid):
    img, mask = textured_composite(480, 720)
    shift = torch.tensor([0.1, -0.05, 0.08]).view(1, 3, 1, 1)
    out = with_fake_network(harmonizer, lambda comp, x: comp + shift).harmonize(img, mask, grid=grid)
    expected = np.clip(img + 127.5 * shift.view(3).numpy(), 0, 255)
    inside = mask == 255
    assert np.abs(out[inside] - expected[inside]).max() <= 1.5


@pytest.mark.parametrize('grid', [8, 1])
def test_a_colour_gain_reaches_fine_detail(harmonizer, grid):
    img, mask = textured_composite(480, 720)
    gain = torch.tensor([1.2, 0.9, 0.7]).view(1, 3, 1, 1)
    out = with_fake_network(harmonizer, lambda comp, x: (comp + 1) * gain - 1).harmonize(img, mask, grid=grid)
    expected = np.clip(img * gain.view(3).numpy(), 0, 255)
    inside = mask == 255
    assert np.abs(out[inside] - expected[inside]).max() <= 1.5
    # the detail keeps its contrast: an additive change of each cell's mean would miss it by several levels
    assert np.abs(out[inside].astype(int) - img[inside]).mean() > 10


def test_the_grid_follows_a_change_that_varies_across_the_region(harmonizer):
    img, mask = textured_composite(480, 720)
    fake = with_fake_network(harmonizer, lambda comp, x: (comp + 1) * (0.7 + 0.6 * x) - 1)
    expected = np.clip(img * (0.7 + 0.6 * (np.arange(720) + 0.5) / 720)[None, :, None], 0, 255)
    inside = mask == 255
    grid8, grid1 = (np.abs(fake.harmonize(img, mask, grid=g)[inside] - expected[inside]).mean() for g in (8, 1))
    assert grid8 < 2 and grid8 < 0.2 * grid1


def test_grid_1_is_one_colour_transform_for_the_whole_region(harmonizer):
    h, w = 300, 420
    rng = np.random.default_rng(3)
    palette = rng.integers(30, 220, size=(6, 3), dtype=np.uint8)
    img = palette[rng.integers(0, 6, size=(h // 10, w // 10))].repeat(10, 0).repeat(10, 1)
    mask = np.zeros((h, w), np.uint8)
    mask[50:250, 60:350] = 255
    out = harmonizer.harmonize(img, mask, grid=1)
    inside = mask > 0
    for colour in palette:
        same = inside & np.all(img == colour, axis=-1)
        assert same.sum() > 100 and (out[same] == out[same][0]).all()  # same input colour, same output anywhere
    assert np.abs(out[inside].astype(int) - img[inside]).mean() > 3


def test_colour_transform_fit_recovers_a_known_transform():
    torch.manual_seed(0)
    src = torch.rand(5000, 3) * 2 - 1
    m = torch.tensor([[0.8, 0.1, 0.0], [0.05, 0.9, -0.1], [0.0, 0.2, 1.1], [0.1, -0.2, 0.05]])
    dst = torch.cat([src, torch.ones(5000, 1)], 1) @ m
    fitted = fit_colour_transform(src, dst, torch.ones(5000), ridge=1e-6)
    torch.testing.assert_close(fitted.float(), m, atol=1e-4, rtol=0)
    flat = fit_colour_transform(torch.full((100, 3), 0.3), torch.full((100, 3), 0.5), torch.ones(100))
    assert torch.isfinite(flat).all()
    torch.testing.assert_close((torch.tensor([[0.3, 0.3, 0.3, 1.0]]).double() @ flat).float(),
                               torch.full((1, 3), 0.5), atol=1e-2, rtol=0)


def run(argv, capsys) -> tuple[int, str, str]:
    code = run_main(harmonize_script.main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_script_folders_in_folder_out_with_scores_and_bad_inputs(ckpt, harmonizer, tmp_path, capsys):
    comp_dir, mask_dir, out_dir = tmp_path / 'composite', tmp_path / 'mask', tmp_path / 'out'
    comp_dir.mkdir()
    mask_dir.mkdir()
    sizes = {'a': (300, 451), 'b': (320, 240), 'small': (200, 300), 'empty': (200, 300)}
    for name, (h, w) in sizes.items():
        Image.fromarray(photo(h, w, len(name))).save(comp_dir / f'{name}.jpg')
        mask = soft_ellipse(h, w) if name != 'empty' else np.zeros((h, w), np.uint8)
        Image.fromarray(mask if name != 'small' else mask[:150]).save(mask_dir / f'{name}.png')
    code, out, err = run(['--image', comp_dir, '--mask', mask_dir, '--out', out_dir, '--checkpoints_dir', ckpt,
                          '--name', 'tiny', '--gpu', '-1', '--score'], capsys)
    assert code == 2  # the other composites are written, the run says that some failed
    assert sorted(os.listdir(out_dir)) == ['a.png', 'b.png']
    assert f'settings of the model in {ckpt / "tiny"}: ngf 8, ndf 8, style_dim 16 (command-line flags win)' in err
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(errors) == 2
    assert any(line.startswith(f'error: {comp_dir / "small.jpg"}: mask') and 'is 300x150' in line for line in errors)
    assert any(line.startswith(f'error: {comp_dir / "empty.jpg"}: mask') and 'has no foreground' in line
               for line in errors)
    assert 'ERROR: 2 of 4 composites could not be harmonized' in err
    lines = out.splitlines()
    assert len(lines) == 2
    for name, line in zip(('a', 'b'), lines):
        orig, mask = comp_dir / f'{name}.jpg', mask_dir / f'{name}.png'
        result = load(out_dir / f'{name}.png')
        assert result.shape == load(orig).shape
        assert np.array_equal(result, harmonizer.harmonize(str(orig), str(mask)))  # the API's result, losslessly
        before, after = harmonizer.scorer.score(orig, mask), harmonizer.scorer.score(result, mask)
        assert line == (f'The harmony score of {name}.jpg is {before.score:.3f} before and {after.score:.3f} '
                        'after harmonization')


def test_script_single_file_options_and_weights_errors(ckpt, harmonizer, tmp_path, capsys):
    h, w = 240, 400
    Image.fromarray(photo(h, w, 5)).save(tmp_path / 'c.png')
    Image.fromarray(soft_ellipse(h, w)).save(tmp_path / 'm.png')
    base = ['--image', tmp_path / 'c.png', '--mask', tmp_path / 'm.png', '--checkpoints_dir', ckpt, '--name', 'tiny',
            '--gpu', '-1']
    code, out, _ = run(base + ['--out', tmp_path / 'r.png', '--mode', 'background', '--grid', '2'], capsys)
    assert code == 0 and out == ''
    expected = harmonizer.harmonize(str(tmp_path / 'c.png'), str(tmp_path / 'm.png'), 'background', 2)
    assert np.array_equal(load(tmp_path / 'r.png'), expected)
    code, _, _ = run(base + ['--out', tmp_path / 'e.png', '--eval'], capsys)
    code2, _, _ = run(base + ['--out', tmp_path / 's.png', '--seed', '1'], capsys)
    assert code == code2 == 0
    default = harmonizer.harmonize(str(tmp_path / 'c.png'), str(tmp_path / 'm.png'))
    assert not np.array_equal(load(tmp_path / 'e.png'), default)
    assert not np.array_equal(load(tmp_path / 's.png'), default)
    code, _, err = run(base + ['--out', tmp_path / 'x.png', '--name', 'absent'], capsys)
    assert code == 2 and err.splitlines()[-1].startswith('error: weights not found: ')
    assert str(ckpt / 'absent' / 'latest_net_G.pth') in err
    assert not (tmp_path / 'x.png').exists()


def test_examples_are_the_scripts_output_and_the_readme_commands_run_on_them(ckpt, tmp_path, capsys):
    make_examples = load_script('make_examples')
    names = sorted(ex.name for ex in make_examples.EXAMPLES)
    assert sorted(os.path.splitext(f)[0] for f in os.listdir(ROOT / 'examples' / 'composite')) == names
    for ex in make_examples.EXAMPLES:
        comp, mask = make_examples.make_example(ex)
        assert comp.shape[0] != comp.shape[1] and comp.shape[:2] != (256, 256)
        assert np.array_equal(np.array(Image.open(ROOT / 'examples' / 'mask' / f'{ex.name}.png')), mask)
        stored = load(ROOT / 'examples' / 'composite' / f'{ex.name}.jpg')
        error = np.abs(stored.astype(int) - comp)
        # the same picture up to JPEG (4:2:0 chroma); the recolouring moves the foreground by 16 to 46 levels
        assert error.mean() < 4 and error[mask > 0].mean() < 8
    code, out, _ = run(['--image', ROOT / 'examples' / 'composite', '--mask', ROOT / 'examples' / 'mask', '--out',
                        tmp_path, '--checkpoints_dir', ckpt, '--name', 'tiny', '--gpu', '-1', '--score'], capsys)
    assert code == 0 and len(out.splitlines()) == len(names)
    for name in names:
        assert load(tmp_path / f'{name}.png').shape == load(ROOT / 'examples' / 'composite' / f'{name}.jpg').shape


def test_teaser_shows_the_examples_and_the_harmonizers_results(ckpt, tmp_path, monkeypatch):
    """scripts/make_teaser.py: composite, mask and harmonized result of each example, a row each, the result being
    what the harmonizer gives for that example."""
    make_teaser = load_script('make_teaser')
    shown, original = [], Harmonizer.harmonize
    monkeypatch.setattr(Harmonizer, 'harmonize',
                        lambda self, comp, mask: shown.append(comp) or original(self, comp, mask))
    out = tmp_path / 'teaser.png'
    assert make_teaser.main(['--out', str(out), '--checkpoints_dir', str(ckpt), '--name', 'tiny']) == 0
    assert [Path(p).stem for p in shown] == list(make_teaser.NAMES)
    img = load(out)
    assert img.shape[1] > 600 and img.shape[0] > 3 * 150  # three rows of three panels
    dark = img.mean(-1) < 40  # the masks' black panels lie in the middle column only
    thirds = np.array_split(dark.mean(0), 3)
    assert thirds[1].mean() > 2 * max(thirds[0].mean(), thirds[2].mean())
