"""The command line end to end: run, compare, a configuration file, one-line errors, the example."""

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from topogrow.cli import main

ROOT = Path(__file__).resolve().parents[2]


SMALL = ["--width", "8", "--epochs-per-stage", "2", "--final-epochs", "1", "--max-depth", "3", "--quiet"]


def test_cli_run_end_to_end(tmp_path, capsys):
    assert main(["run", "synthetic", "--strategy", "td", "--out", str(tmp_path), *SMALL]) == 0
    out = capsys.readouterr().out
    assert "test MSE" in out and "reached max depth 3" in out
    payload = json.loads((tmp_path / "run.json").read_text())
    run = payload["run"]
    assert run["final_depth"] == 3 and run["spec"]["depth"] == 3
    insertions = [s for s in run["history"]["stages"] if s["location"] is not None]
    assert len(insertions) == 2 and all(s["actual_change"] <= 0 for s in insertions)
    assert all(len(s["eigenvalues"]) == s["depth"] + 1 for s in insertions)
    assert (tmp_path / "run.png").stat().st_size > 10_000


def test_cli_compare_end_to_end(tmp_path, capsys):
    args = ["compare", "synthetic", "--seeds", "2", "--strategies", "td,random,zero,scratch"]
    assert main([*args, "--out", str(tmp_path), *SMALL]) == 0
    out = capsys.readouterr().out
    for name in ("td", "random", "zero", "scratch"):
        assert f"| {name} |" in out
    payload = json.loads((tmp_path / "compare.json").read_text())
    runs = payload["runs"]
    assert len(runs) == 8 and {r["seed"] for r in runs} == {0, 1}
    for seed in (0, 1):
        by = {r["strategy"]: r for r in runs if r["seed"] == seed}
        assert by["scratch"]["spec"] == by["td"]["spec"]  # td's architecture, trained from scratch by the same rule
        assert {e["depth"] for e in by["scratch"]["history"]["epochs"]} == {by["td"]["final_depth"]}
        zero_locations = [s["location"] for s in by["zero"]["history"]["stages"] if s["location"] is not None]
        assert zero_locations == [1, 2]  # always right before the head
    assert {row["strategy"] for row in payload["summary"]} == {"td", "random", "zero", "scratch"}
    assert (tmp_path / "compare.png").stat().st_size > 10_000 and (tmp_path / "quality.png").stat().st_size > 10_000
    assert (tmp_path / "compare.md").read_text().startswith("| strategy |")
    assert payload["quality"] == {}  # no reference (depth-search) in this comparison


def test_cli_config_file_then_command_line(tmp_path, capsys):
    """--config FILE replaces the defaults; options written on the command line win over it;
    compare keeps the strategies of --strategies; a bad file is named in one line."""
    config = tmp_path / "growth.json"
    config.write_text(json.dumps({"strategy": "random", "max_depth": 2, "lr": 0.005, "weight_decay": 1e-4}))
    out = tmp_path / "run"
    assert main(["run", "synthetic", "--config", str(config), "--lr=0.002", "--out", str(out), *SMALL[:-3]]) == 0
    growth = json.loads((out / "run.json").read_text())["growth"]
    assert (growth["strategy"], growth["max_depth"], growth["lr"], growth["weight_decay"]) == ("random", 2, 0.002, 1e-4)
    assert growth["epochs_per_stage"] == 2  # from the command line; the file does not set it
    out = tmp_path / "compare"
    argv = ["compare", "synthetic", "--config", str(config), "--seeds", "1", "--strategies", "td,zero"]
    assert main([*argv, "--out", str(out), *SMALL]) == 0  # SMALL's --max-depth 3 wins over the file's 2
    payload = json.loads((out / "compare.json").read_text())
    assert {r["strategy"] for r in payload["runs"]} == {"td", "zero"} and payload["growth"]["max_depth"] == 3
    assert payload["growth"]["lr"] == 0.005
    capsys.readouterr()
    config.write_text(json.dumps({"max_deth": 2}))
    assert main(["run", "synthetic", "--config", str(config), "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "did you mean 'max_depth'" in err and err.count("\n") == 1
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "synthetic", "--strategy", "tdd"], "did you mean 'td'"),
        (["run", "synthetc"], "did you mean 'synthetic'"),
        (["compare", "synthetic", "--strategies", "scratch"], "add 'td'"),
        (["run", "synthetic", "--max-depth", "0"], "max_depth must be an integer >= 1"),
        (["run", "synthetic", "--activation", "relu"], "unknown activation"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "run.json").exists()


@pytest.mark.slow
def test_cli_help_explains_strategies():
    result = subprocess.run(
        [sys.executable, "-m", "topogrow.cli", "compare", "--help"], capture_output=True, text=True, check=True
    )
    assert "td-where" in result.stdout and "--seeds" in result.stdout


@pytest.mark.california
def test_quickstart_example_runs(monkeypatch, capsys):
    monkeypatch.setenv("QUICKSTART_EPOCHS", "1")
    monkeypatch.setenv("QUICKSTART_N_TRAIN", "1000")
    runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "best location" in out and "final depth 4" in out


@pytest.mark.parametrize("model", ["cnn", "vit"])
def test_scratch_rebuilds_the_td_architecture(model, tmp_path):
    argv = [
        "compare",
        "digits",
        "--model",
        model,
        "--width",
        "4",
        "--n-train",
        "100",
        "--seeds",
        "1",
        "--strategies",
        "td,scratch",
        "--out",
        str(tmp_path),
        *SMALL[2:],
    ]
    assert main(argv) == 0
    runs = {r["strategy"]: r for r in json.loads((tmp_path / "compare.json").read_text())["runs"]}
    assert runs["scratch"]["spec"] == runs["td"]["spec"]
    assert runs["scratch"]["n_parameters"] == runs["td"]["n_parameters"]
    assert runs["td"]["final_depth"] == 3
