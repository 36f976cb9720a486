"""``topogrow paper``, ``topogrow bench`` and ``topogrow transfer``: the package's own benchmarks."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from topogrow.cli.outdir import locked
from topogrow.cli.runs import command_line
from topogrow.growth import GrowthConfig


def transfer_command(args: argparse.Namespace) -> None:
    """``topogrow transfer``: one transfer benchmark; print its table; write transfer.json, .md and .png."""
    from topogrow.experiments.transfer import STRATEGIES, TransferConfig, run_transfer, transfer_table, write_transfer

    config = TransferConfig(
        args.benchmark,
        samples=_parse_list(args.samples, int),
        strategies=_parse_list(args.strategies) or STRATEGIES,
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
    args.cleanup.enter_context(locked(out, command=command_line(args)))
    results = run_transfer(config, progress=not args.quiet)
    print(transfer_table(results))
    paths = write_transfer(results, out)
    print("wrote " + ", ".join(map(str, paths)))


def paper_command(args: argparse.Namespace) -> None:
    """``topogrow paper``: run (or only render) the paper's rows; print and write paper.md."""
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


def bench_command(args: argparse.Namespace) -> None:
    """``topogrow bench``: run the bench's sections; print the table; write bench.json."""
    from topogrow.experiments.bench import BenchConfig, markdown_table, run_bench, write_results

    sections = {} if not args.sections else {"sections": tuple(s.strip() for s in args.sections.split(","))}
    config = BenchConfig(args.quick, args.repeats, args.threads, args.device, args.data_dir, **sections)
    results = run_bench(config)
    print(markdown_table(results))
    print(f"wrote {write_results(results, args.out)}")


def _parse_list(text: str | None, kind=str) -> Sequence | None:
    """``"a,b"`` -> ``("a", "b")`` (``kind`` converts each); ``None`` stays ``None``."""
    if text is None:
        return None
    try:
        return tuple(kind(part.strip()) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"expected a comma-separated list of {kind.__name__}, got {text!r}") from None
