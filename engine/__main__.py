"""``python -m engine``: the headless command line (see ``engine.cli``)."""

import sys

from engine.cli import main

sys.exit(main())
