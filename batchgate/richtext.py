"""HTML for Webflow's RichText: what its API keeps.

Webflow: "The API doesn't currently support code blocks in Rich Text fields. Passing code blocks
will result in an empty string." (developers.webflow.com, field types). A `<pre><code>` block, as
a Markdown body renders one, is written the way a Notion code block is (batchgate/notion_html.py):
one paragraph, a line of inline code each, spaces kept as non-breaking ones.
"""

from __future__ import annotations

import re

_NBSP = "\u00a0"
_BLOCK = re.compile(r"<pre[^>]*>\s*<code[^>]*>(.*?)</code>\s*</pre>", re.DOTALL | re.IGNORECASE)


def keep_code_blocks(markup: str) -> str:
    """The markup with each `<pre><code>` block as a paragraph of inline code lines."""
    if "<pre" not in markup.lower():
        return markup
    return _BLOCK.sub(lambda m: _paragraph(m.group(1)), markup)


def _paragraph(code: str) -> str:
    """Escaped code text (as the renderer left it) as `<p><code>line</code><br>...</p>`."""
    lines = code.expandtabs(4).split("\n")
    if lines and not lines[-1].strip():
        lines.pop()  # the newline that ends the last line
    if not lines:
        return ""
    return "<p>" + "<br>".join(f"<code>{_spaces(line)}</code>" for line in lines) + "</p>"


def _spaces(line: str) -> str:
    indent = len(line) - len(line.lstrip(" "))
    rest = re.sub(r" {2,}", lambda m: _NBSP * len(m.group()), line[indent:])
    return _NBSP * indent + rest if line else _NBSP
