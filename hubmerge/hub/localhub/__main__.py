"""``python -m hubmerge.hub.localhub`` is ``hubmerge hub serve``."""

import sys

from hubmerge.cli import main

sys.exit(main(["hub", "serve", *sys.argv[1:]]))
