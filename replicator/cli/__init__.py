"""``replicator``: the command line, one module per group of commands (``plans``, ``runs``,
``admin``), their arguments (``parser``), what they share (``common``) and how plans are printed
(``render``). ``main`` is the console script."""

from replicator.cli.main import main

__all__ = ["main"]
