"""The results files a benchmark writes: its JSON and the markdown table beside it."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(out: Path, result: dict, table: str) -> None:
    """``result`` to ``out`` (JSON) and ``table`` to the same name with ``.md``; prints it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(table)
    print(table)
