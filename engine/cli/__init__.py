"""The headless command line, ``python -m engine``."""
