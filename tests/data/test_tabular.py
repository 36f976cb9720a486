"""A user's own table (CSV, .npz) as a task, from Python and from the CLI; the preprocessing record."""

import json

import numpy as np
import pytest
import torch

from helpers import write_csv
from topogrow.cli import main
from topogrow.data import load
from topogrow.data.tabular import infer_task_type, is_table_path, read_table, table_task, tabular_task

TINY = ["--epochs-per-stage", "1", "--final-epochs", "1", "--max-depth", "2", "--width", "6", "--quiet"]


def regression_rows(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)) * [1.0, 10.0, 0.1] + [0.0, 50.0, -3.0]
    y = X @ [1.0, 0.2, -5.0] * 10 + 100
    return X, y


@pytest.fixture
def table_csv(tmp_path):
    X, y = regression_rows()
    return write_csv(tmp_path / "houses.csv", ["a", "b", "c", "price"], np.column_stack([X, y]).tolist())


@pytest.fixture
def labels_csv(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 2))
    labels = np.where(X[:, 0] > 0.5, "high", np.where(X[:, 0] < -0.5, "low", "mid"))
    return write_csv(
        tmp_path / "labels.csv", ["u", "v", "label"], [[*x, lab] for x, lab in zip(X.tolist(), labels, strict=True)]
    )


