"""Rewrite the generated bench tables of ``docs/performance.md`` from saved ``stream-ae bench --save FILE`` runs.

Usage::

    stream-ae bench --format binary --save bench-binary.json
    stream-ae bench --format json --save bench-json.json
    python scripts/performance_section.py bench-binary.json bench-json.json

Only the text of ``docs/performance.md`` between ``<!-- performance:start -->`` and
``<!-- performance:end -->`` is replaced; when the markers are absent, a ``## Bench runs``
section holding them is appended at the end of the file (created when missing). Nothing
else in the file changes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from readme_section import rewrite  # scripts/readme_section.py, beside this file

from stream_ae.tools.bench.report import markdown

DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
START, END = "<!-- performance:start -->", "<!-- performance:end -->"


def section(runs: list[dict]) -> str:
    """The generated text: one table per saved run, each headed (``##``) by its payload format."""
    parts = []
    for summary in runs:
        options = summary["context"]["options"]
        parts.append(f"## {options['payload'].upper()} payload, {options['events']:,} events\n\n{markdown(summary)}")
    return "\n".join(parts)


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    runs = [json.loads(Path(path).read_text()) for path in paths]
    text = DOC.read_text() if DOC.exists() else f"# Performance\n\n{START}\n{END}\n"
    DOC.write_text(rewrite(text, START, END, "## Bench runs", section(runs)))
    print(f"rewrote the bench tables of {DOC} from {len(runs)} run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
