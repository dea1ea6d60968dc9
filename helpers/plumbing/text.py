"""Text that is safe to print: a name that comes from a file (archive, checkpoint, photo) never reaches the terminal raw.

Printed raw, ``"\\x1b[2J"`` clears the learner's screen, ``"\\n"`` fakes another line, and a name that is not UTF-8
(Linux keeps its bytes as "surrogates") makes ``print`` fail with a codec error.
"""

from __future__ import annotations

import re
import unicodedata

ESCAPE_SEQUENCE = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]?|\][^\x07\x1b]*(\x07|\x1b\\)?|.?)", re.DOTALL)


def printable(text: object) -> str:
    """`text` safe to print in a terminal: escape sequences and control characters removed, line breaks made spaces.

    The bytes of a name that is not UTF-8 are shown as ``\\xff``, so the file is still named.
    """

    def shown(char: str) -> str:
        category = unicodedata.category(char)
        if char in "\t\n\r\v\f" or category in ("Zl", "Zp"):
            return " "
        if category == "Cs":  # a byte that is not UTF-8, kept by os.fsdecode as U+DC80..U+DCFF
            return f"\\x{ord(char) - 0xDC00:02x}" if 0xDC80 <= ord(char) <= 0xDCFF else "?"
        return "" if category.startswith("C") else char

    return "".join(map(shown, ESCAPE_SEQUENCE.sub("", str(text))))
