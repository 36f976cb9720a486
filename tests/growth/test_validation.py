"""Input validation: every fault is refused before any work, in one line that says what and where;
the CLI exits non-zero with no traceback unless --debug."""

import json
import math
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from topogrow import Grower, GrowthConfig, ResidualCNN, ResidualMLP
from topogrow.app import cli
from topogrow.app.cli import main
from topogrow.growth import grower as grower_module


# ------------------------------------------------------------ configuration
@pytest.mark.parametrize(
    "changes, error, message",
    [
        (dict(strategy="tdd"), ValueError, r"unknown strategy 'tdd'; .*did you mean 'td'"),
        (dict(strategy=["td"]), TypeError, r"strategy must be a name \(a string\), got list"),
        (dict(schedule="weekly"), ValueError, r"unknown schedule 'weekly'; expected one of: fixed, plateau"),
        (dict(block="gelu-mpl"), ValueError, r"unknown block 'gelu-mpl'.*did you mean 'gelu-mlp'"),
        (dict(max_depth=0), ValueError, r"max_depth must be an integer >= 1, got 0"),
        (dict(max_depth=2.5), ValueError, r"max_depth must be an integer >= 1, got 2\.5"),
        (dict(batch_size=True), ValueError, r"batch_size must be an integer >= 1, got True"),
        (dict(final_epochs=-1), ValueError, r"final_epochs must be an integer >= 0"),
        (dict(lr=0), ValueError, r"lr must be > 0, got 0"),
        (dict(lr="0.01"), TypeError, r"lr must be a number, got str '0\.01'"),
        (dict(lr=math.nan), ValueError, r"lr must be finite, got nan"),
        (dict(lr=math.inf), ValueError, r"lr must be finite, got inf"),
        (dict(min_delta=1.5), ValueError, r"min_delta is a relative improvement and must be < 1"),
        (dict(rel_threshold=2), ValueError, r"rel_threshold .* must be <= 1"),
        (dict(weight_decay=-1), ValueError, r"weight_decay must be >= 0"),
        (dict(tolerance=math.nan), ValueError, r"tolerance must be finite"),
        (dict(epsilons=[]), ValueError, r"epsilons must be a non-empty list"),
        (dict(epsilons=0.1), ValueError, r"epsilons must be a non-empty list"),
        (dict(epsilons=[0.1, "a"]), TypeError, r"epsilons\[1\] must be a number"),
        (dict(epsilons=[0.1, -1]), ValueError, r"epsilons must be a non-empty list of positive numbers"),
        (dict(seed=-1), ValueError, r"seed must be an integer in 0\.\.2\*\*62 - 1, got -1"),
        (dict(neurons=0), ValueError, r"neurons must be None or an integer >= 1"),
        (dict(device="gpu"), ValueError, r"unknown device 'gpu'"),
        (dict(device=3), TypeError, r"device must be None or a name"),
    ],
)
def test_bad_config_values_are_refused_in_one_line(changes, error, message):
    with pytest.raises(error, match=message) as caught:
        GrowthConfig(**changes)
    assert "\n" not in str(caught.value)


def test_a_config_file_is_checked_and_named(tmp_path):
    path = tmp_path / "growth.json"
    path.write_text(json.dumps({"max_depth": 4, "max_dept": 3}))
    with pytest.raises(ValueError, match=rf"{path}: unknown config key 'max_dept'.*did you mean 'max_depth'"):
        GrowthConfig.from_json(path)
    path.write_text('{"max_depth": "3"}')
    with pytest.raises(ValueError, match=rf"{path}: max_depth must be an integer >= 1, got '3'"):
        GrowthConfig.from_json(path)
    path.write_text('{"max_depth": 3,')
    with pytest.raises(ValueError, match=rf"{path}: not a readable JSON file"):
        GrowthConfig.from_json(path)
    path.write_text("[1, 2]")
    with pytest.raises(TypeError, match=rf"{path}: a growth config must be a JSON object"):
        GrowthConfig.from_json(path)
    with pytest.raises(FileNotFoundError, match="no such config file"):
        GrowthConfig.from_json(tmp_path / "missing.json")
    path.write_text(json.dumps(GrowthConfig(max_depth=5, block="dense").to_dict()))
    assert GrowthConfig.from_json(path) == GrowthConfig(max_depth=5, block="dense")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_asking_for_cuda_without_it_is_refused():
    with pytest.raises(ValueError, match="CUDA is not available here"):
        Grower(ResidualMLP(4, 4, 1, 1), "mse", GrowthConfig(device="cuda"))


