"""The local Hub's one web page: a repo at a revision, its card and its files.

The URLs ``push`` and the demo print, and the links in a card, open a repo's page on huggingface.co;
here they open this page, so they lead somewhere on the local Hub too. The card is rendered from
Markdown with raw HTML escaped: a pushed README is untrusted text.
"""

from __future__ import annotations

import html
import re
from urllib.parse import quote

from ...plan_summary import human_bytes
from .storage import Commit

__all__ = ["repo_page"]

_FRONT_MATTER = re.compile(r"\A---\r?\n.*?\r?\n---[ \t]*(\r?\n|\Z)", re.DOTALL)
_STYLE = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#111}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:left}
pre{background:#f6f6f6;padding:.6rem;overflow:auto}code{background:#f6f6f6}.muted{color:#666}"""


def _card_html(readme: str) -> str:
    from markdown_it import MarkdownIt

    body = _FRONT_MATTER.sub("", readme, count=1)
    return str(MarkdownIt("commonmark", {"html": False}).enable("table").render(body))


def repo_page(kind_prefix: str, repo_id: str, revision: str, commit: Commit, branches: list[str],
              readme: str | None) -> str:
    """The HTML page of ``repo_id`` at ``revision`` (``commit``): its card, then every file with a link
    that downloads it. ``kind_prefix`` is "", "datasets/" or "spaces/", as in the repo's URLs."""
    esc = html.escape
    base = f"/{kind_prefix}{repo_id}"
    rev = quote(revision, safe="")
    rows = "".join(
        f'<tr><td><a href="{base}/resolve/{rev}/{quote(path)}">{esc(path)}</a></td><td>{human_bytes(entry.size)}</td></tr>'
        for path, entry in sorted(commit.tree.items())
    )
    others = " ".join(f'<a href="{base}/tree/{quote(b, safe="")}">{esc(b)}</a>' for b in branches if b != revision)
    card = _card_html(readme) if readme is not None else '<p class="muted">This repo has no README.md.</p>'
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{esc(repo_id)}</title><style>{_STYLE}</style>'
        f"</head><body><p class=\"muted\">hubmerge's local Hub · {esc(kind_prefix.rstrip('/') or 'model')}</p>"
        f"<h1>{esc(repo_id)}</h1><p>revision <b>{esc(revision)}</b> · commit <code>{commit.sha}</code>"
        f" · {esc(commit.message)}{' · other branches: ' + others if others else ''}</p>"
        f"<section>{card}</section><h2>Files</h2><table><tr><th>file</th><th>size</th></tr>{rows}</table>"
        "</body></html>"
    )
