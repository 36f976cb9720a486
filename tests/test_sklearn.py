"""The scikit-learn estimators: sklearn's own estimator checks, then Pipeline, GridSearchCV,
string labels, parameters, clone and input validation.

The estimator checks run on small instances (width 8, at most 2 layers, 1 epoch per stage
and 1 final epoch) so that the whole module stays within seconds; lr and batch size are
raised so that those budgets still pass the score thresholds of ``check_regressors_train``
(R^2 > 0.5) and ``check_classifiers_train`` (accuracy > 0.83) with a wide margin.
Expected failures come from ``topogrow.sklearn.EXPECTED_FAILED_CHECKS`` (currently none).
"""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import load_diabetes, load_iris, make_regression
from sklearn.dummy import DummyRegressor
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from topogrow.nn import ResidualMLP
from topogrow.sklearn import EXPECTED_FAILED_CHECKS, GrowingClassifier, GrowingRegressor

CHECK_PARAMS = dict(width=8, max_depth=2, epochs_per_stage=1, final_epochs=1, lr=0.03, batch_size=32)


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS[type(estimator).__name__]


@parametrize_with_checks(
    [GrowingRegressor(**CHECK_PARAMS), GrowingClassifier(**CHECK_PARAMS)],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def regression_data():
    X, y = make_regression(n_samples=240, n_features=5, n_informative=3, noise=5.0, random_state=0)
    return X, y / y.std()


def test_pipeline_on_diabetes_beats_dummy():
    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    grown = TransformedTargetRegressor(  # targets are ~150 +- 77: scale them too
        regressor=make_pipeline(
            StandardScaler(),
            GrowingRegressor(
                width=8, max_depth=3, epochs_per_stage=2, final_epochs=3, lr=0.01, batch_size=32, random_state=0
            ),
        ),
        transformer=StandardScaler(),
    ).fit(X_train, y_train)
    dummy = DummyRegressor().fit(X_train, y_train)
    score, baseline = grown.score(X_test, y_test), dummy.score(X_test, y_test)
    assert score > baseline + 0.2, (score, baseline)  # R^2 0.29-0.37 over random_state 0-4; dummy ~0
    regressor = grown.regressor_[-1]
    assert 1 <= regressor.depth_ <= 3 and regressor.depth_ == regressor.model_.depth
    assert regressor.n_iter_ == regressor.history_.total_epochs > 0
    assert regressor.history_.stop_reason


def test_grid_search_over_strategies(regression_data):
    X, y = regression_data
    search = GridSearchCV(
        make_pipeline(StandardScaler(), GrowingRegressor(width=8, max_depth=2, epochs_per_stage=2, final_epochs=2)),
        {"growingregressor__strategy": ["td", "random"], "growingregressor__random_state": [0]},
        cv=2,
    ).fit(X, y)
    assert list(search.cv_results_["param_growingregressor__strategy"]) == ["td", "random"]
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_params_["growingregressor__strategy"] in ("td", "random")
    best = search.best_estimator_[-1]
    assert best.strategy == search.best_params_["growingregressor__strategy"]
    assert search.predict(X[:7]).shape == (7,)


def test_classifier_on_iris_with_string_labels():
    iris = load_iris()
    labels = iris.target_names[iris.target]  # "setosa", "versicolor", "virginica"
    X_train, X_test, y_train, y_test = train_test_split(
        iris.data, labels, test_size=0.3, random_state=0, stratify=labels
    )
    model = make_pipeline(
        StandardScaler(),
        GrowingClassifier(width=16, max_depth=2, epochs_per_stage=5, final_epochs=10, lr=0.01, random_state=0),
    ).fit(X_train, y_train)
    assert model.score(X_test, y_test) > 0.8
    assert list(model.classes_) == ["setosa", "versicolor", "virginica"]
    predicted = model.predict(X_test)
    assert predicted.dtype == labels.dtype and set(predicted) <= set(labels)
    proba = model.predict_proba(X_test)
    assert proba.shape == (len(X_test), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(model.classes_[proba.argmax(axis=1)], predicted)


def test_get_params_set_params_round_trip():
    params = dict(
        width=12,
        initial_depth=0,
        max_depth=3,
        strategy="random",
        epochs_per_stage=2,
        final_epochs=0,
        lr=0.005,
        lr_schedule="cosine",
        budget="40 epochs",
        batch_size=16,
        early_stopping=False,
        validation_fraction=0.0,
        n_iter_no_change=3,
        tol=1e-3,
        rollback=False,
        random_state=7,
        device="cpu",
        activation="z-tanh",
        verbose=False,
    )
    default = GrowingRegressor()
    assert set(default.get_params()) == set(params)
    assert default.set_params(**params) is default
    assert default.get_params() == params
    assert GrowingClassifier(**params).get_params() == params
    with pytest.raises(ValueError, match="Invalid parameter"):
        default.set_params(depth=3)
    pipeline = make_pipeline(StandardScaler(), GrowingClassifier())
    pipeline.set_params(growingclassifier__strategy="td-where", growingclassifier__width=4)
    assert pipeline[-1].strategy == "td-where" and pipeline[-1].width == 4


def test_clone_gives_an_unfitted_copy(regression_data):
    X, y = regression_data
    model = GrowingRegressor(width=8, max_depth=2, epochs_per_stage=1, final_epochs=1, random_state=3).fit(X, y)
    copy = clone(model)
    assert copy is not model and copy.get_params() == model.get_params()
    assert not hasattr(copy, "model_") and not hasattr(copy, "history_")
    with pytest.raises(NotFittedError):
        copy.predict(X)
    np.testing.assert_array_equal(copy.fit(X, y).predict(X), model.predict(X))


def test_nan_is_rejected_by_sklearn_validation(regression_data):
    X, y = regression_data
    X_nan = X.copy()
    X_nan[3, 1] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        GrowingRegressor().fit(X_nan, y)
    y_nan = y.copy()
    y_nan[5] = np.nan
    with pytest.raises(ValueError, match="Input y contains NaN"):
        GrowingRegressor().fit(X, y_nan)
    model = GrowingClassifier(width=4, max_depth=1, epochs_per_stage=1, final_epochs=1).fit(X, y > 0)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        model.predict(X_nan)
    with pytest.raises(ValueError, match="X has 4 features, but GrowingClassifier is expecting 5"):
        model.predict_proba(X[:, :4])


def test_random_state_makes_fits_reproducible_and_leaves_the_global_rng(regression_data):
    X, y = regression_data
    params = dict(width=8, max_depth=3, epochs_per_stage=1, final_epochs=1, strategy="random")
    state = torch.random.get_rng_state()
    first = GrowingRegressor(**params, random_state=11).fit(X, y)
    assert torch.equal(torch.random.get_rng_state(), state)
    second = GrowingRegressor(**params, random_state=11).fit(X, y)
    np.testing.assert_array_equal(first.predict(X), second.predict(X))
    assert [s.location for s in first.history_.stages] == [s.location for s in second.history_.stages]
    other = GrowingRegressor(**params, random_state=12).fit(X, y)
    assert not np.array_equal(first.predict(X), other.predict(X))


def test_multi_output_regression_and_target_shapes(regression_data):
    X, y = regression_data
    Y = np.column_stack([y, -2 * y, y**2])
    params = dict(width=8, max_depth=2, epochs_per_stage=1, final_epochs=1, random_state=0)
    model = GrowingRegressor(**params).fit(X, Y)
    assert model.n_outputs_ == 3 and model.model_.out_features == 3
    assert model.predict(X[:5]).shape == (5, 3)
    column = GrowingRegressor(**params).fit(X, y[:, None])
    assert column.predict(X[:5]).shape == (5, 1)
    flat = GrowingRegressor(**params).fit(X, y)
    assert flat.predict(X[:5]).shape == (5,)
    np.testing.assert_allclose(column.predict(X[:5])[:, 0], flat.predict(X[:5]))


def test_fit_builds_a_grown_residual_mlp(regression_data):
    X, y = regression_data
    model = GrowingRegressor(
        width=6, initial_depth=0, max_depth=2, epochs_per_stage=1, final_epochs=0, validation_fraction=0, random_state=0
    ).fit(X, y)
    assert isinstance(model.model_, ResidualMLP) and model.model_.width == 6
    assert not model.model_.training
    assert model.depth_ == len(model.history_.insertions) <= 2
    assert model.n_features_in_ == 5
    scratch = GrowingRegressor(width=6, initial_depth=2, strategy="scratch", final_epochs=2, random_state=0).fit(X, y)
    assert scratch.depth_ == 2 and scratch.n_iter_ == 2 and not scratch.history_.insertions


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"strategy": "tdd"}, "unknown strategy 'tdd'"),
        ({"width": 0}, "width must be an integer >= 1"),
        ({"max_depth": 2.5}, "max_depth must be an integer >= 1"),
        ({"initial_depth": -1}, "initial_depth must be an integer >= 0"),
        ({"validation_fraction": 1.0}, r"validation_fraction must be in \[0, 1\)"),
        ({"lr": 0}, "lr must be > 0"),
        ({"batch_size": True}, "batch_size must be an integer >= 1"),
        ({"activation": "relu"}, "unknown activation 'relu'"),
        ({"device": "gpu0"}, "unknown device 'gpu0'"),
    ],
)
def test_bad_hyper_parameters_fail_in_fit(regression_data, params, message):
    X, y = regression_data
    model = GrowingRegressor(**params)  # __init__ only stores them
    with pytest.raises(ValueError, match=message):
        model.fit(X, y)
    assert not hasattr(model, "n_features_in_")  # checked before the data: the estimator is untouched


