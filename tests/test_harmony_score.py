"""predict_harmony_score.py and the scoring API: the released formula, preprocessing and output, batches, bad inputs."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

import predict_harmony_score
from models import Architecture, HarmonyScorer, create_networks, harmony_score, load_extractor
from models.checkpoint import atomic_save, plain_state_dict
from models.harmony_score import prepare_score_input
from models.networks import StyleEncoder
from util.cli import run_main
from util.pairs import find_pairs

H, W = 200, 300  # not square, not 256


@pytest.fixture(scope='module')
def weight(tmp_path_factory) -> str:
    """A tiny extractor (ndf 8) whose codes differ enough from region to region for scores well inside (0, 1)."""
    torch.manual_seed(0)
    _, net = create_networks(Architecture(ngf=8, ndf=8), init_gain=0.2)
    torch.nn.init.normal_(net.convs.bias, 0, 0.5)
    path = str(tmp_path_factory.mktemp('weights') / 'latest_net_E.pth')
    atomic_save(plain_state_dict(net), path)
    return path


def soft_mask(seed: int) -> np.ndarray:
    """An ellipse with an anti-aliased (soft) edge several pixels wide."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    cx, cy = rng.uniform(0.4, 0.6) * W, rng.uniform(0.4, 0.6) * H
    r = np.hypot((xx - cx) / (0.25 * W), (yy - cy) / (0.3 * H))
    return np.clip((1.1 - r) * 255 / 0.2, 0, 255).astype(np.uint8)


