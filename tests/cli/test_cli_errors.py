"""CLI errors: every fault is refused in one line with exit code 2 (1 for an unexpected error),
with no traceback unless --debug."""

import json
import subprocess
import sys

import pytest

from topogrow import core
from topogrow.cli import main, runs

# -------------------------------------------------------------------- CLI
SMALL = ["--width", "8", "--epochs-per-stage", "1", "--final-epochs", "1", "--max-depth", "2", "--quiet"]

CLI_FAULTS = [
    (["run", "synthetic", "--strategy", "tdd"], "did you mean 'td'"),
    (["run", "synthetc"], "did you mean 'synthetic'"),
    (["run", "synthetic", "--lr", "-1"], "lr must be > 0, got -1.0"),
    (["run", "synthetic", "--lr", "nan"], "lr must be finite, got nan"),
    (["run", "synthetic", "--seed", "-1"], "seed must be an integer in 0..2**62 - 1, got -1"),
    (["run", "synthetic", "--device", "gpu"], "unknown device 'gpu'"),
    (["run", "synthetic", "--checkpoint-every", "-1"], "--checkpoint-every must be >= 0, got -1"),
    (["run", "synthetic", "--threads", "0"], "--threads must be >= 1, got 0"),
    (["run", "synthetic", "--n-train", "1"], "n_train must be >= 2, got 1"),
    (["run", "synthetic", "--block", "gelu-mpl"], "did you mean 'gelu-mlp'"),
    (["run", "synthetic", "--block", "conv"], "block 'conv' does not fit ResidualMLP"),
    (["run", "synthetic", "--width", "0"], "width must be an integer >= 1, got 0"),
    (["run", "synthetic", "--initial-depth", "-1"], "initial depth must be an integer >= 0, got -1"),
    (["compare", "synthetic", "--seeds", "0"], "seeds must be >= 1, got 0"),
]


@pytest.mark.parametrize("argv, message", CLI_FAULTS, ids=[" ".join(a[2:]) or a[1] for a, _ in CLI_FAULTS])
def test_cli_faults_are_one_line_with_exit_code_2(argv, message, tmp_path, capsys):
    assert main([*argv[:2], *SMALL, *argv[2:], "--out", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("topogrow: error: ")
    assert message in captured.err and captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert not (tmp_path / "run.json").exists()


def test_cli_resume_from_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["run", "synthetic", *SMALL, "--resume", str(tmp_path / "file"), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"topogrow: error: --resume {tmp_path / 'file'}: not a folder\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "synthetic", "--epochs-per-stage", "abc"], "argument --epochs-per-stage: invalid int value: 'abc'"),
        (["run", "synthetic", "--model", "resnet"], "argument --model: invalid choice: 'resnet'"),
        (["run"], "the following arguments are required: task"),
    ],
)
def test_argument_errors_are_one_line_too(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("topogrow run: error:")


def test_an_unexpected_error_is_one_line_with_exit_code_1_and_debug_shows_it(monkeypatch, tmp_path, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("something broke\nover two lines")

    monkeypatch.setattr(runs, "load_task", broken)
    assert main(["run", "synthetic", *SMALL, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == (
        "topogrow: internal error (RuntimeError): something broke over two lines "
        "(rerun with --debug for the traceback)\n"
    )
    with pytest.raises(RuntimeError, match="something broke"):
        main(["run", "synthetic", *SMALL, "--out", str(tmp_path), "--debug"])


@pytest.mark.slow
def test_debug_prints_the_traceback_of_a_bad_input(tmp_path):
    argv = [sys.executable, "-m", "topogrow.cli", "run", "synthetic", "--lr", "-1", "--out", str(tmp_path)]
    plain = subprocess.run(argv, capture_output=True, text=True)
    debug = subprocess.run([*argv, "--debug"], capture_output=True, text=True)
    assert plain.returncode == 2 and plain.stderr == "topogrow: error: lr must be > 0, got -1.0\n"
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr
    assert "ValueError: lr must be > 0, got -1.0" in debug.stderr


def test_a_skipped_insertion_is_a_one_line_warning_and_the_run_goes_on(monkeypatch, tmp_path, capsys):
    real, calls = core.topological_derivative, []

    def faulty(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise FloatingPointError("the Hessian blocks contain NaN or inf: the adjoints are not finite")
        return real(*args, **kwargs)

    monkeypatch.setattr(core, "topological_derivative", faulty)
    argv = ["run", "synthetic", *SMALL, "--strategy", "td", "--growth-patience", "3", "--out", str(tmp_path)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if "warning" in line]
    assert warning == [
        "topogrow: warning: stage 0 (epoch 1, depth 1): insertion skipped: the topological derivative failed "
        "(the Hessian blocks contain NaN or inf: the adjoints are not finite); training goes on"
    ]
    run = json.loads((tmp_path / "run.json").read_text())["run"]
    assert run["final_depth"] == 2 and run["history"]["stages"][0]["note"].startswith("insertion skipped")
