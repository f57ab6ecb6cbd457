"""test.py's results page (index.html), read with an HTML parser and, where Chromium is installed, in a browser."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import test as test_script
from models.checkpoint import atomic_save, plain_state_dict
from models.factory import Architecture, create_networks
from util import metrics
from util.html import HTML, galleries
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


class Page(HTMLParser):
    """The parts of a page the tests look at: headings and paragraphs, and every table as rows of cells.

    A cell is (tag, text, colspan, rowspan, image sources); ``table_class`` holds each table's class.
    """

    def __init__(self, text: str) -> None:
        super().__init__()
        self.headings: list[tuple[str, str]] = []
        self.paragraphs: list[str] = []
        self.tables: list[list[list[tuple]]] = []
        self.table_class: list[str] = []
        self.widths: list[list[str]] = []
        self._text: list[str] | None = None
        self._cell: dict | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag in ('h1', 'h3', 'p') and self._cell is None:
            self._text = []
        elif tag == 'table':
            self.tables.append([])
            self.table_class.append(a.get('class', ''))
            self.widths.append([])
        elif tag == 'col':
            self.widths[-1].append(a.get('style', ''))
        elif tag == 'tr':
            self.tables[-1].append([])
        elif tag in ('td', 'th'):
            self._cell = {'tag': tag, 'text': [], 'colspan': int(a.get('colspan', 1)),
                          'rowspan': int(a.get('rowspan', 1)), 'images': []}
        elif tag == 'img' and self._cell is not None:
            self._cell['images'].append(a['src'])

    def handle_endtag(self, tag: str) -> None:
        if tag in ('td', 'th') and self._cell is not None:
            c = self._cell
            self.tables[-1][-1].append((c['tag'], ''.join(c['text']).strip(), c['colspan'], c['rowspan'],
                                        c['images']))
            self._cell = None
        elif tag in ('h1', 'h3', 'p') and self._text is not None:
            text = ''.join(self._text).strip()
            (self.paragraphs if tag == 'p' else self.headings).append((tag, text) if tag != 'p' else text)
            self._text = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell['text'].append(data)
        elif self._text is not None:
            self._text.append(data)


def grid_width(rows: list[list[tuple]]) -> list[int]:
    """The number of grid columns each row covers, with cells spanning rows from above counted."""
    carried: dict[int, int] = {}  # row index → columns taken by cells spanning down from earlier rows
    widths = []
    for r, row in enumerate(rows):
        width = carried.get(r, 0) + sum(cell[2] for cell in row)
        for cell in row:
            for below in range(1, cell[3]):
                carried[r + below] = carried.get(r + below, 0) + cell[2]
        widths.append(width)
    return widths


@pytest.fixture(scope='module')
def results(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test.py run once with untrained weights and once as the composite baseline, into one results folder.

    Untrained outputs are a near-uniform grey, worse than most composites; three composites are replaced by
    black images, which the grey beats: the page has both improvements and regressions.
    """
    root = tmp_path_factory.mktemp('page')
    data = Path(shutil.copytree(tiny_dataset, root / 'ihd'))
    for line in (data / 'IHD_test.txt').read_text().split()[:3]:
        size = Image.open(data / line).size
        Image.new('RGB', size).save(data / line, quality=95)
    torch.manual_seed(0)
    netG, netE = create_networks(Architecture(ngf=8, ndf=8, use_dropout=False))
    atomic_save(plain_state_dict(netG), str(root / 'ckpt' / 'tiny' / 'latest_net_G.pth'))
    atomic_save(plain_state_dict(netE), str(root / 'ckpt' / 'tiny' / 'latest_net_E.pth'))
    common = ['--name', 'tiny', '--dataset_root', str(data), '--checkpoints_dir', str(root / 'ckpt'),
              '--results_dir', str(root / 'res'), '--gpu_ids', '-1', '--num_threads', '0', '--num_html', '2',
              '--no_dropout', '--batch_size', '4']
    assert test_script.main(common) == 0
    assert test_script.main(common + ['--baseline', 'composite']) == 0
    return root / 'res' / 'tiny'


def read_gains(folder: Path) -> dict[str, float]:
    """Image name → the composite's MSE minus the harmonized image's, from metrics.csv."""
    with open(folder / 'metrics.csv', newline='') as f:
        return {r['image']: float(r['comp_mse']) - float(r['mse']) for r in csv.DictReader(f)}


def read(folder: Path) -> tuple[Page, dict]:
    return Page((folder / 'index.html').read_text(encoding='utf-8')), json.loads((folder / 'summary.json').read_text())


def test_metrics_table_equals_summary_json(results):
    page, summary = read(results / 'latest_test')
    assert page.table_class[0] == 'metrics'
    table = page.tables[0]
    header = [[cell[1] for cell in row] for row in table[:2]]
    assert header[0] == ['images', 'n', 'MSE', 'PSNR', 'fMSE', 'fPSNR', 'SSIM']
    assert header[1] == ['harmonized', 'composite'] * 5  # the composite baseline beside the model
    body = {row[0][1]: [cell[1] for cell in row[1:]] for row in table[2:]}
    assert list(body) == list(summary['groups'])  # overall, per sub-dataset, per foreground ratio
    assert {'all', 'HCOCO', 'HAdobe5k', 'HFlickr', 'Hday2night', 'fg 0-5%', 'fg 5-15%', 'fg 15-100%'} <= set(body)
    for name, cells in body.items():
        model, composite = summary['groups'][name], summary['composite_groups'][name]
        expected = [str(model['n'])]
        for key in metrics.METRIC_KEYS:
            expected += [metrics.format_value(key, model[key]), metrics.format_value(key, composite[key])]
        assert cells == expected, name
    assert body['fg 0-5%'][1:] == ['-'] * 10  # no image there
    # the composite columns are the composite baseline's own numbers
    _, baseline = read(results / 'composite_test')
    assert summary['composite_groups'].keys() == baseline['groups'].keys()
    for name, group in baseline['groups'].items():
        for key, value in group.items():
            assert summary['composite_groups'][name][key] == (value if value is None else pytest.approx(value)), name


