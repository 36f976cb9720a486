"""The options of ``run`` and ``compare``: one per :class:`~topogrow.growth.GrowthConfig` field, generated
from the dataclass (type from the annotation, default from the field, help from the docstring), the
data, network and output options, and :func:`configs`, which turns them back into the configs."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from topogrow._validation import one_line, unknown_name_error
from topogrow.data import TASKS
from topogrow.experiments.experiment import MODELS, ModelConfig
from topogrow.growth import STRATEGIES, GrowthConfig
from topogrow.growth.config import AUTOCAST, LOCATION_METHODS, LR_SCHEDULES, SCHEDULES
from topogrow.growth.line_search import LINE_SEARCHES
from topogrow.growth.strategies import growth_strategies
from topogrow.nn.blocks import BLOCKS

#: GrowthConfig fields listed under "training" in ``--help`` (the others under "growth").
TRAINING_FIELDS = ("lr", "weight_decay", "batch_size", "seed", "device", "grad_clip", "accumulate_batches", "autocast")
#: Config fields that take Python objects to matter (a callable schedule), so not options.
PYTHON_ONLY_FIELDS = ("lr_interval",)
_ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")  # :data:`a.b.NAME` -> a.b.NAME; :data:`~a.b.NAME` -> NAME
_LITERAL = re.compile(r"``([^`]*)``")


def attribute_docs(cls: type) -> dict[str, str]:
    """The descriptions in the ``Attributes:`` section of a Google-style class docstring, by name.

    Each entry is ``name: text`` at one indentation, continuation lines deeper; the section ends
    at the first line indented no deeper than its ``Attributes:`` heading.
    """
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    docs: dict[str, str] = {}
    heading = next((i for i, line in enumerate(lines) if line.strip() == "Attributes:"), None)
    if heading is None:
        return docs
    outer = len(lines[heading]) - len(lines[heading].lstrip())
    entry_indent, name = None, None
    for line in lines[heading + 1 :]:
        indent = len(line) - len(line.lstrip())
        if not line.strip():
            continue
        if indent <= outer:
            break
        entry_indent = indent if entry_indent is None else entry_indent
        match = re.fullmatch(r"(\w+)(?:\s*\([^)]*\))?:\s*(.*)", line.strip()) if indent == entry_indent else None
        if match:
            name = match.group(1)
            docs[name] = match.group(2)
        elif name is not None:
            docs[name] += " " + line.strip()
    return {key: " ".join(text.split()) for key, text in docs.items()}


def _plain(text: str, fields: set[str]) -> str:
    """Docstring markup as plain text for ``--help``: ``field_name`` becomes ``--field-name``,
    other literals lose their backquotes, ``:role:`~a.b.C``` becomes ``C``; ``%`` escaped."""

    def literal(match: re.Match) -> str:
        inner = match.group(1)
        return "--" + inner.replace("_", "-") if inner in fields else inner

    def role(match: re.Match) -> str:
        return match.group(2).rsplit(".", 1)[-1] if match.group(1) else match.group(2)

    return _LITERAL.sub(literal, _ROLE.sub(role, text)).replace("%", "%%")


def _split_union(annotation: str) -> list[str]:
    """``"int | None"`` -> ``["int", "None"]``, not splitting inside brackets."""
    parts, depth, current = [], 0, ""
    for char in annotation:
        depth += char == "["
        depth -= char == "]"
        if char == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()]


def comma_list(kind: type) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {kind.__name__}, got {text!r}"
            ) from None

    parse.__name__ = f"comma-separated {kind.__name__} list"
    return parse


_SCALARS = {"int": int, "float": float, "str": str}


def option_kind(annotation: object) -> dict[str, Any] | None:
    """argparse settings for a dataclass field's annotation (a string under ``from __future__ import
    annotations``), or ``None`` for a type the command line cannot spell (set it with ``--config``).

    ``int``, ``float``, ``str`` and their ``| None`` forms take one value; ``tuple[float, ...]`` (or
    ``list[int]``, ...) a comma-separated list; ``bool`` a ``--name`` / ``--no-name`` pair; a union
    with ``str`` (e.g. ``str | Callable[...]``) a string.
    """
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    parts = [part for part in _split_union(text.replace("typing.", "")) if part != "None"]
    if len(parts) == 1:
        (part,) = parts
        if part in _SCALARS:
            return {"type": _SCALARS[part]}
        if part == "bool":
            return {"action": _GivenBool}
        sequence = re.fullmatch(r"(?:tuple|list|Sequence)\[(\w+)(?:, \.\.\.)?\]", part)
        if sequence and sequence.group(1) in _SCALARS:
            kind = sequence.group(1)
            return {"type": comma_list(_SCALARS[kind]), "metavar": f"{kind.upper()},..."}
    if "str" in parts:
        return {"type": str}
    return None


def override(text: str) -> tuple[str, dict[str, Any]]:
    """``--override STRATEGY:KEY=VALUE,...`` as ``(strategy, {key: value})``, each value read as its
    :class:`GrowthConfig` field's type (``true``/``false`` for a flag)."""
    strategy, _, pairs = text.partition(":")
    fields = {f.name: f for f in dataclasses.fields(GrowthConfig)}
    changes: dict[str, Any] = {}
    for pair in pairs.split(","):
        key, equals, value = (part.strip() for part in pair.partition("="))
        if not strategy.strip() or not equals or not key:
            raise argparse.ArgumentTypeError(f"expected STRATEGY:KEY=VALUE[,KEY=VALUE...], got {text!r}")
        if key not in fields:
            raise argparse.ArgumentTypeError(str(unknown_name_error("config key", key, fields)))
        kind = option_kind(fields[key].type) or {}
        if kind.get("action") is _GivenBool:
            if value.lower() not in ("true", "false"):
                raise argparse.ArgumentTypeError(f"{key} is true or false, got {value!r}")
            changes[key] = value.lower() == "true"
            continue
        try:
            changes[key] = kind.get("type", str)(value)
        except (ValueError, argparse.ArgumentTypeError) as error:
            raise argparse.ArgumentTypeError(f"{key}={value!r}: {one_line(error)}") from None
    return strategy.strip(), changes


