"""Utilities of the entry points: metrics, image conversion, HTML pages, logging of training, processes.

One module per concern: ``metrics.py`` (the evaluation metrics), ``image.py`` (tensors to uint8 images),
``html.py`` (result pages), ``visualizer.py`` (loss log, loss curve, training page, visdom, TensorBoard),
``cli.py`` (one-line errors and exit status), ``pairs.py`` (composite + mask inputs of the command-line tools,
the usable-mask rule), ``distributed.py`` (torchrun processes and signals), ``train_state.py`` (random states
and the self-contained training state). Add a new module rather than growing an unrelated one.
"""
