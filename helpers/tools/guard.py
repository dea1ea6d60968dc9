"""What every command does around its work: the settings checked first, and an end in one line, never a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence

from helpers.settings import SettingsError, validate_settings

INTERRUPTED = "interrupted (Ctrl+C): nothing half-written is left behind; run the command again to start over."


def command(main: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
    """`main` with every WORKBOOK_* setting checked first; a bad one is `error: ...` (exit 2), Ctrl+C one line (130)."""

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
