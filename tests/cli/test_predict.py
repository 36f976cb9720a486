"""From your own table to predictions in your units: topogrow run my.csv -> topogrow predict, and
topogrow.load(run).predict giving the same numbers."""

import csv
import hashlib
import json

import numpy as np
import pytest

import topogrow
from helpers import write_csv
from topogrow.cli import main

TINY = ["--epochs-per-stage", "2", "--final-epochs", "2", "--max-depth", "2", "--width", "6", "--quiet"]


def test_run_then_predict_gives_the_models_predictions_in_the_users_units(tmp_path, capsys):
    g = np.random.RandomState(0)
    X = g.randn(120, 3)
    y = 1000 + 300 * X[:, 0] + 10 * g.randn(120)  # far from standardised units
    write_csv(tmp_path / "my.csv", ["a", "b", "c", "price"], np.column_stack([X, y]).tolist())
    write_csv(tmp_path / "new.csv", ["c", "a", "b"], X[:7][:, [2, 0, 1]].tolist())  # other order, no target
    assert main(["run", str(tmp_path / "my.csv"), "--target", "price", "--out", str(tmp_path / "r"), *TINY]) == 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "r"), str(tmp_path / "new.csv"), "--out", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.reader((tmp_path / "p.csv").read_text().splitlines()))
    assert rows[0] == ["price"] and len(rows) == 8
    from_cli = np.array([float(r[0]) for r in rows[1:]])
    model = topogrow.load(tmp_path / "r")
    np.testing.assert_allclose(from_cli, model.predict(X[:7]), rtol=1e-7)
    assert 500 < from_cli.mean() < 1500  # in the data's units, not standardised ones
    assert model.preprocessing["feature_names"] == ["a", "b", "c"] and model.preprocessing["target"] == "price"
    saved = json.loads((tmp_path / "r" / "model.json").read_text())
    assert saved["preprocessing"]["data"]["sha256"] == hashlib.sha256((tmp_path / "my.csv").read_bytes()).hexdigest()
    assert set(saved["metadata"]["versions"]) >= {"topogrow", "torch", "python"}
    assert saved["metadata"]["command"][:2] == ["topogrow", "run"] and saved["metadata"]["growth"]["max_depth"] == 2


def test_predict_a_classifier_gives_labels_and_probabilities(tmp_path, capsys):
    g = np.random.RandomState(1)
    X = g.randn(150, 2)
    labels = np.where(X[:, 0] > 0, "high", "low")
    write_csv(tmp_path / "c.csv", ["x1", "x2", "kind"], [[*row, label] for row, label in zip(X, labels, strict=True)])
    assert main(["run", str(tmp_path / "c.csv"), "--target", "kind", "--out", str(tmp_path / "r"), *TINY]) == 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "r"), str(tmp_path / "c.csv")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "kind,p(high),p(low)" and len(lines) == 151
    model = topogrow.load(tmp_path / "r")
    assert [line.split(",")[0] for line in lines[1:]] == list(model.predict(X))


def test_predict_names_a_missing_column(tmp_path, capsys):
    g = np.random.RandomState(2)
    write_csv(tmp_path / "my.csv", ["a", "b", "y"], g.randn(80, 3).tolist())
    assert main(["run", str(tmp_path / "my.csv"), "--target", "y", "--out", str(tmp_path / "r"), *TINY]) == 0
    write_csv(tmp_path / "bad.csv", ["a", "z"], g.randn(3, 2).tolist())
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "r"), str(tmp_path / "bad.csv")]) == 2
    assert "no column 'b' (the model was trained on ['a', 'b'])" in capsys.readouterr().err


@pytest.mark.parametrize("form", ["numpy", "list", "one sample"])
def test_load_predict_takes_any_form(tmp_path, form, capsys):
    g = np.random.RandomState(3)
    X = g.randn(60, 2)
    write_csv(tmp_path / "my.csv", ["a", "b", "y"], np.column_stack([X, 5 * X[:, 0]]).tolist())
    assert main(["run", str(tmp_path / "my.csv"), "--target", "y", "--out", str(tmp_path / "r"), *TINY]) == 0
    model = topogrow.load(tmp_path / "r")
    expected = model.predict(X[:1])
    given = {"numpy": X[:1], "list": X[:1].tolist(), "one sample": X[0]}[form]
    np.testing.assert_allclose(model.predict(given), expected)
