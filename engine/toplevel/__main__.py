"""`python -m camfx`: the same as the `camfx` command."""

import sys

from camfx.engine.cli import main

sys.exit(main())
