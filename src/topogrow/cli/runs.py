"""``topogrow run`` and ``topogrow compare``: grow a network on a task with one strategy, or with
several over seeds; the task named on the command line (a registered one or a table file)."""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from topogrow._io import write_json_atomic, write_text_atomic
from topogrow._validation import unknown_name_error
from topogrow.cli.options import configs
from topogrow.cli.outdir import check_folder, locked
from topogrow.cli.provenance import provenance
from topogrow.data import TASKS
from topogrow.data import load as load_task
from topogrow.data.tabular import is_table_path, read_table, table_task
from topogrow.data.task import Task
from topogrow.experiments.experiment import DEPTH_SEARCH, compare, run
from topogrow.experiments.quality import summary as quality_summary
from topogrow.experiments.report import comparison_table, plot_comparison, plot_quality, plot_runs
from topogrow.growth import STRATEGIES, GrowthConfig
from topogrow.growth.checkpoint import find_checkpoint
from topogrow.nn.saved import save

#: Where ``run --log`` writes, and with which logger.
LOGGERS = {"csv": "CSVLogger", "tensorboard": "TensorBoardLogger", "jsonl": "JSONLinesLogger"}


def command_line(args: argparse.Namespace) -> str:
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


def task_factory(args: argparse.Namespace) -> tuple[Callable[..., Task] | None, str]:
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


#: The exit status of a run whose training diverged (:mod:`topogrow.growth.divergence`).
DIVERGED = 3


def run_command(args: argparse.Namespace) -> int:
    """``topogrow run``: grow with one strategy; print the history; write run.json, run.png and the
    model; the exit status (:data:`DIVERGED` when training diverged, else 0)."""
    growth, model = configs(args)
    if growth.strategy == "scratch":
        raise ValueError("'scratch' needs a td run to copy the architecture from: use 'topogrow compare'")
    if args.checkpoint_every < 0:
        raise ValueError(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
    factory, name = task_factory(args)
    out = args.out or Path("results") / f"run-{name}"
    checkpoints, resume = out / "checkpoints", None
    if args.resume is not None:
        resume = _resume_checkpoint(args.resume)
        checkpoints = resume.parent
    # Lock --out, and the run folder of checkpoints continued elsewhere; then --out must be this run's.
    elsewhere = (
        [] if _inside(checkpoints, out) else [checkpoints.parent if checkpoints.name == "checkpoints" else checkpoints]
    )
    args.cleanup.enter_context(locked(out, *elsewhere, command=command_line(args)))
    check_folder(out, "run", overwrite=args.overwrite, own=resume is not None and _inside(resume, out))
    if resume is not None:
        print(f"topogrow: resuming from {resume}", file=sys.stderr)
    if factory is None:
        task = load_task(args.task, seed=args.seed, data_dir=args.data_dir, n_train=args.n_train)
    else:
        task = factory(seed=args.seed, data_dir=args.data_dir, n_train=args.n_train)
    with warnings.catch_warnings():  # a diverged run is said once, below
        warnings.filterwarnings("ignore", message="training diverged", category=RuntimeWarning)
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
    diverged = result.history.diverged
    payload = {
        "task": args.task,
        "status": "diverged" if diverged else "completed",
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
    if diverged:
        print(f"topogrow: the run diverged (exit status {DIVERGED}): {diverged}", file=sys.stderr)
        return DIVERGED
    return 0


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


def compare_command(args: argparse.Namespace) -> None:
    """``topogrow compare``: every strategy of ``--strategies`` over seeds; print the table; write
    compare.json, compare.md, compare.png and quality.png."""
    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    if not strategies:
        raise ValueError("--strategies is empty")
    for name in strategies:
        if name not in STRATEGIES and name != DEPTH_SEARCH:
            GrowthConfig(strategy=name)  # raises with a "did you mean"
    growth, model = configs(args)
    factory, name = task_factory(args)
    out = args.out or Path("results") / f"compare-{name}"
    args.cleanup.enter_context(locked(out, command=command_line(args)))
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
