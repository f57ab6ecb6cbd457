"""Static HTML pages of images and tables (dominate), as pix2pix writes them."""
from __future__ import annotations

import os
from typing import Any, Sequence, Union

import dominate
from dominate.tags import a, br, col, colgroup, div, h1, h3, img, meta, p, style, table, tbody, td, th, thead, tr

from . import metrics
from .image import crop_padding, input_to_uint8, mask_to_uint8, save_png

# a header cell: its text, or (text, columns it spans) or (text, columns, rows it spans)
HeaderCell = Union[str, tuple[str, int], tuple[str, int, int]]

PAGE_STYLE = """
body { font-family: sans-serif; margin: 1em; }
table.metrics, table.gallery { border-collapse: collapse; table-layout: fixed; }
table.metrics th, table.metrics td { border: 1px solid #bbb; padding: 2px 6px; overflow: hidden; }
table.metrics td { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.metrics td:first-child { text-align: left; }
table.gallery th, table.gallery td { border: 1px solid #ddd; padding: 4px; vertical-align: top; text-align: center; }
table.gallery td { overflow-wrap: anywhere; font-size: 90%; }
table.gallery img { display: block; margin: 0 auto 4px auto; }
"""


class HTML:
    """An HTML page with headers, text, tables and rows of images, saved as ``<web_dir>/index.html``.

    Images are referenced relative to ``web_dir`` (usually under ``<web_dir>/images/``).
    """

    def __init__(self, web_dir: str, title: str, refresh: int = 0) -> None:
        self.web_dir = web_dir
        self.img_dir = os.path.join(web_dir, 'images')
        os.makedirs(self.img_dir, exist_ok=True)
        self.doc = dominate.document(title=title)
        with self.doc.head:
            meta(charset='utf-8')
            if refresh > 0:
                meta(http_equiv='refresh', content=str(refresh))

    def get_image_dir(self) -> str:
        return self.img_dir

    def add_style(self, css: str = PAGE_STYLE) -> None:
        """Add a style sheet to the page's head (default: the layout of tables and galleries)."""
        with self.doc.head:
            style(css)

    def add_title(self, text: str) -> None:
        with self.doc:
            h1(text)

    def add_header(self, text: str) -> None:
        with self.doc:
            h3(text)

    def add_text(self, text: str) -> None:
        with self.doc:
            p(text)

    def add_images(self, ims: Sequence[str], txts: Sequence[str], links: Sequence[str] | None = None,
                   width: int = 256) -> None:
        """Add one row: image paths relative to ``web_dir``, their captions, and optional link targets."""
        links = list(links) if links is not None else list(ims)
        t = table(border=1, style='table-layout: fixed;')
        self.doc.add(t)
        with t:
            with tr():
                for im, txt, link in zip(ims, txts, links):
                    with td(style='word-wrap: break-word;', halign='center', valign='top'):
                        with p():
                            with a(href=link):
                                img(style=f'width:{width}px', src=im)
                            br()
                            p(txt)

    def add_table(self, header: Sequence[Sequence[HeaderCell]], body: Sequence[Sequence[str]],
                  widths: Sequence[int], cls: str = 'metrics') -> None:
        """Add a table of text with fixed column widths (pixels), so that its columns line up whatever they hold.

        Args:
            header: rows of header cells; a cell is its text, (text, columns spanned) or (text, columns spanned,
                rows spanned).
            body: rows of cells, each with ``len(widths)`` cells.
            widths: the width of each column.
            cls: the table's class (the style sheet of :meth:`add_style` knows ``metrics`` and ``gallery``).
        """
        for row in body:
            if len(row) != len(widths):
                raise ValueError(f'a table row has {len(row)} cells for {len(widths)} columns: {list(row)}')
        t = table(cls=cls, style=f'width: {sum(widths)}px')
        self.doc.add(t)
        with t:
            with colgroup():
                for w in widths:
                    col(style=f'width: {w}px')
            with thead():
                for row in header:
                    with tr():
                        for cell in row:
                            text, cols, rows = (cell, 1, 1) if isinstance(cell, str) else (*cell, 1)[:3]
                            spans = {'colspan': cols} if cols > 1 else {}
                            if rows > 1:
                                spans['rowspan'] = rows
                            th(text, **spans)
            with tbody():
                for row in body:
                    with tr():
                        for cell in row:
                            td(cell)

    def add_gallery(self, columns: Sequence[str], rows: Sequence[Sequence[tuple[str, str]]],
                    width: int = 256) -> None:
        """Add a table of images: one column per entry of ``columns`` (their titles), every column ``width``
        pixels wide; each row holds one (image path relative to ``web_dir``, caption) per column, the image
        linked to itself."""
        t = table(cls='gallery', style=f'width: {len(columns) * (width + 10)}px')
        self.doc.add(t)
        with t:
            with colgroup():
                for _ in columns:
                    col(style=f'width: {width + 10}px')
            with thead():
                with tr():
                    for title in columns:
                        th(title)
            with tbody():
                for row in rows:
                    if len(row) != len(columns):
                        raise ValueError(f'a gallery row has {len(row)} images for {len(columns)} columns')
                    with tr():
                        for im, caption in row:
                            with td():
                                with a(href=im):
                                    img(src=im, width=width, alt=caption)
                                div(caption)

    def save(self) -> str:
        """Write ``index.html`` (atomically) and return its path."""
        path = os.path.join(self.web_dir, 'index.html')
        tmp = path + '.tmp'
        with open(tmp, 'w', encoding='utf-8') as f:
            f.write(self.doc.render())
        os.replace(tmp, path)
        return path


