"""The README's quickstart runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_quickstart_runs(tmp_path, monkeypatch) -> None:
    text = README.read_text()
    match = re.search(r"## Quickstart\n\n```python\n(.*?)```", text, re.S)
    assert match, "README.md has no python block under '## Quickstart'"
    monkeypatch.chdir(tmp_path)  # anything it writes lands in a temporary directory
    exec(compile(match.group(1), str(README), "exec"), {"__name__": "__readme__"})
