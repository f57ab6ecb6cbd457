"""Static HTML pages of images (dominate), as pix2pix writes them."""
from __future__ import annotations

import os
from typing import Sequence

import dominate
from dominate.tags import a, br, h3, img, meta, p, table, td, tr


class HTML:
    """An HTML page with headers and rows of images, saved as ``<web_dir>/index.html``.

    Images are referenced relative to ``web_dir`` (usually under ``<web_dir>/images/``).
    """

    def __init__(self, web_dir: str, title: str, refresh: int = 0) -> None:
        self.web_dir = web_dir
        self.img_dir = os.path.join(web_dir, 'images')
        os.makedirs(self.img_dir, exist_ok=True)
        self.doc = dominate.document(title=title)
        if refresh > 0:
            with self.doc.head:
                meta(http_equiv='refresh', content=str(refresh))

    def get_image_dir(self) -> str:
        return self.img_dir

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

    def save(self) -> str:
        """Write ``index.html`` (atomically) and return its path."""
        path = os.path.join(self.web_dir, 'index.html')
        tmp = path + '.tmp'
        with open(tmp, 'w') as f:
            f.write(self.doc.render())
        os.replace(tmp, path)
        return path