def galleries(rows: Sequence[dict[str, Any]], num: int, baseline: bool) -> list[tuple[str, list[int]]]:
    """(heading, row positions) of the galleries of an evaluation's page.

    The largest improvements over the input composite (positive gains only, gain = the composite's MSE − the
    harmonized image's MSE) and the largest regressions (negative gains only); for the composite baseline,
    the composites with the largest and the smallest MSE. Ties keep the rows' order.
    """
    if baseline:
        order = sorted(range(len(rows)), key=lambda i: (-rows[i]['mse'], i))
        worst = order[:num]
        best = [i for i in reversed(order) if i not in worst][:num]
        return [(f'Largest errors: the {len(worst)} composites with the highest MSE', worst),
                (f'Smallest errors: the {len(best)} composites with the lowest MSE', best)]
    gain = [r['comp_mse'] - r['mse'] for r in rows]
    up = sorted((i for i in range(len(rows)) if gain[i] > 0), key=lambda i: (-gain[i], i))
    down = sorted((i for i in range(len(rows)) if gain[i] < 0), key=lambda i: (gain[i], i))
    return [(f'Largest improvements: {min(num, len(up))} of the {len(up)} images whose MSE is lower than their '
             "composite's, largest gain first", up[:num]),
            (f'Largest regressions: {min(num, len(down))} of the {len(down)} images whose MSE is higher than their '
             "composite's, largest loss first", down[:num])]


def save_thumbnails(item: dict[str, Any], stem: str, web_dir: str) -> dict[str, str]:
    """The composite, real image and fMSE mask of a test item as ``page/<stem>_<kind>.png``; their links."""
    images = {'composite': input_to_uint8(item['comp'][None]), 'real': input_to_uint8(item['real'][None]),
              'mask': mask_to_uint8(item['mask_metric'][None])}
    links = {}
    for kind, image in images.items():
        links[kind] = f'page/{stem}_{kind}.png'
        save_png((crop_padding(image, item['pad']) if 'pad' in item else image)[0], os.path.join(web_dir, links[kind]))
    return links


def write_results_page(web_dir: str, title: str, lines: Sequence[str], summary: dict[str, Any],
                       rows: Sequence[dict[str, Any]], dataset: Any, num: int) -> str:
    """``<web_dir>/index.html`` of an evaluation (test.py); returns its path.

    The page holds ``title``, ``lines`` (the protocol and the settings), the table of means of ``summary``
    (the harmonized images beside the input composites when ``summary`` has ``composite_groups``, the
    composites alone otherwise) and the :func:`galleries` of ``num`` images each: composite, harmonized
    (``images/<stem>.png``), real image and fMSE mask, with their MSE.

    Args:
        rows: test.py's rows (``image``, ``subset``, ``fg_ratio``, ``mse``, ``fmse``, ``comp_mse``) in
            dataset order; ``dataset[i]`` is the item of ``rows[i]``.
    """
    baseline = 'composite_groups' not in summary
    page = HTML(web_dir, title)
    page.add_style()
    page.add_title(title)
    for line in lines:
        page.add_text(line)
    page.add_header('Means (MSE, fMSE: lower is better; PSNR, fPSNR, SSIM: higher is better)')
    header, body = metrics.table_cells(summary['groups'], summary.get('composite_groups'))
    page.add_table(header, body, [110, 50] + [100] * (len(body[0]) - 2))
    columns = ['composite', 'real', 'fMSE mask'] if baseline else ['composite', 'harmonized', 'real', 'fMSE mask']
    for heading, picks in galleries(rows, num, baseline):
        page.add_header(heading)
        cells = []
        for i in picks:
            row = rows[i]
            links = save_thumbnails(dataset[i], row['image'], web_dir)
            comp_mse = row['mse'] if baseline else row['comp_mse']
            scores = f'MSE {row["mse"]:.1f} (gain {comp_mse - row["mse"]:+.1f}), fMSE {row["fmse"]:.1f}'
            cell = [(links['composite'], f'{row["image"]} ({row["subset"]}): MSE {comp_mse:.1f}'),
                    (f'images/{row["image"]}.png', scores), (links['real'], 'real image'),
                    (links['mask'], f'foreground {100 * row["fg_ratio"]:.1f}%')]
            cells.append(cell[:1] + cell[2:] if baseline else cell)
        if cells:
            page.add_gallery(columns, cells)
        else:
            page.add_text('none')
    return page.save()