# ------------------------------------------------------------------- data
CONFIG = GrowthConfig(max_depth=2, epochs_per_stage=1, final_epochs=0, device="cpu")
_g = torch.Generator().manual_seed(0)
X = torch.randn(100, 4, generator=_g)
Y = torch.randn(100, 1, generator=_g)
LABELS = torch.randint(0, 3, (100,), generator=_g)


def _with(tensor, index, value):
    tensor = tensor.clone()
    tensor[index] = value
    return tensor


def _fit(train, val=None, loss="mse", out=1, **kwargs):
    return Grower(ResidualMLP(4, 4, 1, out), loss, CONFIG).fit(train, val, **kwargs)


DATA_FAULTS = [
    ("NaN in X", lambda: _fit((_with(X, (5, 2), math.nan), Y)), ValueError, r"train: X contains NaN or inf"),
    ("inf in y", lambda: _fit((X, _with(Y, (7, 0), math.inf))), ValueError, r"train: y contains NaN or inf"),
    ("NaN in val X", lambda: _fit((X, Y), (_with(X, (1, 1), math.nan), Y)), ValueError, r"val: X contains NaN"),
    ("empty set", lambda: _fit((X[:0], Y[:0])), ValueError, r"train: no samples"),
    ("empty DataLoader", lambda: _fit(DataLoader(TensorDataset(X[:0], Y[:0]))), ValueError, r"train: .*empty"),
    ("sample counts", lambda: _fit((X, Y[:-1])), ValueError, r"train: X has 100 samples but y has 99"),
    ("integer X", lambda: _fit(((10 * X).long(), Y)), TypeError, r"train: X has dtype torch\.int64; expected float"),
    ("integer y for mse", lambda: _fit((X, LABELS)), TypeError, r"train: y has dtype torch\.int64 but the 'mse' loss"),
    ("target shape", lambda: _fit((X, Y[:, 0])), ValueError, r"train: targets have shape \(\) per sample"),
    ("feature count", lambda: _fit((X[:, :3], Y)), ValueError, r"train: the model cannot take X of shape \(100, 3\)"),
    (
        "val feature count",
        lambda: _fit((X, Y), (torch.randn(10, 5), torch.randn(10, 1))),
        ValueError,
        r"val: the model cannot take X of shape \(10, 5\): expected input of shape \(batch, 4\)$",
    ),
    (
        "int32 labels",
        lambda: _fit((X, LABELS.int()), loss="cross_entropy", out=3),
        TypeError,
        r"train: class labels have dtype torch\.int32; the 'cross_entropy' loss needs int64",
    ),
    (
        "float labels",
        lambda: _fit((X, LABELS.float()), loss="cross_entropy", out=3),
        ValueError,
        r"train: the 'cross_entropy' loss needs int64 class labels of shape \(N,\) or class probabilities",
    ),
    (
        "labels (N, 1)",
        lambda: _fit((X, LABELS[:, None]), loss="cross_entropy", out=3),
        ValueError,
        r"train: class labels must have shape \(N,\), got \(100, 1\)",
    ),
    (
        "bool labels",
        lambda: _fit((X, LABELS > 0), loss="cross_entropy", out=3),
        TypeError,
        r"train: class labels have dtype torch\.bool",
    ),
    (
        "labels too large",
        lambda: _fit((X, LABELS + 1), loss="cross_entropy", out=3),
        ValueError,
        r"train: class labels must be in 0\.\.2, got 1\.\.3",
    ),
    (
        "negative labels",
        lambda: _fit((X, LABELS - 1), loss="cross_entropy", out=3),
        ValueError,
        r"train: class labels must be in 0\.\.2, got -1\.\.1",
    ),
    (
        "val labels",
        lambda: _fit((X, LABELS), (X, LABELS + 3), loss="cross_entropy", out=3),
        ValueError,
        r"val: class labels must be in 0\.\.2",
    ),
    ("numpy arrays", lambda: _fit((X.numpy(), Y.numpy())), TypeError, r"train: expected a pair of tensors .*ndarray"),
    (
        "DataLoader of triples",
        lambda: _fit(DataLoader(TensorDataset(X, Y, Y), batch_size=10)),
        TypeError,
        r"train: each batch of the DataLoader must be a pair",
    ),
    ("checkpoint_every", lambda: _fit((X, Y), checkpoint_every=-1), ValueError, r"checkpoint_every must be"),
    ("no parameters", lambda: Grower(torch.nn.Identity(), "mse", CONFIG), TypeError, r"nn\.Module with parameters"),
    ("unknown loss", lambda: Grower(ResidualMLP(4, 4, 1, 1), "mae", CONFIG), ValueError, r"did you mean 'mse'"),
    (
        "block that does not fit the model",
        lambda: Grower(ResidualMLP(4, 4, 1, 1), "mse", CONFIG.replace(block="conv")).fit((X, Y)),
        ValueError,
        r"block 'conv' does not fit ResidualMLP: on its states of shape \(2, 4\) it fails",
    ),
    (
        "ViT block on a CNN",
        lambda: Grower(ResidualCNN(1, (4,), (1,), 3), "cross_entropy", CONFIG.replace(block="encoder")).fit(
            (torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,)))
        ),
        ValueError,
        r"block 'encoder' does not fit ResidualCNN.*needs a ViT",
    ),
]


