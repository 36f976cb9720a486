"""Predictions in the user's units: the preprocessing saved with a model is applied to raw inputs
in any form and undone on the outputs; it survives save and load."""

import numpy as np
import pytest
import torch

import topogrow
from topogrow import ResidualMLP


def regressor():
    torch.manual_seed(0)
    model = ResidualMLP(3, 5, 1, 1)
    model.preprocessing = {
        "kind": "regression",
        "feature_names": ["a", "b", "c"],
        "target": "price",
        "x_mean": [1.0, -2.0, 10.0],
        "x_std": [2.0, 0.5, 4.0],
        "y_mean": [100.0],
        "y_std": [25.0],
        "classes": None,
        "data": None,
    }
    return model


def test_predict_applies_and_undoes_the_preprocessing_for_any_input_form(tmp_path):
    model = regressor()
    raw = np.array([[3.0, -1.0, 2.0], [1.0, -2.0, 10.0]])
    standardised = (raw - np.array([1.0, -2.0, 10.0])) / np.array([2.0, 0.5, 4.0])
    with torch.no_grad():
        expected = model(torch.tensor(standardised, dtype=torch.float32)).double().numpy()[:, 0] * 25.0 + 100.0
    forms = [raw, raw.tolist(), torch.tensor(raw, dtype=torch.float16), torch.tensor(raw), raw.astype(np.float32)]
    for form in forms[:2] + forms[3:]:
        np.testing.assert_allclose(model.predict(form), expected, rtol=1e-6)
    np.testing.assert_allclose(model.predict(forms[2]), expected, rtol=1e-2)  # float16 inputs round
    assert model.predict(raw[0]).shape == (1,)  # one sample, 1-D
    np.testing.assert_allclose(model.predict(raw[0]), expected[:1], rtol=1e-6)
    topogrow.save(model, tmp_path / "m")
    loaded = topogrow.load(tmp_path / "m")
    assert loaded.preprocessing == model.preprocessing
    np.testing.assert_allclose(loaded.predict(raw), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="expected 3 features per sample, got an array of shape"):
        loaded.predict(raw[:, :2])
    with pytest.raises(ValueError, match="1 sample"):
        loaded.predict([[np.nan, 1.0, 2.0]])


def test_a_classifier_predicts_labels_and_probabilities(tmp_path):
    torch.manual_seed(0)
    model = ResidualMLP(2, 4, 1, 3)
    model.preprocessing = {
        "kind": "classification",
        "x_mean": [0.0, 0.0],
        "x_std": [1.0, 1.0],
        "y_mean": None,
        "y_std": None,
        "classes": ["cat", "dog", "fox"],
    }
    X = np.random.RandomState(0).randn(20, 2)
    with torch.no_grad():
        logits = model(torch.tensor(X, dtype=torch.float32))
    labels = model.predict(X)
    assert list(labels) == [model.preprocessing["classes"][i] for i in logits.argmax(dim=1).tolist()]
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba, torch.softmax(logits.double(), dim=1).numpy(), rtol=1e-6)
    np.testing.assert_allclose(proba.sum(axis=1), np.ones(20))
    with pytest.raises(TypeError, match="needs a classifier"):
        regressor().predict_proba(X[:, :1].repeat(3, axis=1))


def test_without_preprocessing_predict_is_the_network_on_the_inputs():
    torch.manual_seed(0)
    model = ResidualMLP(2, 4, 1, 1).double()
    X = np.random.RandomState(1).randn(5, 2)
    with torch.no_grad():
        expected = model(torch.tensor(X)).numpy()[:, 0]
    np.testing.assert_allclose(model.predict(X), expected)