def test_protocol_settings_and_headings(results):
    page, summary = read(results / 'latest_test')
    assert page.headings[0] == ('h1', 'tiny, latest_test: 8 images')
    assert page.paragraphs[0] == summary['protocol']['description']
    assert page.paragraphs[1].startswith('settings: ') and 'batch_size 4' in page.paragraphs[1]
    titles = [text for tag, text in page.headings if tag == 'h3']
    assert titles[0].startswith('Means')
    gains = read_gains(results / 'latest_test').values()
    n_up, n_down = sum(g > 0 for g in gains), sum(g < 0 for g in gains)
    assert n_up == 3 and n_down == 5
    assert titles[1] == ('Largest improvements: 2 of the 3 images whose MSE is lower than their composite\'s, largest '
                         'gain first')
    assert titles[2] == ('Largest regressions: 2 of the 5 images whose MSE is higher than their composite\'s, largest '
                         'loss first')
    assert not any('smallest' in t for t in titles)
    baseline, _ = read(results / 'composite_test')
    assert [t for tag, t in baseline.headings if tag == 'h3'][1:] == [
        'Largest errors: the 2 composites with the highest MSE',
        'Smallest errors: the 2 composites with the lowest MSE']


def test_galleries_are_aligned_tables_of_what_their_heading_says(results):
    page, _ = read(results / 'latest_test')
    gains = read_gains(results / 'latest_test')
    shown = []
    for table, cls, widths in zip(page.tables, page.table_class, page.widths):
        assert len(widths) == max(grid_width(table)) and all('width' in w for w in widths)  # fixed column widths
        assert len(set(grid_width(table))) == 1, cls  # every row covers the same columns
        if cls != 'gallery':
            continue
        assert [c[1] for c in table[0]] == ['composite', 'harmonized', 'real', 'fMSE mask']
        for row in table[1:]:
            assert len(row) == 4 and all(len(cell[4]) == 1 for cell in row)
            stem = Path(row[1][4][0]).stem
            assert row[1][4][0] == f'images/{stem}.png' and row[0][4][0] == f'page/{stem}_composite.png'
            assert all((results / 'latest_test' / cell[4][0]).is_file() for cell in row)
            shown.append(stem)
    up = sorted((s for s in gains if gains[s] > 0), key=lambda s: -gains[s])[:2]
    down = sorted((s for s in gains if gains[s] < 0), key=lambda s: gains[s])[:2]
    assert shown == up + down


def test_gallery_choice_keeps_signs_apart():
    rows = [{'mse': m, 'comp_mse': c} for m, c in ((5, 10), (10, 9), (3, 30), (8, 8), (20, 1))]
    (h_up, up), (h_down, down) = galleries(rows, 5, baseline=False)
    assert up == [2, 0] and down == [4, 1]  # equal MSE (row 3) is in neither
    assert h_up.startswith('Largest improvements: 2 of the 2') and h_down.startswith('Largest regressions: 2 of the 2')
    (_, none), _ = galleries([{'mse': 9, 'comp_mse': 1}], 3, baseline=False)
    assert none == []
    (_, worst), (_, best) = galleries(rows, 2, baseline=True)
    assert worst == [4, 1] and best == [2, 0]


def test_tables_refuse_ragged_rows(tmp_path):
    page = HTML(str(tmp_path), 't')
    with pytest.raises(ValueError, match='3 cells for 2 columns'):
        page.add_table([['a', 'b']], [['1', '2', '3']], [10, 10])
    with pytest.raises(ValueError, match='1 images for 2 columns'):
        page.add_gallery(['a', 'b'], [[('x.png', 'x')]])


@pytest.mark.skipif(shutil.which('chromium') is None, reason='chromium is not installed')
def test_page_renders_in_a_headless_browser(results, tmp_path):
    shot = tmp_path / 'page.png'
    cmd = ['chromium', '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
           '--window-size=1200,1400', f'--screenshot={shot}', (results / 'latest_test' / 'index.html').as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    image = np.asarray(Image.open(shot).convert('L')).astype(np.float64)
    assert image.shape == (1400, 1200)
    assert image.std() > 10  # text, table lines and images, not a blank page
    top = image[:400]  # the title, protocol and metrics table: dark text on white
    assert (top < 100).mean() > 0.005 and (top > 240).mean() > 0.5


def test_compare_results_names_each_runs_protocol(results, tmp_path, capsys):
    compare = load_script('compare_results')
    runs = [f'composites={results / "composite_test"}', f'model={results / "latest_test"}']
    assert compare.main(runs) == 0
    out, err = capsys.readouterr()
    _, summary = read(results / 'latest_test')
    assert f'| model | released | 8 | {summary["groups"]["all"]["mse"]:.2f} |' in out and err == ''
    deploy = Path(shutil.copytree(results / 'latest_test', tmp_path / 'deploy'))
    (deploy / 'summary.json').write_text(json.dumps({**summary, 'protocol': {'name': 'deploy', 'description': ''}}))
    assert compare.main(runs + [f'deploy={deploy}']) == 0
    out, err = capsys.readouterr()
    assert '| deploy | deploy |' in out and 'different protocols (deploy, released)' in err
