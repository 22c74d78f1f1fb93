"""Rewrite the README's Performance section from saved ``stream-ae bench --save FILE`` runs.

Usage::

    stream-ae bench --format binary --save bench-binary.json
    stream-ae bench --format json --save bench-json.json
    python scripts/performance_section.py bench-binary.json bench-json.json

Only the text between ``<!-- performance:start -->`` and ``<!-- performance:end -->`` is
replaced; when the markers are absent, a ``## Performance`` section holding them is
appended at the end of README.md. Nothing else in the file changes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from readme_section import rewrite  # scripts/readme_section.py, beside this file

from stream_ae.tools.bench.report import markdown

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- performance:start -->", "<!-- performance:end -->"


def section(runs: list[dict]) -> str:
    """The generated text: one table per saved run, each headed by its payload format."""
    parts = []
    for summary in runs:
        options = summary["context"]["options"]
        parts.append(f"### {options['payload'].upper()} payload, {options['events']:,} events\n\n{markdown(summary)}")
    return "\n".join(parts)


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    runs = [json.loads(Path(path).read_text()) for path in paths]
    README.write_text(rewrite(README.read_text(), START, END, "## Performance", section(runs)))
    print(f"rewrote the Performance section of {README} from {len(runs)} run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