def test_cli_run_on_a_csv_end_to_end(table_csv, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", str(table_csv), "--target", "price", *TINY, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "topogrow: task type: regression (inferred)" in captured.err
    assert "test MSE" in captured.out and (out / "run.json").is_file() and (out / "model.json").is_file()
    assert json.loads((out / "run.json").read_text())["task"] == str(table_csv)


def test_cli_compare_on_a_csv_and_a_given_task_type(labels_csv, tmp_path, capsys):
    out = tmp_path / "c"
    argv = ["compare", str(labels_csv), "--target", "label", "--task-type", "classification", "--seeds", "1"]
    assert main([*argv, "--strategies", "td,random", *TINY, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "topogrow: task type: classification (given), 3 classes: high, low, mid" in captured.err
    assert "test accuracy" in captured.out
    assert json.loads((out / "compare.json").read_text())["runs"]


def test_cli_table_options_are_for_tables_and_target_is_required(table_csv, tmp_path, capsys):
    assert main(["run", "synthetic", "--target", "y", *TINY, "--out", str(tmp_path / "a")]) == 2
    assert "--target: for a table file" in capsys.readouterr().err
    assert main(["run", str(table_csv), *TINY, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "--target is required for a table: one of a, b, c, price" in err and err.count("\n") == 1
    assert main(["run", str(tmp_path / "nope.csv"), "--target", "y", *TINY, "--out", str(tmp_path / "c")]) == 2
    assert "nope.csv: no such file" in capsys.readouterr().err


def test_missing_target_names_the_columns_and_suggests(table_csv, tmp_path, capsys):
    with pytest.raises(
        ValueError, match=r"no target column 'prize'; the columns are a, b, c, price; did you mean 'price'"
    ):
        tabular_task(table_csv, "prize")
    assert main(["run", str(table_csv), "--target", "Price", *TINY, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("topogrow: error: ") and "did you mean 'price'" in err and err.count("\n") == 1


def test_non_numeric_feature_columns_are_named(tmp_path):
    X, y = regression_rows(20)
    rows = [
        [x[0], "Paris" if i % 2 else "Lyon", x[1], "red", v] for i, (x, v) in enumerate(zip(X.tolist(), y, strict=True))
    ]
    path = write_csv(tmp_path / "t.csv", ["a", "city", "b", "colour", "y"], rows)
    with pytest.raises(
        ValueError, match=r"non-numeric feature columns: 'city' \(e.g. 'Lyon'\), 'colour' \(e.g. 'red'\)"
    ):
        tabular_task(path, "y")


def test_nan_rows_are_counted_and_dropna_drops_them(tmp_path, capsys):
    X, y = regression_rows(40)
    rows = np.column_stack([X, y]).tolist()
    rows[3][1] = ""
    rows[7][0] = "nan"
    rows[7][2] = "NA"
    rows[20][3] = ""  # the target
    path = write_csv(tmp_path / "t.csv", ["a", "b", "c", "y"], rows)
    with pytest.raises(
        ValueError, match=r"3 of 40 rows have empty, NaN or infinite cells \(the first: data row 4, column 'b'\)"
    ):
        tabular_task(path, "y")
    task = tabular_task(path, "y", dropna=True)
    assert len(task.X_train) + len(task.X_val) + len(task.X_test) == 37
    assert main(["run", str(path), "--target", "y", *TINY, "--out", str(tmp_path / "r")]) == 2
    assert "--dropna" in capsys.readouterr().err
    assert main(["run", str(path), "--target", "y", "--dropna", *TINY, "--out", str(tmp_path / "r")]) == 0


def test_a_single_class_is_refused(tmp_path):
    rows = [[i, i * 2, "yes"] for i in range(30)]
    path = write_csv(tmp_path / "t.csv", ["a", "b", "label"], rows)
    with pytest.raises(ValueError, match=r"target 'label' has a single value \('yes'\): nothing to learn"):
        tabular_task(path, "label")


def test_too_few_rows_for_the_split(tmp_path, capsys):
    X, y = regression_rows(8)
    path = write_csv(tmp_path / "t.csv", ["a", "b", "c", "y"], np.column_stack([X, y]).tolist())
    with pytest.raises(ValueError, match=r"too few rows for a train/validation/test split: 8; need at least 10"):
        tabular_task(path, "y")
    X, y = regression_rows(12)
    path = write_csv(tmp_path / "u.csv", ["a", "b", "c", "y"], np.column_stack([X, y]).tolist())
    with pytest.raises(ValueError, match=r"too few rows .*: 12"):
        tabular_task(path, "y", val_fraction=0.02)  # no validation row
    assert main(["run", str(path), "--target", "y", "--val-fraction", "0.02", *TINY, "--out", str(tmp_path)]) == 2
    assert "too few rows" in capsys.readouterr().err


def test_classification_labels_are_encoded_as_sorted_indices(labels_csv):
    task = tabular_task(labels_csv, "label")
    assert task.kind == "classification" and task.out_features == 3
    classes = task.preprocessing["classes"]
    assert classes == ["high", "low", "mid"]
    assert task.y_train.dtype == torch.int64 and task.preprocessing["y_mean"] is None
    # the round trip: decode each split's indices and compare with the rule that made the labels from u
    u_mean, u_std = task.preprocessing["x_mean"][0], task.preprocessing["x_std"][0]
    for X, y in ((task.X_train, task.y_train), (task.X_val, task.y_val), (task.X_test, task.y_test)):
        u = X[:, 0].double().numpy() * u_std + u_mean
        expected = np.where(u > 0.5, "high", np.where(u < -0.5, "low", "mid"))
        assert [classes[i] for i in y.tolist()] == expected.tolist()
    assert sorted(np.unique(read_table(labels_csv).columns["label"].astype(str)).tolist()) == classes


def test_integer_labels_are_inferred_as_classification():
    assert infer_task_type(np.array([0.0, 1.0, 2.0, 1.0])) == "classification"
    assert infer_task_type(np.array([0.5, 1.0, 2.0])) == "regression"
    assert infer_task_type(np.arange(100.0)) == "regression"  # too many distinct values
    assert infer_task_type(np.array(["a", "b"], dtype=object)) == "classification"


def test_numeric_classes_are_ints_and_regression_can_be_forced(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(50, 2))
    rows = [[*x, int(x[0] > 0) * 5 + 1] for x in X.tolist()]
    path = write_csv(tmp_path / "t.csv", ["a", "b", "k"], rows)
    task = tabular_task(path, "k")
    assert task.kind == "classification" and task.preprocessing["classes"] == [1, 6]
    assert tabular_task(path, "k", task_type="regression").kind == "regression"


def test_npz_with_X_and_y_and_with_named_columns(tmp_path):
    X, y = regression_rows(50)
    np.savez(tmp_path / "xy.npz", X=X, y=y)
    task = tabular_task(tmp_path / "xy.npz", "y")
    assert task.kind == "regression" and task.preprocessing["feature_names"] == ["x0", "x1", "x2"]
    np.savez(tmp_path / "cols.npz", a=X[:, 0], b=X[:, 1], c=X[:, 2], price=y)
    named = tabular_task(tmp_path / "cols.npz", "price")
    assert named.preprocessing["feature_names"] == ["a", "b", "c"] and named.preprocessing["target"] == "price"
    assert torch.equal(task.X_train, named.X_train) and torch.equal(task.y_test, named.y_test)
    assert is_table_path(tmp_path / "xy.npz") and is_table_path("later.parquet") and not is_table_path("california")


def test_the_split_is_seeded(table_csv):
    first, again, other = (tabular_task(table_csv, "price", seed=s) for s in (3, 3, 4))
    for key in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test"):
        assert torch.equal(getattr(first, key), getattr(again, key))
    assert not torch.equal(first.y_test, other.y_test)
    assert first.preprocessing == again.preprocessing


def test_the_preprocessing_record_inverts_the_standardisation(table_csv):
    task = tabular_task(table_csv, "price", seed=1)
    record = json.loads(json.dumps(task.preprocessing))  # JSON-able, and what survives a file
    assert set(record) == {"kind", "feature_names", "target", "x_mean", "x_std", "y_mean", "y_std", "classes", "data"}
    assert record["kind"] == "regression" and record["feature_names"] == ["a", "b", "c"] and record["classes"] is None
    assert record["data"]["path"] == str(table_csv.resolve()) and len(record["data"]["sha256"]) == 64
    # recompute the split in float64 and invert it exactly
    table = read_table(table_csv)
    raw_X = np.column_stack([table.columns[n] for n in record["feature_names"]])
    raw_y = table.columns["price"]
    order = np.random.default_rng(1).permutation(len(raw_X))
    n_test, n_val = round(0.2 * len(raw_X)), round(0.16 * len(raw_X))
    train = order[n_test + n_val :]
    x_mean, x_std = np.array(record["x_mean"]), np.array(record["x_std"])
    y_mean, y_std = np.array(record["y_mean"]), np.array(record["y_std"])
    X_std = (raw_X[train] - x_mean) / x_std
    np.testing.assert_allclose(X_std * x_std + x_mean, raw_X[train], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(X_std, task.X_train.double().numpy(), rtol=1e-6, atol=1e-6)  # float32 tensors
    np.testing.assert_allclose(task.y_train.double().numpy()[:, 0] * y_std + y_mean, raw_y[train], rtol=1e-6)
    np.testing.assert_allclose(x_mean, raw_X[train].mean(axis=0), rtol=1e-15)
    assert abs(task.y_train.double().mean()) < 1e-6 and abs(task.y_train.double().std(unbiased=False) - 1) < 1e-6


def test_the_regression_test_metric_is_in_the_tables_units(table_csv):
    task = tabular_task(table_csv, "price")
    model = torch.nn.Linear(3, 1)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)  # predicts y_mean
    y_std, y_mean = task.preprocessing["y_std"][0], task.preprocessing["y_mean"][0]
    raw_test = task.y_test.double()[:, 0] * y_std + y_mean
    assert task.score(model) == pytest.approx(float(((raw_test - y_mean) ** 2).mean()), rel=1e-6)


def test_builtin_tasks_keep_their_tensors_and_record_their_preprocessing():
    task = load("synthetic", seed=0)
    rng = np.random.default_rng(12345)
    X = rng.uniform(-2, 2, size=(1500, 4))
    order = np.random.default_rng(0).permutation(1500)
    train = order[300 + 240 :]
    mean, std = X[train].mean(axis=0), X[train].std(axis=0)
    assert torch.equal(task.X_train, torch.as_tensor((X[train] - mean) / std, dtype=torch.float32))
    record = task.preprocessing
    assert record["x_mean"] == mean.tolist() and record["x_std"] == std.tolist() and record["y_mean"] is None
    assert record["feature_names"] == ["x1", "x2", "x3", "x4"] and record["kind"] == "regression"


def test_table_task_reuses_a_table(table_csv):
    table = read_table(table_csv)
    assert len(table) == 60 and table.names == ["a", "b", "c", "price"]
    assert torch.equal(table_task(table, "price").X_test, tabular_task(table_csv, "price").X_test)
