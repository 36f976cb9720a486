"""The contract of a model that grows in depth, and the registry of models.

:class:`GrowableModel` declares every member the core (:mod:`topogrow.core`) and the
growth loop (:mod:`topogrow.growth`) use, and implements once what every model shares:
the checks of :meth:`~GrowableModel.insert_layer` and :meth:`~GrowableModel.insert_block`.
A model subclasses it, provides the abstract members and a few small hooks, and registers
itself in :data:`MODELS` so that checkpoints, the experiment runner and the CLI find it::

    @register_model("my-net")
    class MyNet(GrowableModel):
        ...

A residual network of your own modules needs no subclass: ``as_growable(stem, blocks, head)`` or
``as_growable(sequential)`` (:func:`topogrow.nn.as_growable`) returns a growable model that keeps them.
"""

from __future__ import annotations

import abc
import copy
import itertools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from topogrow._registry import Registry
from topogrow._validation import check_int
from topogrow.nn.activations import prepare_activation
from topogrow.nn.blocks import block_name, rebuild_block

__all__ = ["CONTRACT", "GROWTH_METADATA", "MODELS", "GrowableModel", "register_model"]

#: The key of a state dict's metadata (``state_dict()._metadata[prefix]``) under which a grown
#: model records how it grew since it was built: ``{"start_depth": d, "changes": [...]}``, each
#: change ``["insert", location, "layer" | block name | None]`` or ``["remove", location]``.
GROWTH_METADATA = "topogrow_growth"

#: Every member of a growable model that the core and the growth loop use.
CONTRACT = (
    "forward_states",
    "insertion_kind",
    "insertion_shape",
    "activation_curvature",
    "depth",
    "locations",
    "insert_layer",
    "insert_block",
    "spec",
    "n_parameters",
    "head_modules",
    "new_activation",
)