class _Given(argparse.Action):
    """Store the value and remember the option was written on the command line (``--config`` yields to it)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.given_fields = {*getattr(namespace, "given_fields", ()), self.dest}


class _GivenBool(argparse.BooleanOptionalAction):
    def __call__(self, parser, namespace, values, option_string=None) -> None:
        super().__call__(parser, namespace, values, option_string)
        namespace.given_fields = {*getattr(namespace, "given_fields", ()), self.dest}


def registry_help(registry: Any, exclude: tuple[str, ...] = ()) -> str:
    """``"name (help), ..."`` of a registry, for ``--help``."""
    return registry.describe(exclude=exclude).replace("%", "%%")


def strategies_help(strategies) -> str:
    """``"name (help), ..."`` of the given registered strategies, for ``--help``."""
    return ", ".join(f"{name} ({STRATEGIES.help(name)})" for name in strategies).replace("%", "%%")


def _shown(default: Any) -> str:
    """A default as ``--help`` shows it: a long list as its length and range."""
    if isinstance(default, (tuple, list)):
        if len(default) > 4:
            return f"{len(default)} values from {min(default):g} to {max(default):g}"
        return ",".join(map(str, default))
    return str(default).replace("%", "%%")


def add_growth_options(
    growth: argparse._ArgumentGroup, training: argparse._ArgumentGroup, exclude: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """One ``--field-name`` option per :class:`GrowthConfig` field (but ``exclude``): type from the
    annotation, default from the field, help from the docstring's ``Attributes:``; returns the fields."""
    fields = [f for f in dataclasses.fields(GrowthConfig) if f.init and f.name not in (*exclude, *PYTHON_ONLY_FIELDS)]
    names = {f.name for f in dataclasses.fields(GrowthConfig)}
    docs = attribute_docs(GrowthConfig)
    defaults = GrowthConfig()
    added = []
    for field in fields:
        kind = option_kind(field.type)
        if kind is None:
            continue  # not spellable on the command line: --config FILE sets it
        default = getattr(defaults, field.name)
        help_text = _plain(docs.get(field.name, ""), names).rstrip(".") or f"GrowthConfig.{field.name}"
        if field.name == "strategy":
            help_text += f"; one of: {strategies_help(n for n in growth_strategies() if n != 'scratch')}"
        elif field.name == "schedule":
            kind["choices"] = list(SCHEDULES)
        elif field.name == "line_search":
            kind["choices"] = list(LINE_SEARCHES)
        elif field.name == "lr_schedule":
            kind["choices"] = list(LR_SCHEDULES)
        elif field.name == "td_location":
            kind["choices"] = list(LOCATION_METHODS)
        elif field.name == "autocast":
            kind["choices"] = list(AUTOCAST)
        elif field.name == "mode":
            kind["choices"] = ["min", "max"]
        elif field.name == "monitor":
            kind["choices"] = ["val_loss", "train_loss"]  # metrics are given to the Grower in Python
        elif field.name == "block":
            help_text += f"; one of: {registry_help(BLOCKS)}"
        if default is not None and not isinstance(default, bool):
            help_text += f" (default {_shown(default)})"
        group = training if field.name in TRAINING_FIELDS else growth
        kind.setdefault("action", _Given)
        group.add_argument(f"--{field.name.replace('_', '-')}", default=default, help=help_text, **kind)
        added.append(field.name)
    return tuple(added)


