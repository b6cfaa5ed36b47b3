"""``python -m engine``: the headless command line (see ``engine.cli.main``)."""

import sys

from engine.cli.main import main

sys.exit(main())
