"""Utilities of the entry points: metrics, image conversion, HTML pages, visdom, command-line handling.

One module per concern (``metrics.py``, ``html.py``, ``visualizer.py``, ``cli.py``, ``image.py``); add a
new module rather than growing an unrelated one.
"""
