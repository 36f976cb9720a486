"""``topogrow predict RUN_DIR DATA``: a saved model's predictions for a table, in the user's units."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np

from topogrow._io import write_text_atomic
from topogrow.data.tabular import read_table
from topogrow.growth.checkpoint import load

__all__ = ["predict_command", "predict_table"]


def predict_table(run_dir: str | Path, data: str | Path) -> str:
    """The predictions of the model saved in ``run_dir`` for every row of the table ``data`` (CSV,
    npz, Parquet), as CSV text: the target's name (or ``prediction``) and, for a classifier, one
    ``p(<label>)`` column per class. The columns the model was trained on are taken by name (any
    other column, e.g. the target, is ignored); a table without names must have them in order."""
    model = load(run_dir)
    table = read_table(data)
    prep = getattr(model, "preprocessing", None) or {}
    names = prep.get("feature_names")
    if names:
        missing = [name for name in names if name not in table.columns]
        if missing:
            raise ValueError(f"{data}: no column {', '.join(map(repr, missing))} (the model was trained on {names})")
    else:
        names = [name for name in table.names if table.columns[name].dtype.kind == "f"]
    text = [name for name in names if table.columns[name].dtype.kind != "f"]
    if text:
        raise ValueError(f"{data}: columns {', '.join(map(repr, text))} are not numeric")
    X = np.stack([table.columns[name] for name in names], axis=1)
    missing_rows = int(np.isnan(X).any(axis=1).sum())
    if missing_rows:
        raise ValueError(f"{data}: {missing_rows} of {len(X)} rows have missing values in the model's columns")
    predictions = model.predict(X)
    target = prep.get("target") or "prediction"
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if prep.get("kind") == "classification":
        probabilities = model.predict_proba(X)
        writer.writerow([target, *(f"p({label})" for label in prep["classes"])])
        for label, row in zip(predictions, probabilities, strict=True):
            writer.writerow([label, *(f"{p:.6g}" for p in row)])
    else:
        columns = predictions.reshape(len(predictions), -1)
        header = [target] if columns.shape[1] == 1 else [f"{target}_{i}" for i in range(columns.shape[1])]
        writer.writerow(header)
        writer.writerows([[f"{v:.9g}" for v in row] for row in columns])
    return out.getvalue()


def predict_command(args: argparse.Namespace) -> None:
    """``topogrow predict``: print the predictions as CSV, or write them to ``--out``."""
    text = predict_table(args.model, args.data)
    if args.out is None:
        print(text, end="")
    else:
        write_text_atomic(args.out, text)
        print(f"wrote {args.out} ({text.count(chr(10)) - 1} predictions)", file=sys.stderr)
