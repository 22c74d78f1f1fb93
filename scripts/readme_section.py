"""Replace one generated section of README.md: the text between a pair of HTML-comment markers."""

from __future__ import annotations


def rewrite(readme: str, start: str, end: str, heading: str, body: str) -> str:
    """``readme`` with the text between ``start`` and ``end`` replaced by ``body``; when the
    markers are absent, ``heading`` and the markers holding ``body`` are appended."""
    if start not in readme or end not in readme:
        return readme.rstrip("\n") + f"\n\n{heading}\n\n{start}\n{body.strip()}\n{end}\n"
    head, rest = readme.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body.strip()}\n{end}{tail}"