def add_common(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """The data, network, growth, training and output options of ``run`` and ``compare``."""
    m = ModelConfig()
    data = parser.add_argument_group("data")
    data.add_argument(
        "task",
        help=f"task to learn: {registry_help(TASKS)}; "
        "or a table file (.csv, .npz, or .parquet with pyarrow) with --target",
    )
    data.add_argument(
        "--data-dir",
        help="folder holding the data files (else $TOPOGROW_DATA_DIR, "
        "then shared/datasets above the working directory, then scikit-learn's fetcher)",
    )
    data.add_argument("--n-train", type=int, help="use only this many training samples")
    data.add_argument("--target", help="the column to predict (a table file only; required for one)")
    data.add_argument(
        "--task-type",
        choices=("regression", "classification"),
        help="of a table file (default: inferred: classification for labels that are text, or integers with at "
        "most 20 distinct values; printed)",
    )
    data.add_argument(
        "--val-fraction", type=float, help="share of a table's rows for validation (default 0.16; a table file only)"
    )
    data.add_argument(
        "--test-fraction", type=float, help="share of a table's rows for the test (default 0.2; a table file only)"
    )
    data.add_argument(
        "--dropna", action="store_true", help="drop a table's rows with empty or NaN cells (default: an error)"
    )
    net = parser.add_argument_group("network")
    net.add_argument(
        "--model",
        choices=list(MODELS),
        default=m.family,
        help=f"{registry_help(MODELS)}; default %(default)s",
    )
    net.add_argument(
        "--width",
        type=int,
        default=m.width,
        help="MLP state width, CNN channels of the first stage, ViT token width (default %(default)s)",
    )
    net.add_argument(
        "--initial-depth", type=int, default=m.initial_depth, help="residual layers to start from (default %(default)s)"
    )
    net.add_argument(
        "--activation",
        default=m.activation,
        help="activation of residual layers (silu-tanh = 2 SiLU(z) - tanh(z), or z-tanh; default %(default)s)",
    )
    grow = parser.add_argument_group("growth")
    grow.add_argument(
        "--config",
        type=Path,
        help='JSON file of growth settings (GrowthConfig fields, e.g. {"max_depth": 6, "lr": 0.003}); '
        "options given on the command line override it",
    )
    train = parser.add_argument_group("training")
    parser.set_defaults(growth_fields=add_growth_options(grow, train, exclude))
    train.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: torch's choice; 1 is fastest for small models)",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, help="folder for the JSON and PNG (default results/<verb>-<task>)")
    out.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a --out that holds another run's results: replaces the files topogrow writes there, "
        "keeps all others (default: refuse a non-empty --out, but the one a --resume continues)",
    )
    out.add_argument("--quiet", action="store_true", help="no progress bars")
    out.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def configs(args: argparse.Namespace, strategy: str | None = None) -> tuple[GrowthConfig, ModelConfig]:
    """The growth and model configs: defaults, then ``--config FILE``, then the options given
    (``strategy``, if given, replaces the strategy)."""
    values = {name: getattr(args, name) for name in args.growth_fields}
    if strategy is not None:
        values["strategy"] = strategy
    if args.config is not None:
        GrowthConfig.from_json(args.config)  # validates, naming the file
        given = getattr(args, "given_fields", set())
        for key, value in json.loads(args.config.read_text()).items():
            if key == "strategy" and args.verb == "compare":
                continue  # compare runs the strategies of --strategies
            if key not in given:
                values[key] = value
    growth = GrowthConfig(**values)
    model = ModelConfig(
        width=args.width, initial_depth=args.initial_depth, activation=args.activation, family=args.model
    )
    return growth, model