def composite(seed: int, mask: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    img = rng.uniform(40, 200, 3) + 40 * np.sin(xx[..., None] / rng.uniform(5, 30)) + rng.normal(0, 10, (H, W, 3))
    img = np.where(mask[..., None] > 0, img * rng.uniform(0.4, 1.3, 3), img)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_pair(folder, name: str, seed: int, mask: np.ndarray | None = None) -> tuple[str, str]:
    mask = soft_mask(seed) if mask is None else mask
    image = os.path.join(folder, f'{name}.png')
    mask_path = os.path.join(folder, f'{name}_mask.png')
    Image.fromarray(composite(seed, mask if mask.shape == (H, W) else soft_mask(seed))).save(image)
    Image.fromarray(mask).save(mask_path)
    return image, mask_path


def run(argv, capsys) -> tuple[int, str, str]:
    code = run_main(predict_harmony_score.main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def by_hand(weight: str, image_path: str, mask_path: str) -> float:
    """The two codes computed with the extractor directly, from the released preprocessing written out."""
    state = torch.load(weight, weights_only=True)
    net = StyleEncoder(16, ndf=8)
    net.load_state_dict(state)
    net.eval()
    img = Image.open(image_path).convert('RGB').resize((256, 256), Image.BILINEAR)
    msk = Image.open(mask_path).convert('L')
    x = (torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    fg = torch.from_numpy(np.array(msk.resize((256, 256), Image.BILINEAR))).float()[None] / 255
    bg = torch.from_numpy(np.array(Image.fromarray(255 - np.asarray(msk)).resize((256, 256), Image.BILINEAR)))
    bg = bg.float()[None] / 255
    with torch.no_grad():
        z_f = net(x[None], fg[None]).flatten()
        z_b = net(x[None], bg[None]).flatten()
    return float(torch.sqrt(((z_f - z_b) ** 2).sum()))


def test_score_is_exp_of_code_distance_printed_as_released(weight, tmp_path, capsys):
    image, mask = write_pair(tmp_path, 'comp', 1)
    d = by_hand(weight, image, mask)
    assert d > 5  # a distance that makes the check meaningful (score well below 1)
    code, out, _ = run(['--image', image, '--mask', mask, '--weight', weight, '--gpu', '-1'], capsys)
    assert code == 0
    assert out == f'The harmony score of comp.png is {math.exp(-0.04212 * d):.3f}\n'
    code, out, _ = run(['--image', image, '--mask', mask, '--weight', weight, '--gpu', '-1', '--format', 'json'],
                       capsys)
    row = json.loads(out)[0]
    assert row['distance'] == pytest.approx(d, rel=1e-5)
    assert row['score'] == pytest.approx(math.exp(-0.04212 * row['distance']), rel=1e-12)
    assert 0.01 < row['score'] < 0.99


def test_mask_is_resized_soft_and_background_is_resized_inverse(weight):
    mask = soft_mask(2)
    assert ((mask > 0) & (mask < 255)).sum() > 500  # really soft
    prepared = prepare_score_input(composite(2, mask), mask)
    m = Image.fromarray(mask)
    fg = torch.from_numpy(np.array(m.resize((256, 256), Image.BILINEAR))).float() / 255
    bg = torch.from_numpy(np.array(Image.fromarray(255 - mask).resize((256, 256), Image.BILINEAR))).float() / 255
    assert torch.equal(prepared.fg[0], fg) and torch.equal(prepared.bg[0], bg)
    assert ((prepared.fg > 0) & (prepared.fg < 1)).any()
    scorer = HarmonyScorer.from_weights(weight)
    soft = scorer.score_inputs([prepared])[0]
    hard = prepared.__class__(prepared.image, (prepared.fg > 0.5).float(), (prepared.bg >= 0.5).float())
    assert abs(scorer.score_inputs([hard])[0].distance - soft.distance) > 1e-3


def test_batches_and_one_by_one_agree(weight, tmp_path, capsys):
    for i in range(5):
        write_pair(tmp_path, f'c{i}', 10 + i)
    outputs = {}
    for bs in (1, 2, 16):
        code, out, _ = run(['--input_dir', tmp_path, '--weight', weight, '--gpu', '-1', '--batch_size', bs], capsys)
        assert code == 0 and len(out.splitlines()) == 5
        outputs[bs] = out
        _, out, _ = run(['--input_dir', tmp_path, '--weight', weight, '--gpu', '-1', '--batch_size', bs,
                         '--format', 'json'], capsys)
        outputs[bs, 'json'] = np.array([r['distance'] for r in json.loads(out)])
    assert outputs[1] == outputs[2] == outputs[16]
    np.testing.assert_allclose(outputs[2, 'json'], outputs[1, 'json'], rtol=1e-6)
    np.testing.assert_allclose(outputs[16, 'json'], outputs[1, 'json'], rtol=1e-6)
    assert len(set(np.round(outputs[1, 'json'], 3))) == 5  # the five composites score differently


def test_api_takes_arrays_pil_and_paths_alike(weight, tmp_path):
    image, mask = write_pair(tmp_path, 'a', 3)
    from_paths = harmony_score(image, mask, weight)
    arr, m = np.asarray(Image.open(image)), np.asarray(Image.open(mask))
    scorer = HarmonyScorer(load_extractor(weight, 'cpu'))
    assert scorer.score(arr, m) == from_paths
    assert scorer.score(Image.open(image), Image.open(mask)) == from_paths
    binary = (m > 127)
    assert scorer.score(arr, binary) == scorer.score(arr, binary.astype(np.uint8) * 255)
    assert scorer.score(arr, binary.astype(np.float32)) == scorer.score(arr, binary)
    assert [s.score for s in scorer.score_many([(image, mask), (arr, m)], batch_size=1)] == [from_paths.score] * 2
    with pytest.raises(ValueError, match='0/1'):
        scorer.score(arr, binary.astype(np.uint8))


def test_each_bad_input_has_its_error_and_the_others_are_scored(weight, tmp_path, capsys):
    good = write_pair(tmp_path, 'good', 4)
    write_pair(tmp_path, 'cropped', 5, soft_mask(5)[:150])
    write_pair(tmp_path, 'empty', 6, np.zeros((H, W), np.uint8))
    write_pair(tmp_path, 'full', 7, np.full((H, W), 255, np.uint8))
    Image.fromarray(composite(8, soft_mask(8))).save(tmp_path / 'lonely.png')
    (tmp_path / 'broken.png').write_bytes(b'not an image')
    Image.fromarray(soft_mask(9)).save(tmp_path / 'broken_mask.png')
    zgood = write_pair(tmp_path, 'zgood', 10)
    code, out, err = run(['--input_dir', tmp_path, '--weight', weight, '--gpu', '-1', '--batch_size', 3], capsys)
    assert code == 2  # the others are scored, the run says that some failed
    assert out.splitlines() == [f'The harmony score of {n}.png is {harmony_score(*p, weight).score:.3f}'
                                for n, p in (('good', good), ('zgood', zgood))]
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(errors) == 5
    expected = {'cropped': 'is 300x150 but image', 'empty': 'has no foreground at 256x256',
                'full': 'has no background at 256x256', 'lonely': 'lonely_mask.png not found',
                'broken': 'cannot be read as an image'}
    for name, text in expected.items():
        assert any(line.startswith(f'error: {tmp_path / name}.png: ') and text in line for line in errors), name
    _, out, _ = run(['--input_dir', tmp_path, '--weight', weight, '--gpu', '-1', '--format', 'csv'], capsys)
    lines = out.splitlines()
    assert lines[0] == 'image,mask,score,distance,error' and len(lines) == 8
    scored = [line.split(',') for line in lines[1:] if line.endswith(',')]
    assert len(scored) == 2 and all(0 < float(row[2]) < 1 and float(row[3]) > 0 for row in scored)


def test_missing_weights_is_one_line_exit_2(tmp_path, capsys):
    image, mask = write_pair(tmp_path, 'a', 1)
    missing = tmp_path / 'nowhere' / 'latest_net_E.pth'
    code, out, err = run(['--image', image, '--mask', mask, '--weight', missing], capsys)
    assert code == 2 and out == ''
    assert err.splitlines()[-1] == f'error: {missing}: weights file not found'
    assert 'WARNING' not in err and 'Traceback' not in err


def test_architecture_read_from_weights_and_said_or_checked(weight, tmp_path, capsys):
    image, mask = write_pair(tmp_path, 'a', 1)
    code, _, err = run(['--image', image, '--mask', mask, '--weight', weight, '--gpu', '-1'], capsys)
    assert code == 0 and f'INFO: loaded {weight} (ndf 8, style_dim 16, norm batch)' in err
    code, _, err = run(['--image', image, '--mask', mask, '--weight', weight, '--gpu', '-1', '--ndf', '64'], capsys)
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert code == 2 and errors == [f'error: {weight}: the file has ndf 8, but the network was built with ndf 64 '
                                    '(--ndf 8, or leave the option out to read it from the weights)']


def test_mask_conventions(tmp_path):
    (tmp_path / 'beside').mkdir()
    (tmp_path / 'folder' / 'masks').mkdir(parents=True)
    a = write_pair(tmp_path / 'beside', 'x', 1)
    Image.open(a[0]).save(tmp_path / 'folder' / 'y.jpg')
    Image.open(a[1]).save(tmp_path / 'folder' / 'masks' / 'y.png')
    Image.open(a[0]).save(tmp_path / 'folder' / 'z.jpg')
    assert find_pairs(input_dirs=[str(tmp_path / 'beside')]) == [a]
    folder = str(tmp_path / 'folder')
    assert find_pairs(input_dirs=[folder]) == [(os.path.join(folder, 'y.jpg'), os.path.join(folder, 'masks', 'y.png')),
                                               (os.path.join(folder, 'z.jpg'), os.path.join(folder, 'masks', 'z.png'))]
    paired = find_pairs([folder], [os.path.join(folder, 'masks')])
    assert [os.path.basename(m) for _, m in paired] == ['y.png', 'z.png']
    with pytest.raises(ValueError, match='in pairs'):
        find_pairs([a[0], a[0]], [a[1]])
    with pytest.raises(ValueError, match='two files or two folders'):
        find_pairs([folder], [a[1]])
