"""scikit-learn estimators that grow a residual MLP in depth while it trains.

:class:`GrowingRegressor` and :class:`GrowingClassifier` wrap a
:class:`~topogrow.nn.ResidualMLP` and the growth loop :class:`~topogrow.Grower` behind
the usual ``fit`` / ``predict`` / ``score`` (and ``predict_proba``) interface, so they work
in a :class:`~sklearn.pipeline.Pipeline`, :class:`~sklearn.model_selection.GridSearchCV`,
:func:`~sklearn.base.clone`, ``cross_val_score`` and so on::

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from topogrow.sklearn import GrowingRegressor

    model = make_pipeline(StandardScaler(), GrowingRegressor(strategy="td", max_depth=4, random_state=0))
    model.fit(X_train, y_train).score(X_test, y_test)   # R^2

**Scale your inputs.** The estimators feed ``X`` to the network as given (cast to
float32); like :class:`~sklearn.neural_network.MLPRegressor` they train poorly on
unscaled features. Put a :class:`~sklearn.preprocessing.StandardScaler` in front of them
in a pipeline. Regression targets are not rescaled either: for targets far from unit
scale, wrap the regressor in :class:`~sklearn.compose.TransformedTargetRegressor`.

Conventions (scikit-learn's): ``__init__`` only stores the hyper-parameters; ``fit``
validates them and the data (sklearn's ``validate_data``, so NaN, inf, sparse input,
wrong shapes and feature-count mismatches are reported by scikit-learn), then sets
the learned attributes ending in ``_`` and returns ``self``. Given an integer
``random_state`` a fit is deterministic (on the CPU): the network's initialisation, the
internal validation split, the mini-batch order and the random strategies are all
seeded from it, and the global torch RNG is left as it was.

Needs scikit-learn >= 1.6 (``sklearn.utils.validation.validate_data`` and the
``__sklearn_tags__`` API).

Predictions evaluate the float32 weights in float64, so a sample's prediction does not
depend on which other samples share its batch (scikit-learn's subset-invariance check
asks for that to 1e-7; float32 matrix products differ in the last bits between batch
sizes).

Estimator checks
----------------
Both estimators pass scikit-learn's own estimator checks
(``sklearn.utils.estimator_checks.parametrize_with_checks``, legacy checks included; run
in ``tests/test_sklearn.py`` with small budgets). Expected failures: **none**;
:data:`EXPECTED_FAILED_CHECKS` is empty and is where any future one goes, with its
reason. Checks that do not apply, and why:

- sample-weight checks (``check_sample_weight_equivalence`` and friends): ``fit`` takes
  no ``sample_weight``, so scikit-learn does not generate them (and the ``*_sample_weights``
  checks it does generate return at once).
- multi-label classifier checks: not generated, ``classifier_tags.multi_label`` is False
  (multi-label targets are refused by ``check_classification_targets``).
- ``check_decision_proba_consistency``: a no-op, there is no ``decision_function``.
- ``check_estimators_partial_fit_n_features``: a no-op, there is no ``partial_fit``.
- ``check_array_api_input``: scikit-learn skips it unless ``SCIPY_ARRAY_API=1`` is set;
  with ``array_api_support=False`` it is the NumPy-only variant, which passes when run.
- sparse input: not supported; the sparse checks run and pass because ``validate_data``
  refuses sparse ``X`` with scikit-learn's ``TypeError``.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted
from torch.func import functional_call

try:
    from sklearn.utils.validation import validate_data
except ImportError as error:  # scikit-learn < 1.6
    raise ImportError("topogrow.sklearn needs scikit-learn >= 1.6 (sklearn.utils.validation.validate_data)") from error

from topogrow._validation import check_int
from topogrow.growth.config import GrowthConfig
from topogrow.growth.grower import Grower
from topogrow.nn.activations import prepare_activation
from topogrow.nn.mlp import ResidualMLP
from topogrow.training.epochs import resolve_device

__all__ = ["EXPECTED_FAILED_CHECKS", "GrowingClassifier", "GrowingRegressor"]

#: scikit-learn estimator checks that these estimators are known not to pass, with the
#: reason, per estimator class name. Pass ``expected_failed_checks=lambda est:
#: EXPECTED_FAILED_CHECKS[type(est).__name__]`` to ``parametrize_with_checks`` /
#: ``check_estimator``. Empty: every applicable check passes (see the module docstring
#: for the checks that do not apply).
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {
    "GrowingRegressor": {},
    "GrowingClassifier": {},
}

_PREDICT_BATCH = 8192


def _integer(name: str, value: Any, minimum: int) -> int:
    """``value`` as a Python int (numpy integers accepted, as scikit-learn's searches pass them),
    checked ``>= minimum``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        value = int(value)
    return check_int(name, value, minimum)


def _real(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class _Settings:
    """The checked hyper-parameters of one fit."""

    width: int
    initial_depth: int
    validation_fraction: float
    device: torch.device
    config: GrowthConfig


class _GrowingEstimator(BaseEstimator):
    """Shared hyper-parameters, validation, the growth run and batched prediction."""

    _loss = "mse"

    def __init__(
        self,
        width: int = 32,
        initial_depth: int = 1,
        max_depth: int = 4,
        strategy: str = "small-where",
        epochs_per_stage: int = 5,
        final_epochs: int = 500,
        lr: float = 1e-3,
        lr_schedule: str = "plateau",
        budget: float | str | None = None,
        batch_size: int = 128,
        early_stopping: bool = True,
        validation_fraction: float = 0.1,
        n_iter_no_change: int | str = "auto",
        tol: float = 1e-4,
        rollback: bool = True,
        random_state: int | np.random.RandomState | None = None,
        device: str | None = "cpu",
        activation: str = "silu-tanh",
        verbose: bool = False,
    ) -> None:
        self.width = width
        self.initial_depth = initial_depth
        self.max_depth = max_depth
        self.strategy = strategy
        self.epochs_per_stage = epochs_per_stage
        self.final_epochs = final_epochs
        self.lr = lr
        self.lr_schedule = lr_schedule
        self.budget = budget
        self.batch_size = batch_size
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.rollback = rollback
        self.random_state = random_state
        self.device = device
        self.activation = activation
        self.verbose = verbose

    # ------------------------------------------------------------- validation
    def _check_params(self) -> _Settings:
        """Every hyper-parameter checked, before any data is looked at (so a bad value
        leaves the estimator as it was). Errors are ``ValueError`` naming the parameter."""
        fraction = _real("validation_fraction", self.validation_fraction)
        if not 0 <= fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction!r}")
        if not isinstance(self.early_stopping, (bool, np.bool_)):
            raise ValueError(f"early_stopping must be True or False, got {self.early_stopping!r}")
        if not isinstance(self.rollback, (bool, np.bool_)):
            raise ValueError(f"rollback must be True or False, got {self.rollback!r}")
        tol = _real("tol", self.tol)
        if not 0 < tol < 1:
            raise ValueError(f"tol must be in (0, 1) (a relative improvement), got {self.tol!r}")
        device = resolve_device(self.device)
        prepare_activation(self.activation)
        config = GrowthConfig(
            strategy=self.strategy,
            max_depth=_integer("max_depth", self.max_depth, 1),
            epochs_per_stage=_integer("epochs_per_stage", self.epochs_per_stage, 1),
            final_epochs=_integer("final_epochs", self.final_epochs, 0),
            lr=_real("lr", self.lr),
            batch_size=_integer("batch_size", self.batch_size, 1),
            device=str(device),
            lr_schedule=self.lr_schedule,
            budget=self.budget,
            early_stopping_patience=self.n_iter_no_change
            if self.n_iter_no_change == "auto"
            else _integer("n_iter_no_change", self.n_iter_no_change, 1),
            min_delta=tol,
            rollback=bool(self.rollback),
        )
        return _Settings(
            width=_integer("width", self.width, 1),
            initial_depth=_integer("initial_depth", self.initial_depth, 0),
            validation_fraction=fraction if self.early_stopping else 0.0,
            device=device,
            config=config,
        )

    # ------------------------------------------------------------------ fitting
    def _fit(self, settings: _Settings, X: np.ndarray, y: torch.Tensor, n_outputs: int) -> None:
        """Grow a ResidualMLP on validated ``X`` (2-D) and a target tensor ``y``."""
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        config, device = settings.config.replace(seed=seed), settings.device
        x = torch.tensor(np.asarray(X, dtype=np.float32))
        n = x.shape[0]
        n_val = int(settings.validation_fraction * n)
        if n_val >= 1 and n - n_val >= 1:
            order = torch.from_numpy(np.random.RandomState(seed).permutation(n))
            train = (x[order[n_val:]], y[order[n_val:]])
            val = (x[order[:n_val]], y[order[:n_val]])
        else:  # too few samples to hold some out: the training loss drives the stop rules
            train, val = (x, y), None

        cuda = (
            [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
        )
        with torch.random.fork_rng(devices=cuda):  # seed the initialisation; leave the caller's RNG alone
            torch.manual_seed(seed)
            model = ResidualMLP(x.shape[1], settings.width, settings.initial_depth, n_outputs, self.activation)
            grower = Grower(model, self._loss, config)
            with warnings.catch_warnings():  # said once below, as scikit-learn says it
                warnings.filterwarnings("ignore", message="training diverged", category=RuntimeWarning)
                history = grower.fit(train, val, progress=bool(self.verbose))
        if history.diverged:
            warnings.warn(history.diverged, ConvergenceWarning, stacklevel=3)
        self.model_ = grower.model.eval()
        self.history_ = history
        self.depth_ = self.model_.depth
        self.n_iter_ = history.total_epochs
        scores = [e.val_loss for e in history.epochs]
        self.best_validation_score_ = min(scores) if val is not None and scores else None

    @torch.no_grad()
    def _forward(self, X: Any) -> np.ndarray:
        """The network's raw outputs ``(N, out)`` on validated ``X``.

        The float32 weights are evaluated in float64 (``functional_call`` on float64
        copies of the parameters; the model is not changed): a sample's prediction then
        does not depend, even in the last float32 bits, on which other samples share its
        batch (BLAS picks kernels by batch size).
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        parameters = {
            name: tensor.double()
            for name, tensor in {**dict(self.model_.named_parameters()), **dict(self.model_.named_buffers())}.items()
        }
        device = next(iter(parameters.values())).device
        was_training = self.model_.training
        self.model_.eval()
        try:
            outputs = []
            for start in range(0, X.shape[0], _PREDICT_BATCH):
                batch = torch.tensor(np.asarray(X[start : start + _PREDICT_BATCH], dtype=np.float64), device=device)
                outputs.append(functional_call(self.model_, parameters, (batch,)).cpu())
        finally:
            self.model_.train(was_training)
        return torch.cat(outputs).numpy()


class GrowingRegressor(RegressorMixin, _GrowingEstimator):
    """A residual MLP that grows in depth while it trains (MSE loss), as a scikit-learn regressor.

    Training follows :class:`topogrow.Grower`: train ``epochs_per_stage`` epochs, insert a
    residual layer where and how ``strategy`` says, repeat until ``max_depth`` layers (or
    a stop rule: no positive topological derivative, no validation improvement for two
    stages), then train the grown network until it has converged (at most ``final_epochs``).
    Adam, float32, the learning rate halved on plateaus (``lr_schedule``).

    Inputs are used as given: standardise them (``make_pipeline(StandardScaler(),
    GrowingRegressor())``). Targets are not rescaled either.

    Parameters
    ----------
    width : int, default=32
        State width of the residual MLP.
    initial_depth : int, default=1
        Residual layers to start from (0 allowed).
    max_depth : int, default=4
        Stop growing at this many residual layers.
    strategy : str, default="small-where"
        Where and how to insert a layer: ``"small-where"`` (a small random layer where the
        topological derivative is largest, the library's default), ``"td"`` (the paper's rule),
        ``"td-eigenspace"``, ``"td-where"``,
        ``"td-how"``, ``"random"``, ``"zero"``, or ``"scratch"`` (no growth: the network
        keeps ``initial_depth`` layers and trains ``final_epochs`` epochs).
    epochs_per_stage : int, default=5
        Training epochs between insertions.
    final_epochs : int, default=500
        The most training epochs after growth stops (training ends earlier when converged).
    lr : float, default=1e-3
        Adam learning rate (the initial one).
    lr_schedule : str, default="plateau"
        ``"plateau"`` (halve after 5 epochs without improvement), ``"cosine"`` (one decay over the
        planned run) or ``"constant"``; insertions keep the current rate.
    budget : float, str or None, default=None
        Compute the fit may spend: FLOPs, or ``"<N> epochs"`` of the initial network.
    batch_size : int, default=128
        Mini-batch size.
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the data (seeded split) and judge on its loss: every
        stage and the final training keep their best epoch and end after ``n_iter_no_change``
        epochs without a relative improvement of ``tol``; insertions are kept only if they help
        (``rollback``). With ``False`` (as in scikit-learn) nothing is held out and the training
        loss is judged instead. On by default, unlike scikit-learn's MLPs: growth decides on it.
    validation_fraction : float, default=0.1
        Fraction of the training data held out when ``early_stopping`` (0, or a set too small to
        split, uses the training loss instead).
    n_iter_no_change : int or "auto", default="auto"
        Epochs without improvement that end a stage or the final training; ``"auto"``: as many as
        halving the learning rate three times with nothing gained takes (24).
    tol : float, default=1e-4
        The relative improvement of the loss that counts (``min_delta`` of the growth loop).
    rollback : bool, default=True
        Keep an insertion only if the stage after it improves the loss; else undo it and stop growing.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation, the split, the batch order and random strategies.
        Pass an int for reproducible fits.
    device : str or None, default="cpu"
        Torch device to train on (``"cuda"``, ``"cuda:1"``...); ``None`` picks CUDA when
        available. Predictions come back as NumPy arrays either way.
    activation : str, default="silu-tanh"
        Activation of the residual layers (``"silu-tanh"`` or ``"z-tanh"``).
    verbose : bool, default=False
        Show a progress bar while training.

    Attributes
    ----------
    model_ : ResidualMLP
        The grown network (in eval mode).
    history_ : GrowthHistory
        Per-epoch losses, per-stage records (eigenvalues, insertions) and the stop reason.
    depth_ : int
        Residual layers of the grown network.
    n_iter_ : int
        Training epochs run in all.
    best_validation_score_ : float or None
        The lowest validation loss seen (``None`` without a held-out set), as scikit-learn's
        ``best_validation_score_`` (a loss here: lower is better).
    n_outputs_ : int
        Number of regression targets.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of str
        Feature names seen during ``fit`` (only when ``X`` has string column names).
    """

    def fit(self, X: Any, y: Any) -> GrowingRegressor:
        """Grow and train the network on ``X`` ``(n_samples, n_features)`` and ``y``
        ``(n_samples,)`` or ``(n_samples, n_outputs)``. Returns ``self``."""
        settings = self._check_params()
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True)
        target = np.asarray(y, dtype=np.float32)
        self._y_one_dimensional = target.ndim == 1
        target = target.reshape(len(target), -1)
        self.n_outputs_ = target.shape[1]
        self._fit(settings, X, torch.tensor(target), self.n_outputs_)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predictions ``(n_samples,)``, or ``(n_samples, n_outputs)`` if fitted on 2-D targets."""
        output = self._forward(X)
        return output[:, 0] if self._y_one_dimensional else output

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


class GrowingClassifier(ClassifierMixin, _GrowingEstimator):
    """A residual MLP that grows in depth while it trains (cross-entropy loss), as a
    scikit-learn classifier.

    Labels may be of any type scikit-learn accepts (strings, integers...); they are
    encoded with a :class:`~sklearn.preprocessing.LabelEncoder` and the network has one
    output (logit) per class, so binary and multi-class problems are handled alike.
    ``predict_proba`` is the softmax of the logits. Multi-label / multi-output targets
    are not supported. At least two classes are needed.

    Inputs are used as given: standardise them (``make_pipeline(StandardScaler(),
    GrowingClassifier())``).

    The parameters are those of :class:`GrowingRegressor`.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, sorted.
    model_ : ResidualMLP
        The grown network (in eval mode), one output (logit) per class. The other fitted
        attributes (``history_``, ``depth_``, ``n_iter_``, ``n_features_in_``,
        ``feature_names_in_``) are as for :class:`GrowingRegressor`.
    """

    _loss = "cross_entropy"

    def fit(self, X: Any, y: Any) -> GrowingClassifier:
        """Grow and train the network on ``X`` ``(n_samples, n_features)`` and labels ``y``
        ``(n_samples,)``. Returns ``self``."""
        settings = self._check_params()
        X, y = validate_data(self, X, y)
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(
                f"GrowingClassifier needs samples of at least 2 classes, got 1 class ({self.classes_[0]!r})"
            )
        self._fit(settings, X, torch.tensor(encoder.transform(y), dtype=torch.long), len(self.classes_))
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(n_samples, n_classes)``, columns in the order of ``classes_``."""
        logits = torch.from_numpy(self._forward(X))
        return torch.softmax(logits, dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each sample (labels as in ``classes_``)."""
        scores = self._forward(X)
        return self.classes_[np.argmax(scores, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        tags.classifier_tags.multi_label = False
        return tags
