"""`python -m helpers COMMAND`: the workbook's one command line (see helpers.cli)."""

import sys

from helpers.cli import main

sys.exit(main())
