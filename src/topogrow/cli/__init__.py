"""The ``topogrow`` command line: ``run`` one strategy, ``compare`` them all, reproduce the
``paper``'s table, ``transfer`` to a related task, ``bench`` the costs, ``predict`` with a saved run.

:func:`main` reads the command line (``parser.py``; the growth options generated from
:class:`~topogrow.growth.GrowthConfig` in ``options.py``) and calls the verb: ``runs.py`` (run,
compare), ``benchmarks.py`` (paper, bench, transfer), ``predict.py``. Beside them: output folders
and their locks (``outdir.py``) and what a run records about itself (``provenance.py``). This layer
imports :mod:`topogrow.experiments` and :mod:`topogrow.data`; nothing imports it.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import warnings

import torch

from topogrow._validation import one_line
from topogrow.cli.benchmarks import bench_command, paper_command, transfer_command
from topogrow.cli.parser import build_parser
from topogrow.cli.predict import predict_command
from topogrow.cli.runs import compare_command, run_command

__all__ = ["main"]


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
    0, 2 for a bad input (one line on stderr), 3 for a run whose training diverged (its outputs
    written, ``run.json`` says ``"status": "diverged"``, one line on stderr says why), 1 for an
    unexpected error, 130 when interrupted."""
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
                "run": run_command,
                "compare": compare_command,
                "paper": paper_command,
                "bench": bench_command,
                "transfer": transfer_command,
                "predict": predict_command,
            }
            status = verbs[args.verb](args)
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
    return status or 0
