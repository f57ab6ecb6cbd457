"""What the two tools for your own composites promise a user: no input overwritten, one-line errors naming the
file, one mask rule, the model folder's settings, PNG/JPEG outputs, readable scores and quiet defaults."""
from __future__ import annotations

import io
import logging
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import predict_harmony_score
from models import Architecture, Harmonizer, HarmonyScorer, create_networks
from models.checkpoint import atomic_save, plain_state_dict
from util.cli import run_main
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
harmonize_script = load_script('harmonize')

H, W = 200, 300


def write_model(folder: Path, use_dropout: bool = True, train_opt: dict[str, str] | None = None) -> Path:
    """A tiny BargainNet (ngf 8, ndf 8) in ``folder``, with a ``train_opt.txt`` as train.py writes it if given."""
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    netG, _ = create_networks(Architecture(ngf=8, ndf=8, use_dropout=use_dropout))
    _, netE = create_networks(Architecture(ngf=8, ndf=8), init_gain=0.2)
    torch.nn.init.normal_(netE.convs.bias, 0, 0.5)
    for name, net in (('G', netG), ('E', netE)):
        atomic_save(plain_state_dict(net), str(folder / f'latest_net_{name}.pth'))
    if train_opt is not None:
        lines = [f'{key:>25}: {value:<30}\t[default: x]' for key, value in train_opt.items()]
        (folder / 'train_opt.txt').write_text('\n'.join(['----------------- Options ---------------', *lines,
                                                         '----------------- End -------------------']) + '\n')
    return folder


@pytest.fixture(autouse=True)
def _no_stale_log_handler() -> None:
    """Drop the handler an earlier entry point set up on an earlier test's captured stderr."""
    logging.root.handlers.clear()


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory) -> Path:
    """``<dir>/tiny``: a tiny model without train_opt.txt; ``<dir>/trained``: one trained at batch 4 without
    dropout, as its train_opt.txt says. Returns <dir>."""
    root = tmp_path_factory.mktemp('checkpoints')
    write_model(root / 'tiny')
    write_model(root / 'trained', use_dropout=False,
                train_opt={'batch_size': '4', 'ngf': '8', 'ndf': '8', 'no_dropout': 'True', 'norm': 'batch'})
    return root


