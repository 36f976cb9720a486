"""The ``topogrow`` parser: every verb and its options, and the help layout."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import topogrow
from topogrow.cli.options import add_common, comma_list, override, registry_help, strategies_help
from topogrow.cli.runs import LOGGERS
from topogrow.experiments.experiment import DEPTH_SEARCH, MODELS
from topogrow.growth.strategies import growth_strategies

#: The top of ``topogrow --help``.
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
    from topogrow.experiments.transfer import BENCHMARKS

    parser = _Parser(prog="topogrow", description=DESCRIPTION, formatter_class=_RawDescriptionFormatter)
    parser.add_argument("--version", action="version", version=f"topogrow {topogrow.__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="{run,compare,predict,paper,bench,transfer}")
    run_parser = verbs.add_parser(
        "run",
        help="grow a network with one strategy",
        description="Grow a network on a task with one strategy; print the "
        "history and the test metric; write run.json and run.png.",
    )
    add_common(run_parser)
    run_parser.add_argument(
        "--log",
        type=comma_list(str),
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
    add_common(compare_parser, exclude=("strategy",))  # compare runs the strategies of --strategies
    compare_parser.add_argument("--seeds", type=int, default=3, help="number of seeds (default %(default)s)")
    compare_parser.add_argument(
        "--strategies",
        default=",".join((*growth_strategies(), DEPTH_SEARCH)),
        help="comma-separated; default all: "
        + strategies_help(growth_strategies())
        + f", {DEPTH_SEARCH} (the reference: train every depth from the initial one to --max-depth from scratch "
        "to convergence under the same rule, keep the best on validation; its cost is the whole search)",
    )
    compare_parser.add_argument(
        "--lrs",
        type=comma_list(float),
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
        "--sections", help=f"comma-separated subset of the sections (default all): {registry_help(SECTIONS)}"
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
    transfer_parser.add_argument("benchmark", help=f"one of: {registry_help(BENCHMARKS)}")
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