@pytest.mark.parametrize("fault, call, error, message", DATA_FAULTS, ids=[f[0] for f in DATA_FAULTS])
def test_bad_data_is_refused_before_training_in_one_line(fault, call, error, message, monkeypatch):
    trained = []
    monkeypatch.setattr(grower_module, "train_epoch", lambda *args: trained.append(1) or 0.0)
    with pytest.raises(error, match=message) as caught:
        call()
    assert "\n" not in str(caught.value)
    assert not trained  # refused before any work


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

    monkeypatch.setattr(cli, "make_task", broken)
    assert main(["run", "synthetic", *SMALL, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == (
        "topogrow: internal error (RuntimeError): something broke over two lines "
        "(rerun with --debug for the traceback)\n"
    )
    with pytest.raises(RuntimeError, match="something broke"):
        main(["run", "synthetic", *SMALL, "--out", str(tmp_path), "--debug"])


def test_debug_prints_the_traceback_of_a_bad_input(tmp_path):
    argv = [sys.executable, "-m", "topogrow.app.cli", "run", "synthetic", "--lr", "-1", "--out", str(tmp_path)]
    plain = subprocess.run(argv, capture_output=True, text=True)
    debug = subprocess.run([*argv, "--debug"], capture_output=True, text=True)
    assert plain.returncode == 2 and plain.stderr == "topogrow: error: lr must be > 0, got -1.0\n"
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr
    assert "ValueError: lr must be > 0, got -1.0" in debug.stderr


def test_a_skipped_insertion_is_a_one_line_warning_and_the_run_goes_on(monkeypatch, tmp_path, capsys):
    real, calls = grower_module.topological_derivative, []

    def faulty(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise FloatingPointError("the Hessian blocks contain NaN or inf: the adjoints are not finite")
        return real(*args, **kwargs)

    monkeypatch.setattr(grower_module, "topological_derivative", faulty)
    argv = ["run", "synthetic", *SMALL, "--max-depth", "2", "--growth-patience", "3", "--out", str(tmp_path)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if "warning" in line]
    assert warning == [
        "topogrow: warning: stage 0 (epoch 1, depth 1): insertion skipped: the topological derivative failed "
        "(the Hessian blocks contain NaN or inf: the adjoints are not finite); training goes on"
    ]
    run = json.loads((tmp_path / "run.json").read_text())["run"]
    assert run["final_depth"] == 2 and run["history"]["stages"][0]["note"].startswith("insertion skipped")
