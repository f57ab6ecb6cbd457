"""Command-line options: the one source of configuration.

``BaseOptions`` holds what training and testing share, ``TrainOptions`` and ``TestOptions`` add their
phase's options. A model or dataset adds its own options through its ``modify_commandline_options``; to
add an option for everyone, add it to the relevant ``initialize``.
"""
