"""``python -m inferpool``: the console command, which lives in the application layer.

The one import from the foundation upward, allowed by name in the layering contract
(pyproject.toml): this module is an entry point, not part of the foundation's API."""

import sys

from inferpool_app.cli import main

sys.exit(main())
