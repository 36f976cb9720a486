"""Application layer: data loading, tasks, the CLI end to end, the example."""

import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from topogrow.app import datasets, make_task
from topogrow.app.cli import main
from topogrow.app.datasets import CALIFORNIA_FEATURES, load_california, read_statlib_california

ROOT = Path(__file__).resolve().parents[2]
STATLIB_ROWS = """-122.230000,37.880000,41.000000,880.000000,129.000000,322.000000,126.000000,8.325200,452600.000000
-122.220000,37.860000,21.000000,7099.000000,1106.000000,2401.000000,1138.000000,8.301400,358500.000000
-122.240000,37.850000,52.000000,1467.000000,190.000000,496.000000,177.000000,7.257400,352100.000000
"""


def test_statlib_file_gives_scikit_learn_features(tmp_path):
    path = tmp_path / "cal_housing.data"
    path.write_text(STATLIB_ROWS)  # the original StatLib file has no header
    X, y = read_statlib_california(path)
    assert X.shape == (3, len(CALIFORNIA_FEATURES))
    # scikit-learn's first California sample (MedInc, HouseAge, AveRooms, AveBedrms, Population,
    # AveOccup, Latitude, Longitude) and target 4.526.
    np.testing.assert_allclose(X[0], [8.3252, 41.0, 880 / 126, 129 / 126, 322.0, 322 / 126, 37.88, -122.23])
    np.testing.assert_allclose(y, [4.526, 3.585, 3.521])
    header = tmp_path / "with_header.data"
    header.write_text("longitude,latitude,a,b,c,d,e,f,g\n" + STATLIB_ROWS)
    np.testing.assert_array_equal(read_statlib_california(header)[0], X)


def test_shared_california_is_found_and_complete():
    X, y = load_california(download=False)
    assert X.shape == (20640, 8) and y.shape == (20640,)
    assert y.min() > 0.14 and y.max() <= 5.00001  # units of 100k$, capped at 500k$
    assert abs(X[:, 0].mean() - 3.8707) < 1e-3  # MedInc mean, as in scikit-learn


def test_data_dir_option_and_environment_variable(tmp_path, monkeypatch):
    (tmp_path / "cal_housing.data").write_text(STATLIB_ROWS)
    assert load_california(data_dir=tmp_path, download=False)[0].shape == (3, 8)
    monkeypatch.setenv(datasets.DATA_ENV, str(tmp_path))
    assert load_california(download=False)[0].shape == (3, 8)


def test_missing_file_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "candidate_dirs", lambda data_dir=None: [tmp_path])
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path / "sklearn"))
    with pytest.raises(FileNotFoundError, match="Looked for cal_housing.data in") as error:
        load_california(download=False)
    assert str(tmp_path) in str(error.value)


@pytest.mark.parametrize(
    "content, problem",
    [("1,2,3\n4,5,6\n", "expected rows of 9"), ("1,2,3,4,5,6,7,8,nan\n" * 2, "NaN"), ("a,b\nx,y,z\n", "readable")],
)
def test_corrupt_file_is_named(tmp_path, content, problem):
    path = tmp_path / "cal_housing.data"
    path.write_text(content)
    with pytest.raises(ValueError, match=problem) as error:
        read_statlib_california(path)
    assert str(path) in str(error.value)


def test_task_split_is_seeded_and_standardised():
    a, b, c = make_task("california", seed=0), make_task("california", seed=0), make_task("california", seed=1)
    assert torch.equal(a.X_train, b.X_train) and not torch.equal(a.X_train, c.X_train)
    assert len(a.X_train) + len(a.X_val) + len(a.X_test) == 20640
    assert a.X_train.mean(0).abs().max() < 1e-4 and (a.X_train.std(0) - 1).abs().max() < 1e-3
    assert a.y_train.shape[1] == 1 and a.metric_name == "test MSE"
    with pytest.raises(ValueError, match="did you mean 'california'"):
        make_task("californa")


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
        [sys.executable, "-m", "topogrow.app.cli", "compare", "--help"], capture_output=True, text=True, check=True
    )
    assert "td-where" in result.stdout and "--seeds" in result.stdout


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
