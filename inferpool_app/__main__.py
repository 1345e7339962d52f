import sys

from inferpool_app.cli import main

sys.exit(main())
