"""The gallery's scripts (examples/plot_*.py, executed by ``make docs``) run as written.

Each takes 5 to 25 s on one thread, so they are marked slow (``make test-fast`` skips them).
"""

import runpy
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(EXAMPLES.glob("plot_*.py"))

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def test_the_gallery_has_its_tutorials():
    assert len(SCRIPTS) >= 5, [path.name for path in SCRIPTS]


@pytest.mark.slow
@pytest.mark.parametrize(
    "script",
    [
        pytest.param(path, marks=[pytest.mark.california] if "california" in path.read_text() else [])
        for path in SCRIPTS
    ],
    ids=[path.stem for path in SCRIPTS],
)
def test_gallery_script_runs(script, monkeypatch, capsys):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(EXAMPLES)  # sphinx-gallery runs each script from its folder
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as docs/conf.py does for the gallery
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
        plt.close("all")
    out = capsys.readouterr().out
    assert out.strip(), f"{script.name} printed nothing"
