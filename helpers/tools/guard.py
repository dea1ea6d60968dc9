"""What every command does around its work: check the settings first, and end in one line, never a traceback.

:func:`command` wraps a command's ``main(argv) -> int``: every ``WORKBOOK_*`` setting is checked
before any work (helpers.settings.validate_settings), a bad one (or one met later) is one line on
stderr with exit status 2, and Ctrl+C is one line with status 130.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence

from helpers.settings import SettingsError, validate_settings

INTERRUPTED = "interrupted (Ctrl+C): nothing half-written is left behind; run the command again to start over."

Main = Callable[[Sequence[str] | None], int]


def command(main: Main) -> Main:
    """`main` with the settings checked first, SettingsError as `error: ...` (2) and Ctrl+C as one line (130)."""

    @functools.wraps(main)
    def guarded(argv: Sequence[str] | None = None) -> int:
        try:
            validate_settings()
            return main(argv)
        except SettingsError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(INTERRUPTED, file=sys.stderr)
            return 130

    return guarded