class GrowableModel(nn.Module, metaclass=abc.ABCMeta):
    """Base of every model that grows in depth: a residual network seen as a discrete
    dynamical system ``x_{t+1} = x_t + f_t(x_t)`` with states ``x_0, ..., x_T``.

    The members the core and the growth loop use (:data:`CONTRACT`):

    - ``forward_states(x) -> (prediction, [x_0, ..., x_T])``: the prediction and one
      state per insertion location, in the order of :attr:`locations` (abstract);
    - ``insertion_kind(location)``: the closed-form layer kind inserted there
      (:mod:`topogrow.core.layer_kinds`; abstract);
    - ``insertion_shape(location) -> (n, m)``: the shape of the rows ``[W | b]`` of a
      layer inserted there; ``n`` is the state's feature dimension (abstract);
    - ``activation_curvature``: sigma''(0) of the inserted layers' activation (an
      attribute, set with :meth:`_init_activation`);
    - ``depth``: the number of residual layers T;
    - ``locations``: the insertion locations, ``range(len(locations))``; location l is a
      state after which a layer can go;
    - ``insert_layer(location, weight=None, bias=None)``: insert the closed-form layer,
      zero (the exact identity) by default; returns it;
    - ``insert_block(location, module)``: insert any residual module ``x -> x + g(x)``
      that keeps the state's shape; returns it;
    - ``spec()``: the architecture as a JSON-able dict, ``type(model)(**spec)`` rebuilds
      it (abstract);
    - ``n_parameters()``: the number of parameters;
    - ``head_modules()``: the modules after the last state (``[self.head]`` by default);
    - ``new_activation()``: a fresh copy of the activation of inserted layers.

    :func:`~topogrow.nn.as_growable` provides all of them for a network of your own modules.

    Defaults here are for models whose residual layers form one ``nn.ModuleList``
    ``self.layers`` (locations ``0..depth``); a model laid out otherwise overrides
    :attr:`depth`, :attr:`locations` and :meth:`_place`. Hooks a subclass provides:

    - ``_new_layer(location)``: a fresh closed-form layer for ``location`` (default
      initialisation; :meth:`insert_layer` loads the rows into it) (abstract);
    - ``_state_shape(location)``: the shape of one sample's state at ``location``, to
      probe an inserted module with (abstract);
    - ``_state_shape_text(location)``: that shape as error messages say it (default: the
      shape with ``batch`` in front);
    - ``_weight_shapes(location)``: the accepted shapes of ``weight`` in
      :meth:`insert_layer` (default: ``(n, m - 1)``);
    - ``_place(location, module)``: put an inserted layer or module at ``location``.
    """

    activation_name: str
    activation_curvature: float
    head: nn.Module
    layers: Any
    #: How the training data were transformed (see :mod:`topogrow.nn.prediction`), saved with the
    #: model; ``None``: inputs and outputs are used as they are.
    preprocessing: dict[str, Any] | None = None

    # ------------------------------------------------------------ contract
    @abc.abstractmethod
    def forward_states(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The prediction and the states ``[x_0, ..., x_T]``, one per location."""

    @abc.abstractmethod
    def insertion_kind(self, location: int) -> Any:
        """The layer kind (:mod:`topogrow.core.layer_kinds`) inserted at ``location``."""

    @abc.abstractmethod
    def insertion_shape(self, location: int) -> tuple[int, int]:
        """Shape ``(n, m)`` of the rows ``[W | b]`` of a layer inserted at ``location``."""

    @abc.abstractmethod
    def spec(self) -> dict[str, Any]:
        """The architecture as a JSON-able dict: ``type(self)(**self.spec())`` rebuilds it."""

    @classmethod
    def for_data(
        cls, input_shape: tuple[int, ...], out_features: int, width: int, depth: int, activation: Any = None
    ) -> GrowableModel:
        """A fresh model for samples of ``input_shape`` (no batch dimension) and ``out_features``
        outputs, of state width ``width`` and ``depth`` residual layers: what ``topogrow run
        --model NAME --width W --initial-depth D`` builds. A model that the command line should
        build fresh implements it (a spec alone rebuilds any model)."""
        raise NotImplementedError(
            f"{cls.__name__} is built from its spec only; implement {cls.__name__}.for_data to build it fresh"
        )

    @property
    def depth(self) -> int:
        """The number of residual layers T."""
        return len(self.layers)

    @property
    def locations(self) -> range:
        """Insertion locations ``0..depth`` (state x_l after which a layer goes)."""
        return range(self.depth + 1)

    def n_parameters(self) -> int:
        """The number of parameters."""
        return sum(p.numel() for p in self.parameters())

    def predict(self, X: Any) -> Any:
        """Predictions for raw inputs ``X`` (numpy, pandas, lists or tensors of any float dtype; one
        sample or many) in the user's units: the saved preprocessing is applied on the way in and
        undone on the way out; class labels for a classifier (:func:`topogrow.nn.prediction.predict`)."""
        from topogrow.nn.prediction import predict

        return predict(self, X)

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities ``(N, n_classes)`` for raw inputs ``X`` (a classifier only)."""
        from topogrow.nn.prediction import predict_proba

        return predict_proba(self, X)

    def head_modules(self) -> list[nn.Module]:
        """The modules after the last state, that map it to the prediction: ``[self.head]``."""
        return [self.head]

    def new_activation(self) -> nn.Module:
        """A fresh copy of the activation of inserted layers (each layer owns its own)."""
        return copy.deepcopy(self._activation)

    def insert_layer(
        self, location: int, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> nn.Module:
        """Insert the closed-form layer ``x -> x + sigma(W x + b)`` after state ``location``.

        ``weight`` has one of the shapes of :meth:`_weight_shapes` (``(n, m - 1)`` for
        ``(n, m) = insertion_shape(location)``), ``bias`` is ``(n,)``; both must be finite
        and are zeros by default: then the network's outputs are exactly unchanged.
        Returns the new layer (already on the model's device and dtype).
        """
        location = self._check_location(location)
        n, m = self.insertion_shape(location)
        shapes = self._weight_shapes(location)
        weight = torch.zeros(n, m - 1) if weight is None else torch.as_tensor(weight)
        bias = torch.zeros(n) if bias is None else torch.as_tensor(bias)
        if tuple(weight.shape) not in shapes:
            raise ValueError(f"weight must have shape {' or '.join(map(str, shapes))}, got {tuple(weight.shape)}")
        if tuple(bias.shape) != (n,):
            raise ValueError(f"bias must have shape {(n,)}, got {tuple(bias.shape)}")
        if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
            raise ValueError("weight and bias of an inserted layer must be finite")
        reference = self._reference()
        layer = self._new_layer(location).to(device=reference.device, dtype=reference.dtype)
        layer.load_rows(torch.cat([weight.reshape(n, -1), bias[:, None]], dim=1))
        self._place(location, layer)
        self._log_change(["insert", location, "layer"])
        return layer

    def insert_block(self, location: int, module: nn.Module) -> nn.Module:
        """Insert a residual module (``x -> x + g(x)``, e.g. a ``ResidualBlock``) after state ``location``.

        The module is moved to the model's device and dtype and must keep the shape of the
        state at ``location`` (checked on a zero probe, in eval mode: no side effects); the
        depth grows by one. Returns the module. :meth:`spec` records a named
        :class:`~topogrow.nn.blocks.ResidualBlock` by its name.
        """
        location = self._check_location(location)
        if not isinstance(module, nn.Module):
            raise TypeError(f"expected an nn.Module, got {type(module).__name__}")
        reference = self._reference()
        module = module.to(device=reference.device, dtype=reference.dtype)
        probe = torch.zeros(1, *self._state_shape(location), device=reference.device, dtype=reference.dtype)
        training = module.training
        module.eval()
        try:
            with torch.no_grad():
                out = module(probe)
        finally:
            module.train(training)
        if not isinstance(out, torch.Tensor) or out.shape != probe.shape:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"an inserted module must map {self._state_shape_text(location)} to the same shape, got {shape}"
            )
        self._place(location, module)
        self._log_change(["insert", location, block_name(module)])
        return module

    # ------------------------------------------------------- growth in state dicts
    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Any:
        """``nn.Module.state_dict``; a model that grew since it was built also records how
        (:data:`GROWTH_METADATA`, in the state dict's ``_metadata``, which ``torch.save`` keeps), so
        that :meth:`load_state_dict` of a model built as this one was grows it the same way first."""
        state = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        log = getattr(self, "_growth_log", None)
        metadata = getattr(state, "_metadata", None)
        if log and metadata is not None:
            growth = {"start_depth": self._growth_start, "changes": [list(change) for change in log]}
            metadata.setdefault(prefix[:-1], {})[GROWTH_METADATA] = growth
        return state

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args: Any) -> None:
        """Replay the insertions the state dict records before its tensors load (children load
        after this), then load as ``nn.Module`` does."""
        growth = local_metadata.get(GROWTH_METADATA) if isinstance(local_metadata, dict) else None
        if growth is not None:
            self._replay_growth(growth)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)

    def _replay_growth(self, growth: dict[str, Any]) -> None:
        """Grow as the saved model grew, if this model is that model before (part of) its growth."""
        start, changes = int(growth["start_depth"]), [list(change) for change in growth["changes"]]
        final = start + sum(1 if change[0] == "insert" else -1 for change in changes)
        log = getattr(self, "_growth_log", None) or []
        own_start = self._growth_start if log else self.depth
        if own_start == start and changes[: len(log)] == log:
            for change in changes[len(log) :]:
                self._apply_change(change)
        elif self.depth != final:
            raise ValueError(
                f"the state dict is of a {type(self).__name__} grown from depth {start} to depth {final}, "
                f"but this one has depth {self.depth} and grew differently; build it at depth {start} "
                f"(as the saved one was built) or at depth {final}, then load"
            )

    def _apply_change(self, change: list[Any]) -> None:
        """One recorded change: insert a fresh layer or registered block (its values load next), or remove one."""
        if change[0] == "remove":
            self.remove_layer(int(change[1]))
            return
        location, kind = int(change[1]), change[2]
        if kind == "layer":
            self.insert_layer(location)
        elif isinstance(kind, str):
            self.insert_block(location, rebuild_block(kind, self, location))
        else:
            raise ValueError(
                f"the state dict's model had a module of its own inserted at location {location}, which "
                "cannot be rebuilt from a state dict; insert the same module there before loading"
            )

    def _log_change(self, change: list[Any]) -> None:
        """Record an insertion or a removal (for :meth:`state_dict`)."""
        if not getattr(self, "_growth_log", None):
            self._growth_log: list[list[Any]] = []
            self._growth_start = self.depth - (1 if change[0] == "insert" else -1)
        self._growth_log.append(change)

    # --------------------------------------------------------------- hooks
    @abc.abstractmethod
    def _new_layer(self, location: int) -> nn.Module:
        """A fresh closed-form layer for ``location`` (with ``load_rows``), default-initialised."""

    @abc.abstractmethod
    def _state_shape(self, location: int) -> tuple[int, ...]:
        """The shape of one sample's state at ``location`` (the probe of :meth:`insert_block`)."""

    def _state_shape_text(self, location: int) -> str:
        """The state's shape as messages say it: ``(batch, ...)``."""
        return f"(batch, {', '.join(map(str, self._state_shape(location)))})"

    def _weight_shapes(self, location: int) -> tuple[tuple[int, ...], ...]:
        """The shapes :meth:`insert_layer` accepts for ``weight``: ``(n, m - 1)``."""
        n, m = self.insertion_shape(location)
        return ((n, m - 1),)

    def _place(self, location: int, module: nn.Module) -> None:
        """Put an inserted layer or module after state ``location`` (default: into ``self.layers``)."""
        self.layers.insert(location, module)

    def remove_layer(self, location: int) -> nn.Module:
        """Remove and return the residual layer right after state ``location``: the inverse of
        ``insert_layer(location)`` or ``insert_block(location, ...)`` (a rolled-back insertion)."""
        location = self._check_location(location)
        layer = self._take(location)
        self._log_change(["remove", location])
        return layer

    def _take(self, location: int) -> nn.Module:
        """Remove the layer after state ``location`` (default: from ``self.layers``)."""
        if location >= len(self.layers):
            raise ValueError(f"no residual layer after state {location} (depth {self.depth})")
        layer = self.layers[location]
        del self.layers[location]
        return layer

    # ------------------------------------------------------------- helpers
    def _init_activation(self, activation: str | nn.Module | None) -> None:
        """Set ``activation_name``, the activation of inserted layers and ``activation_curvature``."""
        self.activation_name, self._activation, self.activation_curvature = prepare_activation(activation)

    def _check_location(self, location: Any) -> int:
        """``location`` if it is an integer in ``0..len(locations) - 1``; else ``ValueError``."""
        return check_int("location", location, 0, len(self.locations) - 1)

    def _reference(self) -> torch.Tensor:
        """A parameter whose device and dtype inserted modules take (the head's weight first)."""
        return next(itertools.chain(*(module.parameters() for module in self.head_modules()), self.parameters()))


