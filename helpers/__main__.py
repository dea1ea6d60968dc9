"""`python -m helpers COMMAND`: the workbook's one command line (see helpers.tools.cli)."""

import sys

from helpers.tools.cli import main

sys.exit(main())
