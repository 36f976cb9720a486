"""`topogrow bench --quick`: the table and the JSON it writes."""

import json

import pytest

from topogrow.app.cli import main


@pytest.mark.slow
def test_bench_quick_writes_the_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--threads", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "### Performance" in printed and "| measure |" in printed
    results = json.loads(out.read_text())
    expected = {"machine", "config", "td_vs_epoch", "block_vs_dense", "memory", "growth_overhead", "matrix_free"}
    assert expected <= set(results) and set(results["goals"]) >= {"td_vs_epoch", "memory", "growth_overhead"}
    assert {r["task"] for r in results["td_vs_epoch"]} == {"california", "mnist5k"}
    assert all(r["ratio"] > 0 for r in results["td_vs_epoch"])
    assert {"dense", "scaling"} <= set(results["block_vs_dense"])
    assert {r["solver"] for r in results["memory"]} == {"blocks", "iterative"}
    assert all(r["td_extra_bytes"] is not None for r in results["memory"])
    assert results["growth_overhead"]["ratio"] > 0
    assert all(r["rel_error"] <= 1e-6 for r in results["matrix_free"])


def test_bench_rejects_unknown_sections(capsys):
    assert main(["bench", "--quick", "--sections", "td_vs_epoh"]) == 2
    assert "td_vs_epoch" in capsys.readouterr().err
