"""A Markdown body's code blocks reach Webflow in a form its RichText keeps (the fake empties
`<pre>` blocks, as Webflow's docs say the API does)."""

from __future__ import annotations

from batchgate.richtext import keep_code_blocks
from batchgate.transform import to_html
from tests.fakes.webflow_server import WebflowServer
from tests.test_destinations import record, webflow

CODE = "Intro\n\n```python\ndef f(x):\n    return x < 2\n```\n\nAfter."


def test_a_code_block_becomes_a_paragraph_of_inline_code_lines() -> None:
    kept = keep_code_blocks(to_html(CODE))
    assert "<pre" not in kept
    assert "<p><code>def f(x):</code><br><code>\u00a0\u00a0\u00a0\u00a0return x &lt; 2</code></p>" in kept
    assert keep_code_blocks("<p>plain</p>") == "<p>plain</p>"


def test_a_markdown_bodys_code_survives_webflows_richtext() -> None:
    with WebflowServer() as server:
        body = to_html(CODE)
        webflow(server).upsert({**record(1), "body_html": body}, None, draft=True)
        (item,) = server.state.items.values()
    written = item["fieldData"]["post-body"]
    assert "def f(x):" in written and "return x &lt; 2" in written and "After." in written
