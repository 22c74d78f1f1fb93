"""Replace one generated section of a Markdown file (``docs/results.md``, ``docs/performance.md``):
the text between a pair of HTML-comment markers."""

from __future__ import annotations


def rewrite(text: str, start: str, end: str, heading: str, body: str) -> str:
    """``text`` with the text between ``start`` and ``end`` replaced by ``body``; when the
    markers are absent, ``heading`` and the markers holding ``body`` are appended."""
    if start not in text or end not in text:
        return text.rstrip("\n") + f"\n\n{heading}\n\n{start}\n{body.strip()}\n{end}\n"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body.strip()}\n{end}{tail}"
