"""The run-config reference table of ``docs/CONFIG.md``, generated from the declared keys.

``python -m fedpeft.config.docs`` rewrites the table between the markers in
docs/CONFIG.md (run from the repository root); a test fails when the committed table
differs from :func:`table`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .merge import literal
from .parse import declared_keys

BEGIN, END = "<!-- config-table:begin -->", "<!-- config-table:end -->"
DEFAULT_PATH = Path("docs/CONFIG.md")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default(value: Any) -> str:
    return f"`{literal(value)}`"


def table() -> str:
    """Markdown table: key, default, meaning (with the registered choices)."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for doc in declared_keys():
        meaning = doc.help
        if doc.choices:
            when = f"; with {doc.only_if}" if doc.only_if else ""
            meaning += f"{when}; one of " + ", ".join(f"`{c}`" for c in doc.choices)
        lines.append(f"| `{doc.key}` | {_cell(_default(doc.default))} | {_cell(meaning)} |")
    return "\n".join(lines)


def render(text: str) -> str:
    """``text`` with the part between the markers replaced by the current table."""
    head, found, rest = text.partition(BEGIN)
    if not found or END not in rest:
        raise ValueError(f"no {BEGIN} ... {END} section to rewrite")
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """Rewrite the table in docs/CONFIG.md (or the file given)."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DEFAULT_PATH
    path.write_text(render(path.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
