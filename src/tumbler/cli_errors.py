"""Kept only for `tumbler/train/cli.py`, which imports `tumbler.cli_errors` (the trainer's folder
is its owner's to change): the names are `tumbler.cli.errors`'."""
from tumbler.cli.errors import err, fail, reports_errors  # noqa: F401
