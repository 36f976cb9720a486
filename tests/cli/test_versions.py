"""``topogrow --version``; what run.json and compare.json record about versions, the command line and
the data file; the --n-train warning; a resume of another task names the task (issue 13)."""

import hashlib
import json
import platform
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import topogrow
from topogrow.cli import main
from topogrow.cli.provenance import data_file
from topogrow.data.task import split_and_standardise
from topogrow.experiments.experiment import _check_same_run
from topogrow.growth import GrowthConfig

SMALL = ["--width", "8", "--epochs-per-stage", "1", "--final-epochs", "1", "--max-depth", "2", "--quiet"]


def test_version_flag_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"topogrow {topogrow.__version__}\n"
    assert topogrow.__version__ == "0.1.0"


def test_run_and_compare_json_record_versions_and_the_command_line(tmp_path):
    expected = {
        "topogrow": topogrow.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    argv = ["run", "synthetic", "--strategy", "td", "--out", str(tmp_path / "run"), *SMALL]
    assert main(argv) == 0
    payload = json.loads((tmp_path / "run" / "run.json").read_text())
    assert payload["versions"] == expected
    assert payload["command"] == ["topogrow", *argv]
    assert payload["data_file"] is None  # synthetic data: no file
    argv = ["compare", "synthetic", "--seeds", "1", "--strategies", "zero", "--out", str(tmp_path / "cmp"), *SMALL]
    assert main(argv) == 0
    payload = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert payload["versions"] == expected and payload["command"] == ["topogrow", *argv]
    assert "runs" in payload and payload["data_file"] is None


def test_the_california_data_file_is_recorded_with_its_sha256(tmp_path):
    path = tmp_path / "cal_housing.data"
    path.write_bytes(b"-122.23,37.88,41,880,129,322,126,8.3252,452600\n")
    recorded = data_file("california", tmp_path)
    assert recorded == {"path": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert data_file("synthetic", tmp_path) is None


def test_n_train_above_the_training_samples_warns_and_uses_them_all():
    X, y = np.random.default_rng(0).normal(size=(100, 3)), np.zeros((100, 1))
    with pytest.warns(UserWarning, match=r"^n_train 1000000 > 64 available training samples: using all 64$"):
        parts = split_and_standardise(X, y, seed=0, n_train=1_000_000)
    assert len(parts[0]) == 64
    with pytest.warns() as record:
        split_and_standardise(X, y, seed=0, n_train=64)
        warnings.warn("sentinel", stacklevel=1)
    assert [str(w.message) for w in record] == ["sentinel"]


def test_a_resume_of_another_task_names_the_task_first():
    grower = SimpleNamespace(
        resumed_from="results/x/checkpoints/stage-0001",
        config=GrowthConfig(),
        metadata={"task": "synthetic", "n_train": 880},
    )
    with pytest.raises(ValueError, match=r"\(task is 'synthetic' there, 'california' here\)"):
        _check_same_run(grower, GrowthConfig(), {"task": "california", "n_train": 13210})
