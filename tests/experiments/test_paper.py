"""The paper runner: every shipped row configuration is valid; a run writes paper.md from its runs."""

import json

import pytest

from topogrow.experiments import paper_runner
from topogrow.experiments.paper_runner import _row_from_dict, load_rows, run_paper


@pytest.mark.parametrize("quick", [False, True])
def test_every_row_configuration_is_valid(quick):
    rows = load_rows(quick)
    assert len(rows) >= 3
    for row in rows:
        assert row.seeds >= 3 and row.paper["value"] is not None
        assert row.growth.max_depth > row.model.initial_depth


def test_unknown_keys_and_rows_are_rejected():
    with pytest.raises(ValueError, match="unknown keys"):
        _row_from_dict("x", {"row": "r", "paper": {}, "task": "synthetic", "epochs": 3}, quick=False)
    with pytest.raises(ValueError, match="unknown paper rows"):
        load_rows(only=["no-such-row"])


def test_run_paper_writes_a_report_from_its_runs(tmp_path, monkeypatch):
    row = _row_from_dict(
        "toy",
        {
            "row": "Toy regression",
            "paper": {"metric": "test MSE", "value": 1.0},
            "task": "synthetic",
            "n_train": 200,
            "model": {"width": 8, "initial_depth": 1},
            "growth": {"max_depth": 2, "epochs_per_stage": 1, "final_epochs": 20},
            "overrides": {"td": {"line_search": "grid", "td_samples": "all"}},
            "strategies": ["td", "small-where", "no-growth", "small-init", "depth-search"],
            "seeds": 3,
        },
        quick=True,
    )
    monkeypatch.setattr(paper_runner, "load_rows", lambda quick, only=None: [row])
    path = run_paper(tmp_path, quick=True, progress=False)
    text = path.read_text()
    assert "## Toy regression" in text and "Paper: test MSE = 1.0" in text
    payload = json.loads((tmp_path / "toy" / "compare.json").read_text())
    runs = payload["runs"]
    assert len(runs) == 15 and payload["overrides"] == {"td": {"line_search": "grid", "td_samples": "all"}}
    assert all(r["history"]["epochs"][0]["flops"] > 0 for r in runs)  # the anytime curves are kept
    td = [r["metric"] for r in runs if r["strategy"] == "td"]
    assert f"{sum(td) / 3:.4f}" in text  # the table shows the mean of the runs just made
    assert (tmp_path / "toy" / "compare.png").exists() and (tmp_path / "toy" / "quality.png").exists()
    # The summary line: the default strategy and its paired record against the reference, by hand.
    summary = text.split("## Summary", 1)[1].split("## Toy regression", 1)[0]
    by_seed = {s: {r["seed"]: r["metric"] for r in runs if r["strategy"] == s} for s in row.strategies}
    ours, reference = by_seed["small-where"], by_seed["depth-search"]
    advantage = sum(reference[k] - ours[k] for k in ours) / 3  # lower MSE is better
    wins = sum(reference[k] > ours[k] for k in ours)
    assert f"| Toy regression | 1.0 (test MSE) | {sum(ours.values()) / 3:.4f} ± " in summary
    assert f"| {advantage:+.4f} [" in summary and f"], {wins}/3 (" in summary
    reached = payload["quality"]["small-where"]["reached"]
    assert f"| {reached}/3 |" in summary
