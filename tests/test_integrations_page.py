"""docs/integrations.md runs as written: each ``## `` section's Python blocks, in order, in one
namespace of its own."""

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "integrations.md"


def _sections() -> dict[str, str]:
    parts = re.split(r"^## ", PAGE.read_text(), flags=re.M)[1:]
    return {part.splitlines()[0].strip(): part for part in parts}


SECTIONS = {title: text for title, text in _sections().items() if "```python" in text}


def test_the_page_has_its_sections():
    assert {
        "Your own training loop",
        "Your own model",
        "Exporting a grown network",
        "The Grower's training options",
    } <= set(SECTIONS), list(SECTIONS)


@pytest.mark.parametrize("title", list(SECTIONS))
def test_section_runs(title, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # files a section writes land here
    namespace: dict = {"__name__": "__main__"}
    for code in re.findall(r"```python\n(.*?)```", SECTIONS[title], flags=re.S):
        exec(compile(code, f"integrations.md: {title}", "exec"), namespace)
    if title == "Your own training loop":
        assert capsys.readouterr().out.count("a layer at location") == 2
    if title == "Your own model":
        assert "(8, 12, 12) ResidualConv" in capsys.readouterr().out
    if title == "The Grower's training options":
        assert "depth 3, best validation accuracy" in capsys.readouterr().out
        assert (tmp_path / "log" / "epochs.csv").exists()
    if title == "Exporting a grown network":
        assert "exported at depth 3" in capsys.readouterr().out
