"""The ``topogrow`` command line: ``run`` one strategy, ``compare`` them all, reproduce the
``paper``'s table, ``transfer`` to a related task, ``bench`` the costs."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import inspect
import json
import re
import shlex
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import topogrow
from topogrow._io import write_json_atomic, write_text_atomic
from topogrow._validation import one_line, unknown_name_error
from topogrow.cli.outdir import check_folder, locked
from topogrow.cli.provenance import provenance
from topogrow.data import TASKS
from topogrow.data import load as load_task
from topogrow.data.tabular import is_table_path, read_table, table_task
from topogrow.data.task import Task
from topogrow.experiments.experiment import DEPTH_SEARCH, MODELS, ModelConfig, compare, run
from topogrow.experiments.quality import summary as quality_summary
from topogrow.experiments.report import comparison_table, plot_comparison, plot_quality, plot_runs
from topogrow.growth import STRATEGIES, GrowthConfig
from topogrow.growth.checkpoint import find_checkpoint, save
from topogrow.growth.config import AUTOCAST, LOCATION_METHODS, LR_SCHEDULES, SCHEDULES
from topogrow.growth.line_search import LINE_SEARCHES
from topogrow.growth.strategies import growth_strategies
from topogrow.nn.blocks import BLOCKS

__all__ = ["main"]

DESCRIPTION = """\
Grow residual networks in depth while they train, using the topological derivative
(Krishnanunni, Bui-Thanh, Dawson, 2025): the leading eigenvalue of the Hessian of the
Hamiltonian at each location says where to insert a layer, its eigenvector how.

examples:
  topogrow run california --strategy td --max-depth 6 --out results/run
  topogrow compare california --seeds 3 --out results/compare
  topogrow compare synthetic --seeds 2 --strategies td,random --epochs-per-stage 3
  topogrow --plugin my_strategies compare synthetic --strategies td,mine

--plugin MODULE imports MODULE first (before any verb), so the strategies, schedules,
blocks, models and tasks it registers show in --help and can be chosen.
"""

# ------------------------------------------------------------------ options from GrowthConfig
#: GrowthConfig fields listed under "training" in ``--help`` (the others under "growth").
TRAINING_FIELDS = ("lr", "weight_decay", "batch_size", "seed", "device", "grad_clip", "accumulate_batches", "autocast")
#: Config fields that take Python objects to matter (a callable schedule), so not options.
PYTHON_ONLY_FIELDS = ("lr_interval",)
#: Where ``run --log`` writes, and with which logger.
LOGGERS = {"csv": "CSVLogger", "tensorboard": "TensorBoardLogger", "jsonl": "JSONLinesLogger"}
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


def _comma_list(kind: type) -> Callable[[str], tuple]:
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
            return {"type": _comma_list(_SCALARS[kind]), "metavar": f"{kind.upper()},..."}
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


def _names(registry: Any, exclude: tuple[str, ...] = ()) -> str:
    """``"name (help), ..."`` of a registry, for ``--help``."""
    return registry.describe(exclude=exclude).replace("%", "%%")


def _strategies(names) -> str:
    """``"name (help), ..."`` of the given registered strategies, for ``--help``."""
    return ", ".join(f"{name} ({STRATEGIES.help(name)})" for name in names).replace("%", "%%")


def _shown(default: Any) -> str:
    """A default as ``--help`` shows it: a long list as its length and range."""
    if isinstance(default, (tuple, list)):
        if len(default) > 4:
            return f"{len(default)} values from {min(default):g} to {max(default):g}"
        return ",".join(map(str, default))
    return str(default).replace("%", "%%")


def _add_growth_options(
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
            help_text += f"; one of: {_strategies(n for n in growth_strategies() if n != 'scratch')}"
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
            help_text += f"; one of: {_names(BLOCKS)}"
        if default is not None and not isinstance(default, bool):
            help_text += f" (default {_shown(default)})"
        group = training if field.name in TRAINING_FIELDS else growth
        kind.setdefault("action", _Given)
        group.add_argument(f"--{field.name.replace('_', '-')}", default=default, help=help_text, **kind)
        added.append(field.name)
    return tuple(added)


def _add_common(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """The data, network, growth, training and output options of ``run`` and ``compare``."""
    m = ModelConfig()
    data = parser.add_argument_group("data")
    data.add_argument(
        "task",
        help=f"task to learn: {_names(TASKS)}; or a table file (.csv, .npz, or .parquet with pyarrow) with --target",
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
        help=f"{_names(MODELS)}; default %(default)s",
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
    parser.set_defaults(growth_fields=_add_growth_options(grow, train, exclude))
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


class _Formatter(argparse.HelpFormatter):
    """argparse's help layout, never breaking a line inside a hyphenated name (``forward-thinking``)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)


