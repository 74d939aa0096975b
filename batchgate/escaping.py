"""Item text made safe for where it is shown: a terminal, Markdown (artifacts, the approval form),
and a CSV cell. Item data is untrusted: a title must not move the cursor, add a heading to the
approval form, turn into a live link or HTML, or run as a spreadsheet formula."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

# Escape sequences a terminal acts on: CSI (ESC [ or the 8-bit U+009B), OSC/DCS/SOS/PM/APC strings
# (up to BEL or ST), and two-byte ESC sequences; then any control left but tab and newline, and
# the bidirectional overrides and isolates that make text display in another order than it reads.
_SEQUENCES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile("[\t\n\r\x0b\x0c\x85\u2028\u2029]+")


def terminal(text: Any) -> str:
    """Text with every escape sequence and control character removed (tab and newline kept)."""
    return _CONTROLS.sub("", _SEQUENCES.sub("", str(text)))


def one_line(text: Any) -> str:
    """Terminal-safe text on one line: a line break inside it becomes a space, so it cannot
    start a line of its own (a fake heading or status line)."""
    return _LINE_BREAKS.sub(" ", terminal(_LINE_BREAKS.sub(" ", str(text))))


# Everything Markdown can read as markup inside a line (links, images, emphasis, code, HTML,
# entities, table cells, strikethrough); the block markers only matter at a line's start.
_MD_INLINE = re.compile(r"([\\`*_\[\]<>&|~])")
_MD_LINE_START = re.compile(r"^(\s*)([#+\-=>]|\d+[.)])")


def md_text(text: Any) -> str:
    """Item text as literal Markdown (inline, in a table cell too): one line, every markup
    character backslash-escaped, so it renders as the text it is."""
    escaped = _MD_INLINE.sub(r"\\\1", one_line(text))
    return _MD_LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), escaped)


def md_code(text: Any, in_table: bool = False) -> str:
    """Item text as a Markdown code span whose fence is longer than any backtick run inside."""
    value = one_line(text)
    if in_table:
        value = value.replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall("`+", value)), default=0) + 1)
    pad = " " if value.startswith("`") or value.endswith("`") or not value.strip() else ""
    return f"{fence}{pad}{value}{pad}{fence}"


_URL_UNSAFE = re.compile(r"[\s<>\\\"'`()\[\]|\x00-\x1f\x7f-\x9f]")


def md_link(url: Any, text: Any = None, in_table: bool = False) -> str:
    """A link only to an http(s) URL, its target percent-encoded where Markdown would read
    markup; anything else (javascript:, data:, a bare path) is shown as code, never live."""
    url = str(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return md_code(url, in_table)
    target = _URL_UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), url)
    return f"[{md_text(url if text is None else text)}](<{target}>)"


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A cell a spreadsheet shows as text: one starting with =, +, -, @, tab or CR (a formula,
    e.g. =HYPERLINK(...)) gets a leading apostrophe, as OWASP advises. Other values unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value
