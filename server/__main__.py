"""`python -m server ...`: the same as the `chisel` command."""

import sys

from server.cli import main

sys.exit(main())
