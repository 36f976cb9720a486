"""`topogrow bench --quick`: the table and the JSON it writes."""

import json

import pytest

from topogrow.cli import main


@pytest.mark.california
@pytest.mark.slow
def test_bench_quick_writes_the_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--threads", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "### Performance" in printed and "| measure |" in printed
    results = json.loads(out.read_text())
    expected = {"machine", "config", "td_vs_epoch", "td_decisions", "block_vs_dense", "memory", "growth_overhead"}
    assert expected | {"wide_growth", "matrix_free", "line_search"} <= set(results)
    goals = {
        "td_vs_epoch",
        "line_search",
        "growth_demo",
        "growth_bench",
        "td_over_random",
        "wide_time",
        "wide_memory",
        "flops",
    }
    assert goals <= set(results["goals"]) and all(results["goals"][g] is not None for g in goals)
    assert {r["solver"] for r in results["td_vs_epoch"]} >= {"auto", "sampled"}
    assert {r["task"] for r in results["td_vs_epoch"]} == {"california", "mnist5k"}
    assert all(r["ratio"] > 0 for r in results["td_vs_epoch"])
    assert {"dense", "scaling"} <= set(results["block_vs_dense"])
    assert {r["solver"] for r in results["memory"]} == {"blocks", "iterative"}
    assert all(r["td_extra_bytes"] is not None for r in results["memory"])
    growth = results["growth_overhead"]
    assert set(growth) == {"demo", "bench", "cnn"} and all(case["td_over_scratch"] > 0 for case in growth.values())
    assert all(case["flops_td_over_scratch"] > 0 for case in growth.values())
    assert results["wide_growth"]["time_ratio"] > 0 and results["wide_growth"]["memory_ratio"] > 0
    assert {r["task"] for r in results["td_decisions"]} == {"california", "mnist5k"}
    search = results["line_search"]
    assert search["evaluated_samples"]["model"] < search["evaluated_samples"]["grid"]
    assert search["change"]["model"] <= 0 and search["change"]["grid"] <= 0
    assert all(r["samples_read"] <= r["n_train"] for r in results["td_decisions"])
    assert all(r["rel_error"] <= 1e-6 for r in results["matrix_free"])


def test_bench_rejects_unknown_sections(capsys):
    assert main(["bench", "--quick", "--sections", "td_vs_epoh"]) == 2
    assert "td_vs_epoch" in capsys.readouterr().err


@pytest.mark.california
def test_the_location_cost_section_puts_the_default_decision_within_an_epoch():
    from topogrow.experiments.bench import BenchConfig, goals_met, run_bench

    results = run_bench(BenchConfig(quick=True, threads=1, sections=("location_cost",)))
    rows = results["location_cost"]
    assert {r["task"] for r in rows} == {"heat-inverse", "california"}
    for row in rows:
        # before: the eigenpair pass read every sample of these small sets, many epochs
        assert row["before"]["samples"] == row["n_train"] and row["before"]["epochs"] > 5
        assert 0 < row["after"]["samples"] < row["n_train"]
        assert 0 < row["after"]["epochs"] <= 1.0
        assert 0 < row["mu_kept"] <= 1.0
    assert goals_met(results)["location_cost"] is True
