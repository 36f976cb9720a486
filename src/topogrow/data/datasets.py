"""Finding and reading data files: an explicit directory, an environment variable,
then a search of ``shared/datasets`` above the working directory and the package."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

DATA_ENV = "TOPOGROW_DATA_DIR"

CALIFORNIA_FEATURES = (
    "MedInc",
    "HouseAge",
    "AveRooms",
    "AveBedrms",
    "Population",
    "AveOccup",
    "Latitude",
    "Longitude",
)


def candidate_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Directories searched for data, in order."""
    dirs: list[Path] = []
    if data_dir is not None:
        dirs.append(Path(data_dir))
    if os.environ.get(DATA_ENV):
        dirs.append(Path(os.environ[DATA_ENV]))
    seen = set()
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for base in (start, *start.parents):
            shared = base / "shared" / "datasets"
            if shared not in seen:
                seen.add(shared)
                if shared.is_dir():
                    dirs.append(shared)
    return dirs


def find_file(names: list[str], data_dir: str | Path | None = None) -> tuple[Path | None, list[Path]]:
    """The first existing ``dir / name`` over :func:`candidate_dirs`; also the paths tried."""
    tried = []
    for directory in candidate_dirs(data_dir):
        for name in names:
            path = directory / name
            tried.append(path)
            if path.is_file():
                return path, tried
    return None, tried


def file_record(path: str | Path) -> dict:
    """``{"path": absolute path, "sha256": hex digest}`` of a data file (read in 1 MiB chunks)."""
    path = Path(path).resolve()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": str(path), "sha256": digest.hexdigest()}


def read_statlib_california(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read StatLib's ``cal_housing.data`` and derive scikit-learn's eight features.

    Columns of the file: longitude, latitude, housing median age, total rooms,
    total bedrooms, population, households, median income, median house value.
    Returns ``X (20640, 8)`` in the order of :data:`CALIFORNIA_FEATURES` and the
    target in units of 100,000 dollars.
    """
    with open(path) as handle:
        first = handle.readline()
    skip = 1 if any(c.isalpha() for c in first) else 0
    try:
        raw = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2)
    except ValueError as error:
        raise ValueError(f"{path}: not a readable StatLib California housing file ({error})") from None
    if raw.shape[1] != 9 or raw.shape[0] == 0:
        raise ValueError(f"{path}: expected rows of 9 comma-separated numbers, got shape {raw.shape}")
    if not np.isfinite(raw).all():
        raise ValueError(f"{path}: contains NaN or inf")
    lon, lat, age, rooms, bedrooms, population, households, income, value = raw.T
    X = np.column_stack(
        [
            income,
            age,
            rooms / households,
            bedrooms / households,
            population,
            population / households,
            lat,
            lon,
        ]
    )
    return X, value / 100_000.0


def load_california(data_dir: str | Path | None = None, download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """California housing as scikit-learn defines it: ``X (20640, 8)``, ``y`` in 100k$.

    Looks for ``cal_housing.data`` (StatLib) in ``data_dir``, ``$TOPOGROW_DATA_DIR``
    and ``shared/datasets/california_housing`` above the working directory; then
    scikit-learn's cache, downloading there if ``download`` (needs internet).
    """
    path, tried = find_file(["california_housing/cal_housing.data", "cal_housing.data"], data_dir)
    if path is not None:
        return read_statlib_california(path)
    try:
        from sklearn.datasets import fetch_california_housing

        bunch = fetch_california_housing(download_if_missing=download)
        return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.float64)
    except Exception as error:  # noqa: BLE001 - any failure of the fetcher means "not found"
        looked = "\n  ".join(str(p) for p in tried) or "(no directories)"
        raise FileNotFoundError(
            "California housing data not found. Looked for cal_housing.data in:\n  "
            f"{looked}\nand scikit-learn's fetcher failed ({type(error).__name__}: {error}). "
            f"Pass --data-dir or set {DATA_ENV} to a folder holding cal_housing.data."
        ) from None
