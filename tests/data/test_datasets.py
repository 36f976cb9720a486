"""Data files and tasks: the California housing file, where it is looked for, the seeded split,
and :func:`topogrow.data.load`."""

import numpy as np
import pytest
import torch

import topogrow.data
from topogrow.data import datasets, load
from topogrow.data.datasets import CALIFORNIA_FEATURES, load_california, read_statlib_california

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


@pytest.mark.california
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


@pytest.mark.california
def test_task_split_is_seeded_and_standardised():
    a, b, c = load("california", seed=0), load("california", seed=0), load("california", seed=1)
    assert torch.equal(a.X_train, b.X_train) and not torch.equal(a.X_train, c.X_train)
    assert len(a.X_train) + len(a.X_val) + len(a.X_test) == 20640
    assert a.X_train.mean(0).abs().max() < 1e-4 and (a.X_train.std(0) - 1).abs().max() < 1e-3
    assert a.y_train.shape[1] == 1 and a.metric_name == "test MSE"
    with pytest.raises(ValueError, match="did you mean 'california'"):
        load("californa")


def test_load_is_the_public_way_to_a_task():
    task = topogrow.data.load("synthetic", seed=3, n_train=50, n_samples=200)
    assert task.name == "synthetic" and task.kind == "regression" and len(task.X_train) == 50
    assert len(task.X_val) + len(task.X_test) == 72  # 16 % and 20 % of the 200 samples
    again = topogrow.data.load("synthetic", seed=3, n_train=50, n_samples=200)
    assert torch.equal(task.X_train, again.X_train) and torch.equal(task.y_test, again.y_test)
    assert set(topogrow.data.__all__) >= {"Task", "TASKS", "load", "register_task", "tabular_task"}