class _RawDescriptionFormatter(argparse.RawDescriptionHelpFormatter, _Formatter):
    """The top-level help: the description as written, the options as :class:`_Formatter` lays them out."""


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad option said in one line (no usage block): ``topogrow run: error: ...``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``topogrow`` parser; the names it lists (tasks, models, strategies, blocks, benchmarks,
    bench sections) come from their registries, the growth options from :class:`GrowthConfig`."""
    from topogrow.experiments.bench import SECTIONS
    from topogrow.experiments.transfer_runner import BENCHMARKS

    parser = _Parser(prog="topogrow", description=DESCRIPTION, formatter_class=_RawDescriptionFormatter)
    parser.add_argument("--version", action="version", version=f"topogrow {topogrow.__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="{run,compare,predict,paper,bench,transfer}")
    run_parser = verbs.add_parser(
        "run",
        help="grow a network with one strategy",
        description="Grow a network on a task with one strategy; print the "
        "history and the test metric; write run.json and run.png.",
    )
    _add_common(run_parser)
    run_parser.add_argument(
        "--log",
        type=_comma_list(str),
        default=(),
        metavar="KINDS",
        help="also log every epoch and insertion as it happens into <out>/log: comma-separated of "
        f"{', '.join(LOGGERS)} (tensorboard needs the tensorboard package)",
    )
    ckpt = run_parser.add_argument_group("checkpoints")
    ckpt.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="N",
        help="also checkpoint every N epochs (default: after every stage and at the end only); checkpoints "
        "go to <out>/checkpoints",
    )
    ckpt.add_argument(
        "--resume",
        type=Path,
        metavar="DIR",
        help="continue the run checkpointed in DIR (<out>/checkpoints of the run, or one ckpt-NNNNNN folder in it) "
        "from its newest checkpoint; give the same options as the run; an error if DIR holds no checkpoint",
    )
    compare_parser = verbs.add_parser(
        "compare",
        help="run every strategy over several seeds",
        description="Run strategies side by side over seeds, paired with the reference (the best depth trained to "
        "convergence): quality and compute to reach it; print a table; write compare.json, compare.md, "
        "compare.png and quality.png.",
    )
    _add_common(compare_parser, exclude=("strategy",))  # compare runs the strategies of --strategies
    compare_parser.add_argument("--seeds", type=int, default=3, help="number of seeds (default %(default)s)")
    compare_parser.add_argument(
        "--strategies",
        default=",".join((*growth_strategies(), DEPTH_SEARCH)),
        help="comma-separated; default all: "
        + _strategies(growth_strategies())
        + f", {DEPTH_SEARCH} (the reference: train every depth from the initial one to --max-depth from scratch "
        "to convergence under the same rule, keep the best on validation; its cost is the whole search)",
    )
    compare_parser.add_argument(
        "--lrs",
        type=_comma_list(float),
        metavar="FLOAT,...",
        help="learning rates every arm (the reference included) chooses from on validation (default: --lr only)",
    )
    compare_parser.add_argument(
        "--override",
        type=override,
        action="append",
        metavar="STRATEGY:KEY=VALUE,...",
        help="change the config of one strategy, e.g. td:line_search=grid,td_samples=all (repeatable)",
    )
    paper_parser = verbs.add_parser(
        "paper",
        help="reproduce every row of the paper's results table",
        description="Run every row of the paper's table (configurations in topogrow/experiments/paper/*.json: task, "
        "samples S, network, schedule, budget, strategies, seeds) and write results/paper.md with the paper's "
        "figure beside each strategy's mean ± std, final depth, parameters and wall time, plus a plot per row.",
    )
    paper_parser.add_argument(
        "--quick", action="store_true", help="the reduced budget (every row, 5 seeds, small epochs)"
    )
    paper_parser.add_argument("--rows", help="comma-separated subset of rows (file names without .json)")
    paper_parser.add_argument(
        "--render",
        action="store_true",
        help="run nothing: write paper.md again from the rows' compare.json under --out (e.g. after runs split "
        "by --rows, or with another --reference)",
    )
    paper_parser.add_argument(
        "--reference", help="the strategy paired against the others in the tables (default: the library's default)"
    )
    paper_parser.add_argument("--out", type=Path, default=Path("results"), help="folder (default %(default)s)")
    paper_parser.add_argument("--data-dir", help="folder holding (or caching) the data files")
    paper_parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    paper_parser.add_argument("--quiet", action="store_true", help="no progress bars")
    paper_parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    bench_parser = verbs.add_parser(
        "bench",
        help="measure what the topological derivative costs",
        description="Time the TD against a training epoch, the block solver against a dense eigh and across "
        "widths, the TD's memory against S, the growth overhead and the matrix-free path; print a Markdown "
        "table and write bench.json (see topogrow.experiments.bench).",
    )
    bench_parser.add_argument("--quick", action="store_true", help="small sizes, one repeat: a smoke run")
    bench_parser.add_argument("--repeats", type=int, default=3, help="timings are medians of this many runs")
    bench_parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default %(default)s)")
    bench_parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    bench_parser.add_argument("--data-dir", help="folder holding the data files (as for run)")
    bench_parser.add_argument(
        "--sections", help=f"comma-separated subset of the sections (default all): {_names(SECTIONS)}"
    )
    bench_parser.add_argument("--out", type=Path, default=Path("results/bench.json"), help="(default %(default)s)")
    bench_parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    predict_parser = verbs.add_parser(
        "predict",
        help="predict with a saved model (a topogrow run folder) for a table",
        description="Predict with the model of a `topogrow run` folder (or any folder written by topogrow.save) "
        "for every row of a table (CSV, npz, Parquet): the columns the model was trained on, taken by name and "
        "standardised as in training; predictions in the data's units (class labels and probabilities for a "
        "classifier), as CSV.",
    )
    predict_parser.add_argument("model", type=Path, help="the run folder (model.json, model.safetensors)")
    predict_parser.add_argument("data", type=Path, help="the table to predict for")
    predict_parser.add_argument("--out", type=Path, help="CSV file to write (default: print the CSV)")
    predict_parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    transfer_parser = verbs.add_parser(
        "transfer",
        help="transfer learning: adapt a pretrained network to a related task from a few samples",
        description="Pretrain a network on a source task (one per seed), adapt a copy of it to the target task "
        "from a few target samples with every strategy, and score it on held-out target data. Benchmarks: heat "
        "(parameter-to-observable map, covariance length 0.2 -> 0.1; target samples 50, 100, 200) and mnist "
        "(digits 0-4 -> 5-9; 10, 25, 50 images per class). Prints a table (target metric mean ± std, trainable "
        "parameters, wall time) and writes transfer.json, transfer.md and transfer.png (metric against samples).",
    )
    transfer_parser.add_argument("benchmark", help=f"one of: {_names(BENCHMARKS)}")
    transfer_parser.add_argument(
        "--samples", help="comma-separated target sizes (per class for mnist; default 50,100,200 / 10,25,50)"
    )
    transfer_parser.add_argument(
        "--strategies",
        help="comma-separated (default all): td (insert where the topological derivative says, eigenvector init), "
        "random-location, zero-location, head-only, full (fine-tune everything), lora (low-rank adapters on every "
        "residual layer with the inserted layers' parameter count), target-only (a fresh network on the target "
        "samples alone)",
    )
    transfer_parser.add_argument("--seeds", type=int, default=3, help="pretrained networks and draws (default 3)")
    transfer_parser.add_argument("--n-layers", type=int, default=2, help="layers to insert (default %(default)s)")
    transfer_parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="Adam steps per adaptation at a constant rate, rounded up to epochs (default: to convergence)",
    )
    transfer_parser.add_argument("--lr", type=float, default=1e-3, help="(default %(default)s)")
    transfer_parser.add_argument("--batch-size", type=int, default=16, help="(default %(default)s)")
    transfer_parser.add_argument(
        "--model", choices=list(MODELS), default="mlp", help="pretrained network (mnist: mlp, cnn or vit; default mlp)"
    )
    transfer_parser.add_argument("--width", type=int, default=64, help="(default %(default)s)")
    transfer_parser.add_argument(
        "--depth", type=int, default=2, help="residual layers of the pretrained network (default %(default)s)"
    )
    transfer_parser.add_argument("--pretrain-epochs", type=int, default=40, help="(default %(default)s)")
    transfer_parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share of the drawn target samples held out for early stopping; 0 trains on all for the whole "
        "budget (default %(default)s)",
    )
    transfer_parser.add_argument("--data-dir", help="folder holding (or caching) the data files")
    transfer_parser.add_argument(
        "--out", type=Path, help="folder for transfer.json/.md/.png (default results/transfer-<benchmark>)"
    )
    transfer_parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    transfer_parser.add_argument("--quiet", action="store_true", help="no progress bars")
    transfer_parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser


def _transfer(args: argparse.Namespace) -> None:
    from topogrow.experiments.transfer_runner import (
        STRATEGIES,
        TransferConfig,
        parse_list,
        run_transfer,
        transfer_table,
        write_transfer,
    )

    config = TransferConfig(
        args.benchmark,
        samples=parse_list(args.samples, int),
        strategies=parse_list(args.strategies) or STRATEGIES,
        seeds=args.seeds,
        n_layers=args.n_layers,
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        model=args.model,
        width=args.width,
        depth=args.depth,
        pretrain_epochs=args.pretrain_epochs,
        val_fraction=args.val_fraction,
        data_dir=args.data_dir,
    )
    out = args.out or Path("results") / f"transfer-{args.benchmark}"
    args.cleanup.enter_context(locked(out, command=_command(args)))
    results = run_transfer(config, progress=not args.quiet)
    print(transfer_table(results))
    paths = write_transfer(results, out)
    print("wrote " + ", ".join(map(str, paths)))


def _predict(args: argparse.Namespace) -> None:
    from topogrow.cli.predict import predict_table

    text = predict_table(args.model, args.data)
    if args.out is None:
        print(text, end="")
    else:
        write_text_atomic(args.out, text)
        print(f"wrote {args.out} ({text.count(chr(10)) - 1} predictions)", file=sys.stderr)


def _paper(args: argparse.Namespace) -> None:
    from topogrow.experiments.paper_runner import render_paper, run_paper

    rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
    command = "topogrow paper" + (" --quick" if args.quick else "") + (f" --rows {args.rows}" if args.rows else "")
    if args.reference is not None:
        GrowthConfig(strategy=args.reference)  # a registered name, or a "did you mean"
    if args.render:
        path = render_paper(args.out, args.quick, rows, command, args.reference)
    else:
        path = run_paper(args.out, args.quick, rows, args.data_dir, progress=not args.quiet, command=command)
        if args.reference is not None:
            path = render_paper(args.out, args.quick, rows, command, args.reference)
    print(path.read_text())
    print(f"wrote {path}")


def _bench(args: argparse.Namespace) -> None:
    from topogrow.experiments.bench import BenchConfig, markdown_table, run_bench, write_results

    sections = {} if not args.sections else {"sections": tuple(s.strip() for s in args.sections.split(","))}
    config = BenchConfig(args.quick, args.repeats, args.threads, args.device, args.data_dir, **sections)
    results = run_bench(config)
    print(markdown_table(results))
    print(f"wrote {write_results(results, args.out)}")


def _configs(args: argparse.Namespace, strategy: str | None = None) -> tuple[GrowthConfig, ModelConfig]:
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


def _command(args: argparse.Namespace) -> str:
    """The command line as typed (for the lock file)."""
    return shlex.join(["topogrow", *getattr(args, "argv", [args.verb])])


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or inside it (after resolving links)."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def _resume_checkpoint(folder: Path) -> Path:
    """The checkpoint ``--resume folder`` continues; a missing folder or one without a checkpoint is an error."""
    hint = "leave out --resume to start a new run"
    if not folder.exists():
        raise ValueError(f"--resume {folder}: no such folder ({hint})")
    if not folder.is_dir():
        raise ValueError(f"--resume {folder}: not a folder")
    resume = find_checkpoint(folder)
    if resume is None:
        raise ValueError(
            f"--resume {folder}: holds no checkpoint (a ckpt-NNNNNN folder, or checkpoints/ with one; {hint})"
        )
    return resume


_TABLE_OPTIONS = ("target", "task_type", "val_fraction", "test_fraction", "dropna")


def _task_factory(args: argparse.Namespace) -> tuple[Callable[..., Task] | None, str]:
    """For a table file: a task factory ``(seed, data_dir, n_train) -> Task`` (the table read once, the
    task type printed) and the name for the output folder; for a registered task ``(None, task)``."""
    if not is_table_path(args.task) or args.task in TASKS:
        given = [name for name in _TABLE_OPTIONS if getattr(args, name) not in (None, False)]
        if given:
            options = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ValueError(f"{options}: for a table file (.csv, .npz, .parquet), not the task {args.task!r}")
        return None, args.task
    table = read_table(args.task)
    if args.target is None:
        raise ValueError(f"{args.task}: --target is required for a table: one of {', '.join(table.names)}")
    options = {
        "target": args.target,
        "task_type": args.task_type,
        "val_fraction": 0.16 if args.val_fraction is None else args.val_fraction,
        "test_fraction": 0.2 if args.test_fraction is None else args.test_fraction,
        "dropna": args.dropna,
    }

    def factory(seed: int = 0, data_dir: str | None = None, n_train: int | None = None) -> Task:
        return table_task(table, seed=seed, n_train=n_train, **options)

    task = factory(seed=args.seed, n_train=args.n_train)  # every error before any training
    kind = "given" if args.task_type else "inferred"
    classes = task.preprocessing["classes"]
    detail = "" if classes is None else f", {len(classes)} classes: {', '.join(map(str, classes[:10]))}"
    detail += ", ..." if classes is not None and len(classes) > 10 else ""
    print(f"topogrow: task type: {task.kind} ({kind}){detail}", file=sys.stderr)
    return factory, Path(args.task).stem


def _run(args: argparse.Namespace) -> None:
    growth, model = _configs(args)
    if growth.strategy == "scratch":
        raise ValueError("'scratch' needs a td run to copy the architecture from: use 'topogrow compare'")
    if args.checkpoint_every < 0:
        raise ValueError(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
    factory, name = _task_factory(args)
    out = args.out or Path("results") / f"run-{name}"
    checkpoints, resume = out / "checkpoints", None
    if args.resume is not None:
        resume = _resume_checkpoint(args.resume)
        checkpoints = resume.parent
    # Lock --out, and the run folder of checkpoints continued elsewhere; then --out must be this run's.
    elsewhere = (
        [] if _inside(checkpoints, out) else [checkpoints.parent if checkpoints.name == "checkpoints" else checkpoints]
    )
    args.cleanup.enter_context(locked(out, *elsewhere, command=_command(args)))
    check_folder(out, "run", overwrite=args.overwrite, own=resume is not None and _inside(resume, out))
    if resume is not None:
        print(f"topogrow: resuming from {resume}", file=sys.stderr)
    if factory is None:
        task = load_task(args.task, seed=args.seed, data_dir=args.data_dir, n_train=args.n_train)
    else:
        task = factory(seed=args.seed, data_dir=args.data_dir, n_train=args.n_train)
    result, network = run(
        task,
        growth,
        model,
        progress=not args.quiet,
        checkpoint_dir=checkpoints,
        checkpoint_every=args.checkpoint_every,
        resume=resume,
        callbacks=_loggers(args.log, out / "log"),
    )
    print(result.history.summary())
    print(
        f"\n{task.metric_name}: {result.metric:.4f}   final depth: {result.final_depth}   "
        f"parameters: {result.n_parameters}   wall time: {result.wall_time:.1f} s"
    )
    payload = {
        "task": args.task,
        "metric": task.metric_name,
        "growth": growth.to_dict(),
        "model": model.__dict__,
        "run": result.to_dict(),
        **provenance(args.task, args.data_dir, args.command_line),
    }
    json_path = write_json_atomic(out / "run.json", payload)
    png_path = plot_runs([result], out / "run.png", title=f"{args.task}, {growth.strategy}, seed {growth.seed}")
    save(network, out, metadata={**provenance(args.task, args.data_dir, args.command_line), "growth": growth.to_dict()})
    print(f"wrote {json_path}, {png_path}, the model ({out / 'model.json'}, load with topogrow.load) and {checkpoints}")


def _loggers(kinds: tuple[str, ...], folder: Path) -> list[Any]:
    """The loggers ``run --log`` asks for, writing into ``folder``."""
    from topogrow.growth import loggers

    unknown = [kind for kind in kinds if kind not in LOGGERS]
    if unknown:
        raise unknown_name_error("--log kind", unknown[0], list(LOGGERS))
    made = []
    for kind in dict.fromkeys(kinds):
        target = folder / "run.jsonl" if kind == "jsonl" else folder / kind if kind == "tensorboard" else folder
        made.append(getattr(loggers, LOGGERS[kind])(target))
    return made


def _compare(args: argparse.Namespace) -> None:
    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    if not strategies:
        raise ValueError("--strategies is empty")
    for name in strategies:
        if name not in STRATEGIES and name != DEPTH_SEARCH:
            GrowthConfig(strategy=name)  # raises with a "did you mean"
    growth, model = _configs(args)
    factory, name = _task_factory(args)
    out = args.out or Path("results") / f"compare-{name}"
    args.cleanup.enter_context(locked(out, command=_command(args)))
    check_folder(out, "compare", overwrite=args.overwrite)
    comparison = compare(
        args.task,
        strategies,
        args.seeds,
        growth,
        model,
        args.data_dir,
        args.n_train,
        progress=not args.quiet,
        task_factory=factory,
        lrs=tuple(args.lrs or ()),
        overrides=dict(args.override or ()),
    )
    print(comparison_table(comparison))
    payload = {
        **comparison.to_dict(),
        "quality": quality_summary(comparison),
        **provenance(args.task, args.data_dir, args.command_line),
    }
    json_path = write_json_atomic(out / "compare.json", payload)
    png_path = plot_comparison(comparison, out / "compare.png")
    quality_path = plot_quality(comparison, out / "quality.png")
    write_text_atomic(out / "compare.md", comparison_table(comparison) + "\n")
    print(f"wrote {json_path}, {png_path}, {quality_path} and {out / 'compare.md'}")


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"topogrow: warning: {one_line(Warning(message))}", file=sys.stderr if file is None else file)


def _import_plugins(argv: list[str]) -> list[str]:
    """Import the modules of ``--plugin MODULE`` (before the parser is built, so that what they
    register shows in ``--help`` and can be chosen); returns ``argv`` without them."""
    rest, index = [], 0
    while index < len(argv):
        token = argv[index]
        if token == "--plugin" or token.startswith("--plugin="):
            name = token.split("=", 1)[1] if "=" in token else (argv[index + 1] if index + 1 < len(argv) else "")
            index += 1 if "=" in token else 2
            problem = "needs a module name" if not name else None
            if name:
                try:
                    importlib.import_module(name)
                except ImportError as error:
                    problem = f"cannot import {name!r} ({one_line(error)})"
            if problem:
                print(f"topogrow: error: --plugin {problem}", file=sys.stderr)
                raise SystemExit(2)
            continue
        rest.append(token)
        index += 1
    return rest


def main(argv: list[str] | None = None) -> int:
    """Run the ``topogrow`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit status:
    0, 2 for a bad input (one line on stderr), 1 for an unexpected error, 130 when interrupted."""
    given = sys.argv[1:] if argv is None else list(argv)
    argv = _import_plugins(given)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = ["topogrow", *given]  # as typed (run.json and compare.json record it)
    args.argv = argv
    with warnings.catch_warnings(), contextlib.ExitStack() as args.cleanup:  # the verb's locks, released last
        if not args.debug:
            warnings.showwarning = _warning_line  # one line each, no source line
        try:
            if getattr(args, "threads", None) is not None and args.verb != "bench":
                if args.threads < 1:
                    raise ValueError(f"--threads must be >= 1, got {args.threads}")
                torch.set_num_threads(args.threads)
            verbs = {
                "run": _run,
                "compare": _compare,
                "paper": _paper,
                "bench": _bench,
                "transfer": _transfer,
                "predict": _predict,
            }
            verbs[args.verb](args)
        except (ValueError, TypeError, OSError, FloatingPointError) as error:
            if args.debug:
                raise
            print(f"topogrow: error: {one_line(error)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("topogrow: interrupted", file=sys.stderr)
            return 130
        except Exception as error:  # a bug, not a bad input: still one line unless --debug
            if args.debug:
                raise
            print(
                f"topogrow: internal error ({type(error).__name__}): {one_line(error)} (rerun with --debug for the "
                "traceback)",
                file=sys.stderr,
            )
            return 1
    return 0
