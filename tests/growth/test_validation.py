"""Input validation: every fault in a config or in the data is refused before any work, in one
line that says what and where (the CLI's side is in tests/cli/test_cli_errors.py)."""

import json
import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from topogrow import Grower, GrowthConfig, ResidualCNN, ResidualMLP
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
