"""``python -m hubmerge`` is the ``hubmerge`` executable, for where pip's scripts folder is not on PATH."""

from hubmerge.cli import run

run()