def photo(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = rng.uniform(50, 200, 3) + 40 * np.sin(xx[..., None] / 7.0 + yy[..., None] / 13.0)
    return np.clip(img + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)


def ellipse(h: int = H, w: int = W) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.where(np.hypot((xx - w / 2) / (0.3 * w), (yy - h / 2) / (0.3 * h)) < 1, 255, 0).astype(np.uint8)


def write_pair(folder: Path, name: str, mask: np.ndarray | None = None, seed: int = 0) -> tuple[Path, Path]:
    mask = ellipse() if mask is None else mask
    image, mask_path = folder / f'{name}.png', folder / f'{name}_mask.png'
    Image.fromarray(photo(*mask.shape, seed)).save(image)
    Image.fromarray(mask).save(mask_path)
    return image, mask_path


def harmonize(argv, capsys) -> tuple[int, str, str]:
    code = run_main(harmonize_script.main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def score(argv, capsys) -> tuple[int, str, str]:
    code = run_main(predict_harmony_score.main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def model_args(ckpt: Path, name: str = 'tiny') -> list:
    return ['--checkpoints_dir', ckpt, '--name', name, '--gpu', '-1']


def error_lines(err: str) -> list[str]:
    assert 'Traceback' not in err
    return [line for line in err.splitlines() if line.startswith('error:')]


# ----------------------------------------------------------------------------------------------- never overwrite
def test_an_output_that_is_an_input_file_is_refused_unless_overwrite(ckpt, tmp_path, capsys):
    image, mask = write_pair(tmp_path, 'c')
    before = {p: p.read_bytes() for p in (image, mask)}
    for out in (image, mask, tmp_path / '.' / 'c.png'):
        code, _, err = harmonize(['--image', image, '--mask', mask, '--out', out, *model_args(ckpt)], capsys)
        assert code == 2 and error_lines(err) == [
            f'error: --out {out} is one of the inputs and would be overwritten: give another --out, or --overwrite']
    assert {p: p.read_bytes() for p in before} == before
    code, _, _ = harmonize(['--image', image, '--mask', mask, '--out', image, '--overwrite', *model_args(ckpt)], capsys)
    assert code == 0
    result = np.array(Image.open(image))
    assert result.shape == (H, W, 3) and not np.array_equal(result, np.array(Image.open(io.BytesIO(before[image]))))


def test_results_into_a_folder_of_inputs_are_refused_unless_overwrite(ckpt, tmp_path, capsys):
    folder = tmp_path / 'in'
    folder.mkdir()
    write_pair(folder, 'a')
    write_pair(folder, 'b', seed=1)
    listing = sorted(os.listdir(folder))
    for out in (folder, f'{folder}/', tmp_path / 'in' / '..' / 'in'):
        code, _, err = harmonize(['--input_dir', folder, '--out', out, *model_args(ckpt)], capsys)
        assert code == 2 and error_lines(err) == [
            f'error: --out {out} is a folder of the inputs: the results would replace or mix with them; give '
            'another folder, or --overwrite']
    assert sorted(os.listdir(folder)) == listing
    comp_dir, mask_dir = tmp_path / 'comp', tmp_path / 'mask'
    comp_dir.mkdir()
    mask_dir.mkdir()
    for name in ('a', 'b'):
        os.replace(folder / f'{name}.png', comp_dir / f'{name}.png')
        os.replace(folder / f'{name}_mask.png', mask_dir / f'{name}.png')
    masks = {p: p.read_bytes() for p in mask_dir.iterdir()}
    code, _, err = harmonize(['--image', comp_dir, '--mask', mask_dir, '--out', mask_dir, *model_args(ckpt)], capsys)
    assert code == 2 and error_lines(err) == [
        f'error: --out {mask_dir} is a folder of the inputs: the results would replace or mix with them; give '
        'another folder, or --overwrite']
    assert {p: p.read_bytes() for p in mask_dir.iterdir()} == masks
    code, _, _ = harmonize(['--image', comp_dir, '--mask', mask_dir, '--out', comp_dir, '--overwrite',
                            *model_args(ckpt)], capsys)
    assert code == 0 and sorted(os.listdir(comp_dir)) == ['a.png', 'b.png']
    assert not np.array_equal(np.array(Image.open(comp_dir / 'a.png')), photo())


# ----------------------------------------------------------------------------------------------- weight errors
def test_each_weight_error_is_one_line_naming_the_file(ckpt, tmp_path, capsys):
    image, mask = write_pair(tmp_path, 'c')
    pair = ['--image', image, '--mask', mask, '--gpu', '-1']
    text = tmp_path / 'notes.pth'
    text.write_text('not weights\n')
    g_file, e_file = ckpt / 'tiny' / 'latest_net_G.pth', ckpt / 'tiny' / 'latest_net_E.pth'
    cases = {
        text: f'error: {text}: not a PyTorch weights file that loads safely with weights_only=True (',
        g_file: f'error: {g_file}: holds a generator (G, *_net_G.pth), but a domain code extractor (E, *_net_E.pth) '
                'is expected here',
        ckpt / 'tiny': f'error: {ckpt / "tiny"}: is a folder, not a weights file (give the file, e.g. '
                       f'{ckpt / "tiny" / "latest_net_E.pth"})',
    }
    for weight, expected in cases.items():
        code, out, err = score([*pair, '--weight', weight], capsys)
        lines = error_lines(err)
        assert code == 2 and out == '' and len(lines) == 1 and lines[0].startswith(expected), lines
        assert 'weights_only=False' not in err
    swapped = tmp_path / 'swapped'
    swapped.mkdir()
    for name in ('G', 'E'):
        (swapped / f'latest_net_{name}.pth').write_bytes(e_file.read_bytes())
    code, _, err = harmonize([*pair, '--out', tmp_path / 'r.png', *model_args(tmp_path, 'swapped')], capsys)
    assert code == 2 and error_lines(err) == [
        f'error: {swapped / "latest_net_G.pth"}: holds a domain code extractor (E, *_net_E.pth), but a generator '
        '(G, *_net_G.pth) is expected here']
    code, _, err = harmonize([*pair, '--out', tmp_path / 'r.png', *model_args(ckpt), '--ngf', '16'], capsys)
    assert code == 2 and error_lines(err) == [
        f'error: {g_file}: the file has ngf 8, but the network was built with ngf 16 (--ngf 8, or leave the option '
        'out to read it from the weights)']
    code, _, err = score([*pair, '--weight', e_file, '--ndf', '64'], capsys)
    assert code == 2 and error_lines(err)[0].startswith(f'error: {e_file}: the file has ndf 8, but the network was '
                                                        'built with ndf 64')
    assert not (tmp_path / 'r.png').exists()


# ----------------------------------------------------------------------------------------------- one mask rule
def grey(value: int) -> np.ndarray:
    return np.full((H, W), value, np.uint8)


def dot(size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[size // 2:size // 2 + 2, size // 2:size // 2 + 2] = 255
    return mask


MASKS = {  # name: (mask, None when usable or the message's end)
    'normal': (ellipse(), None),
    'grey128': (grey(128), 'has no background'),  # every pixel is foreground (>= 128) at 256x256
    'grey127': (grey(127), 'has no foreground'),
    'white': (grey(255), 'has no background'),
    'black': (grey(0), 'has no foreground'),
    'dot_in_300': (dot(300), None),  # 2x2 pixels: 226 of 255 at 256x256
    'dot_in_600': (dot(600), 'has no foreground'),  # 2x2 pixels: 119 of 255 at 256x256, too small
}


def test_every_tool_and_the_api_agree_on_which_masks_are_usable(ckpt, tmp_path, capsys):
    weight = ckpt / 'tiny' / 'latest_net_E.pth'
    harmonizer = Harmonizer.from_checkpoints(str(ckpt), 'tiny')
    scorer = HarmonyScorer.from_weights(str(weight))
    for name, (mask, problem) in MASKS.items():
        image, mask_path = write_pair(tmp_path, name, mask)
        decisions = {}
        code, out, err = score(['--image', image, '--mask', mask_path, '--weight', weight, '--gpu', '-1'], capsys)
        decisions['score'] = (code, error_lines(err))
        assert (out != '') == (problem is None)
        code, _, err = harmonize(['--image', image, '--mask', mask_path, '--out', tmp_path / f'{name}_out.png',
                                  *model_args(ckpt)], capsys)
        decisions['harmonize'] = (code, error_lines(err))
        for tool, call in (('api score', scorer.score), ('api harmonize', harmonizer.harmonize)):
            try:
                call(str(image), str(mask_path))
                decisions[tool] = (0, [])
            except ValueError as exc:
                decisions[tool] = (2, [f'error: {image}: {exc}'])
        assert len({repr(d) for d in decisions.values()}) == 1, (name, decisions)
        code, lines = decisions['score']
        if problem is None:
            assert code == 0 and lines == []
        else:
            assert code == 2 and len(lines) == 1
            assert lines[0].startswith(f'error: {image}: mask {mask_path} {problem} at 256x256: '), lines


# ----------------------------------------------------------------------------------------------- model settings
def test_settings_come_from_the_model_folder_and_flags_win(ckpt, tmp_path, capsys):
    image, mask = write_pair(tmp_path, 'c')
    pair = ['--image', image, '--mask', mask]
    code, _, err = harmonize([*pair, '--out', tmp_path / 'default.png', *model_args(ckpt, 'trained')], capsys)
    assert code == 0
    assert (f'INFO: settings of the model in {ckpt / "trained"}: ngf 8, ndf 8, style_dim 16, norm batch, '
            'no_dropout True, eval True (command-line flags win)') in err.splitlines()
    code, _, err = harmonize([*pair, '--out', tmp_path / 'flags.png', *model_args(ckpt, 'trained'), '--ngf', '8',
                              '--ndf', '8', '--style_dim', '16', '--no_dropout', '--eval'], capsys)
    assert code == 0 and f'settings of the model in {ckpt / "trained"}: norm batch (command-line' in err
    code, _, _ = harmonize([*pair, '--out', tmp_path / 'no_eval.png', *model_args(ckpt, 'trained'), '--no_eval'],
                           capsys)
    assert code == 0
    default, flags, no_eval = (np.array(Image.open(tmp_path / f'{n}.png')) for n in ('default', 'flags', 'no_eval'))
    assert np.array_equal(default, flags)
    assert not np.array_equal(default, no_eval)  # per-image statistics give another result
    api = Harmonizer.from_checkpoints(str(ckpt), 'trained')
    assert not api.per_image and np.array_equal(api.harmonize(str(image), str(mask)), default)
    assert Harmonizer.from_checkpoints(str(ckpt), 'tiny').per_image  # no train_opt.txt: the released test


# ----------------------------------------------------------------------------------------------- outputs
def test_png_by_default_and_jpeg_at_quality_95(ckpt, tmp_path, capsys):
    image, mask = write_pair(tmp_path, 'c')
    pair = ['--image', image, '--mask', mask, *model_args(ckpt)]
    code, _, err = harmonize([*pair, '--out', tmp_path / 'result'], capsys)
    assert code == 0 and f'INFO: --out {tmp_path / "result"} has no image extension: writing ' \
                          f'{tmp_path / "result"}.png' in err
    assert not (tmp_path / 'result').exists()
    with Image.open(tmp_path / 'result.png') as png:
        assert png.format == 'PNG'
        lossless = np.array(png)
    code, _, _ = harmonize([*pair, '--out', f'{tmp_path / "folder"}/'], capsys)
    assert code == 0 and os.listdir(tmp_path / 'folder') == ['c.png']
    assert np.array_equal(np.array(Image.open(tmp_path / 'folder' / 'c.png')), lossless)
    reference, low = io.BytesIO(), io.BytesIO()
    Image.fromarray(lossless).save(reference, format='JPEG', quality=95, subsampling=0)
    Image.fromarray(lossless).save(low, format='JPEG')  # Pillow's default: quality 75
    low_error = np.abs(np.array(Image.open(low)).astype(int) - lossless).mean()
    for name in ('result.jpg', 'result.JPEG'):
        code, _, _ = harmonize([*pair, '--out', tmp_path / name], capsys)
        assert code == 0
        assert (tmp_path / name).read_bytes() == reference.getvalue()  # quality 95, 4:4:4, the same bytes
        with Image.open(tmp_path / name) as jpeg:
            assert jpeg.format == 'JPEG'
            assert jpeg.quantization == Image.open(reference).quantization != Image.open(low).quantization
            assert np.abs(np.array(jpeg).astype(int) - lossless).mean() < 0.6 * low_error
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]  # no temporary file left


def test_scores_have_3_decimals(ckpt, tmp_path, capsys):
    image, mask = write_pair(tmp_path, 'c')
    weight = ckpt / 'tiny' / 'latest_net_E.pth'
    code, out, _ = score(['--image', image, '--mask', mask, '--weight', weight, '--gpu', '-1'], capsys)
    assert code == 0 and re.fullmatch(r'The harmony score of c\.png is 0\.\d{3}\n', out)
    code, out, _ = harmonize(['--image', image, '--mask', mask, '--out', tmp_path / 'r.png', '--score',
                              *model_args(ckpt)], capsys)
    assert code == 0
    assert re.fullmatch(r'The harmony score of c\.png is 0\.\d{3} before and 0\.\d{3} after harmonization\n', out)


# ----------------------------------------------------------------------------------------------- defaults
def test_default_weight_falls_back_to_the_demo_extractor_with_a_notice(ckpt, tmp_path, capsys, monkeypatch):
    image, mask = write_pair(tmp_path, 'c')
    pair = ['--image', image, '--mask', mask, '--gpu', '-1']
    demo = ROOT / 'checkpoints' / 'demo' / 'latest_net_E.pth'
    work = tmp_path / 'work'
    work.mkdir()
    monkeypatch.chdir(work)
    code, out, err = score(pair, capsys)
    assert code == 0
    notices = [line for line in err.splitlines() if 'demo extractor' in line]
    assert len(notices) == 1 and notices[0].startswith(
        'WARNING: checkpoints/latest_net_E.pth not found: using the shipped demo extractor ')
    assert 'not the released one' in notices[0]
    _, expected, _ = score([*pair, '--weight', demo], capsys)
    assert out == expected
    (work / 'checkpoints').mkdir()
    (work / 'checkpoints' / 'latest_net_E.pth').write_bytes((ckpt / 'tiny' / 'latest_net_E.pth').read_bytes())
    code, out, err = score(pair, capsys)
    assert code == 0 and 'demo extractor' not in err
    assert out == score([*pair, '--weight', ckpt / 'tiny' / 'latest_net_E.pth'], capsys)[1] != expected
    os.remove(work / 'checkpoints' / 'latest_net_E.pth')
    monkeypatch.setattr(sys.modules['models.harmony_score'], 'DEMO_E_WEIGHT', str(tmp_path / 'absent.pth'))
    code, _, err = score(pair, capsys)
    assert code == 2 and error_lines(err) == [
        'error: checkpoints/latest_net_E.pth not found: put the released latest_net_E.pth there or pass --weight']


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the quiet CPU fallback of a machine without CUDA')
def test_no_cuda_warning_with_the_default_gpu(ckpt, tmp_path, capsys, recwarn):
    image, mask = write_pair(tmp_path, 'c')
    pair = ['--image', image, '--mask', mask]
    for err in (score([*pair, '--weight', ckpt / 'tiny' / 'latest_net_E.pth'], capsys)[2],
                harmonize([*pair, '--out', tmp_path / 'r.png', '--checkpoints_dir', ckpt, '--name', 'tiny'],
                          capsys)[2]):
        assert 'INFO: no GPU found: running on the CPU' in err.splitlines()
        assert 'WARNING' not in err and 'CUDA' not in err
    assert not [w for w in recwarn if 'CUDA' in str(w.message) or 'cuda' in str(w.message)]
    err = score([*pair, '--weight', ckpt / 'tiny' / 'latest_net_E.pth', '--gpu', '0'], capsys)[2]
    assert 'WARNING: CUDA is not available: running on the CPU' in err  # asked for explicitly: said louder


def test_interrupted_is_130_and_help_has_one_default_per_option(ckpt, tmp_path, capsys, monkeypatch):
    image, mask = write_pair(tmp_path, 'c')

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Harmonizer, 'harmonize', interrupt)
    code, _, err = harmonize(['--image', image, '--mask', mask, '--out', tmp_path / 'r.png', *model_args(ckpt)],
                             capsys)
    assert code == 130 and err.splitlines()[-1] == 'interrupted'
    for parser in (harmonize_script.build_parser(), predict_harmony_score.build_parser()):
        text = ' '.join(parser.format_help().split())
        options = re.split(r' (?=--\w+ )', text)
        assert all(option.count('(default:') <= 1 for option in options), text
        assert '(default: )' not in text and ' 1 problems' not in text