def test_numpy_integer_hyper_parameters_are_accepted(regression_data):
    X, y = regression_data
    model = GrowingRegressor(
        width=np.int64(4), max_depth=np.int32(1), epochs_per_stage=np.int64(1), final_epochs=np.int64(1), random_state=0
    )
    assert model.fit(X, y).depth_ == 1


def test_classifier_needs_two_classes_and_rejects_continuous_targets(regression_data):
    X, y = regression_data
    with pytest.raises(ValueError, match="at least 2 classes, got 1 class"):
        GrowingClassifier().fit(X, np.full(len(X), "a"))
    with pytest.raises(ValueError, match="Unknown label type"):
        GrowingClassifier().fit(X, y)


def test_early_stopping_uses_scikit_learns_names_and_keeps_the_best_epoch():
    """early_stopping holds out validation_fraction and ends training after n_iter_no_change
    epochs without a relative improvement of tol; the model kept is the best epoch's."""
    g = np.random.RandomState(0)
    X = g.randn(300, 4)
    y = X[:, 0] + 0.5 * X[:, 1] ** 2 + 0.1 * g.randn(300)
    params = dict(width=8, max_depth=2, epochs_per_stage=40, final_epochs=60, lr=0.05, batch_size=32)
    model = GrowingRegressor(**params, n_iter_no_change=3, tol=1e-2, random_state=0).fit(X, y)
    history = model.history_
    assert model.n_iter_ < 40 + 40 + 60  # ended early
    assert model.best_validation_score_ == min(e.val_loss for e in history.epochs)
    # the last stage ended because of patience: 3 epochs after its best, or at its budget
    final = [e for e in history.epochs if e.stage == history.epochs[-1].stage]
    assert len(final) < 60
    off = GrowingRegressor(**params, early_stopping=False, n_iter_no_change=3, random_state=0).fit(X, y)
    assert off.best_validation_score_ is None and off.n_iter_ < 40 + 40 + 60
    with pytest.raises(ValueError, match="tol must be in"):
        GrowingRegressor(tol=0).fit(X, y)


def test_the_schedule_and_the_budget_reach_the_growth_loop(regression_data):
    X, y = regression_data
    model = GrowingRegressor(width=8, max_depth=3, lr_schedule="cosine", budget="25 epochs", random_state=0)
    model.fit(X, y)
    history = model.history_
    assert history.budget["given"] == "25 epochs"
    epoch = history.epochs[0].flops  # the initial network's first epoch
    assert history.flops["total"] <= history.budget["flops"] + 2 * epoch
    rates = [e.lr for e in history.epochs]
    assert rates[-1] < rates[0] * 0.1  # the cosine decayed over the budget
    with pytest.raises(ValueError, match="budget"):
        GrowingRegressor(budget="soon").fit(X, y)