#: Growable models by name (``"mlp"``, ``"cnn"``, ``"vit"``): the experiment runner's and the
#: CLI's ``--model`` choices; checkpoints rebuild any class registered here by its ``__name__``.
MODELS: Registry[type[GrowableModel]] = Registry("model")

M = TypeVar("M", bound=type)


def check_square_images(input_shape: tuple[int, ...], name: str) -> None:
    """Raise unless ``input_shape`` is square images ``(C, H, H)``."""
    if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
        raise ValueError(f"model '{name}' needs square images (C, H, H), got inputs {tuple(input_shape)}")


def register_model(name: str, *, help: str = "", overwrite: bool = False) -> Callable[[M], M]:
    """A class decorator that registers a growable model class in :data:`MODELS` under ``name``.

    The class must be an ``nn.Module`` with every member of :data:`CONTRACT` (subclass
    :class:`GrowableModel`) and must be constructible from its ``spec()``. Raises
    ``TypeError`` otherwise, ``ValueError`` if ``name`` is taken (unless ``overwrite=True``).
    """

    def register(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"model {name!r}: expected an nn.Module subclass, got {cls!r}")
        # activation_curvature is an instance attribute (set by _init_activation)
        missing = [member for member in CONTRACT if member != "activation_curvature" and not hasattr(cls, member)]
        if missing:
            raise TypeError(
                f"model {name!r}: {cls.__name__} lacks {', '.join(missing)} of the growable-model contract "
                "(subclass topogrow.nn.GrowableModel)"
            )
        abstract = sorted(getattr(cls, "__abstractmethods__", ()))
        if abstract:
            raise TypeError(f"model {name!r}: {cls.__name__} does not implement {', '.join(abstract)}")
        taken = [
            other
            for key, other in MODELS.items()
            if key != name and other.__name__ == cls.__name__ and other is not cls
        ]
        if taken:
            raise ValueError(
                f"model {name!r}: a model class named {cls.__name__} is already registered; checkpoints "
                "name models by class name, so it must be unique"
            )
        return MODELS.register(name, cls, help=help, overwrite=overwrite)

    return register
