"""The real Fashion-MNIST: find it, verify it, read it, resize it, and batch it in a seeded order.

Every backend's ``load_data_fashion_mnist`` wraps :class:`Batches` in its own iterable, so the same
seed gives the same batch order in all three frameworks.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .arch import check_input_size
from .errors import ConfigError, DataError, InputError
from .recipe import check_seed
from .spec import available_memory, format_bytes

EXAMPLES = {"train": 60_000, "test": 10_000}  # a limit above a split's size takes the whole split
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")

# Decompressed IDX files: (bytes, SHA-256). Checked the same way whatever the source (gz or raw).
FILES = {
    "train-images-idx3-ubyte": (47_040_016, "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train-labels-idx1-ubyte": (60_008, "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "t10k-images-idx3-ubyte": (7_840_016, "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "t10k-labels-idx1-ubyte": (10_008, "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = (
    "install it with: sudo apt-get install dataset-fashion-mnist "
    "(or name a folder holding the four IDX files, .gz or raw, as the data folder or in $FASHION_MNIST_DIR)"
)
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where the files are looked for, in order: a folder the user names is the only place looked in."""
    root = data_dir or os.environ.get("FASHION_MNIST_DIR")
    if root:
        return [Path(root), Path(root) / "FashionMNIST" / "raw"]  # the second: torchvision's layout
    return [DEBIAN_DIR, Path.home() / ".keras" / "datasets" / "fashion-mnist"]


def _named(data_dir) -> str | None:
    """How the user named the data folder, for messages; None when the default places are searched."""
    if data_dir:
        return f"the data folder {data_dir}"
    if os.environ.get("FASHION_MNIST_DIR"):
        return f"FASHION_MNIST_DIR={os.environ['FASHION_MNIST_DIR']}"
    return None


def find_files(data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """The first folder that holds all four files (raw or .gz) -> {file name: path}.

    A folder the user names (``data_dir``, else ``$FASHION_MNIST_DIR``) is used or refused, never passed
    over for the system's copy.
    """
    dirs = search_dirs(data_dir)
    best: dict[str, Path] = {}
    for d in dirs:
        found = {}
        for name in FILES:
            for candidate in (d / name, d / f"{name}.gz"):
                if candidate.is_file():
                    found[name] = candidate
                    break
        if len(found) == len(FILES):
            return found
        best = found if len(found) > len(best) else best
    odd = [c for d in dirs for n in FILES for c in (d / n, d / f"{n}.gz") if c.exists() and not c.is_file()]
    odd += [c for d in dirs for n in FILES for c in (d / n, d / f"{n}.gz") if c.is_symlink() and not c.exists()]
    if odd:  # there, but no file to read (a named pipe, a link to a device or to nothing): not "missing"
        if odd[0].is_dir():
            what = "a folder"
        elif not odd[0].exists():
            what = f"a link to {os.readlink(odd[0])}, which does not exist"
        else:
            what = "not a regular file (a named pipe or a device?)"
        raise DataError(
            f"{odd[0]} is {what}, where a Fashion-MNIST file belongs; put the file itself there, or name another "
            f"folder. " + INSTALL_HINT
        )
    named = _named(data_dir)
    if named is not None:
        if not dirs[0].is_dir():
            raise DataError(f"{named} is not a folder; name the folder that holds the four Fashion-MNIST files")
        missing = [n for n in FILES if n not in best]
        raise DataError(
            f"{named} does not hold all four Fashion-MNIST files (missing: {', '.join(missing)}, raw or .gz); "
            f"add them or name another folder. " + INSTALL_HINT
        )
    raise DataError(
        "Fashion-MNIST not found: no folder holds all four files ("
        + ", ".join(FILES)
        + "). Searched: "
        + ", ".join(str(d) for d in dirs)
        + ". "
        + INSTALL_HINT
    )


def read_idx(raw: bytes, source: str = "IDX data") -> np.ndarray:
    """Parse IDX bytes (magic 0x0000TTNN: type TT, NN dimensions, big-endian sizes) into an array."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{source} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    dtype, ndim = IDX_DTYPES.get(raw[2]), raw[3]
    if dtype is None or ndim == 0:
        raise DataError(f"{source} is not an IDX file (magic {raw[:4].hex()}: unknown type or no dimensions)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{source} is truncated: {len(raw)} bytes, shorter than its {header}-byte header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(
            f"{source} has {len(raw)} bytes but its header {dims} says {expected}: "
            f"the file is {'truncated' if len(raw) < expected else 'longer than it should be'}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def read_file(path: Path, verify: bool = True) -> np.ndarray:
    """Read one IDX file (gz or raw), verify its decompressed bytes, parse it."""
    name = path.name.removesuffix(".gz")
    # a known file is read to one byte past its published size: a longer one is refused without being read whole
    # (a small .gz can decompress to gigabytes)
    limit = FILES[name][0] + 1 if verify and name in FILES else -1
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read(limit)
        else:
            with path.open("rb") as f:
                raw = f.read(limit)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"{path} cannot be read or decompressed ({e}); it is damaged: reinstall it. " + INSTALL_HINT
        ) from None
    if verify and name in FILES:
        size, sha = FILES[name]
        if len(raw) != size or hashlib.sha256(raw).hexdigest() != sha:
            raise DataError(
                f"{path} is not the published Fashion-MNIST file "
                f"({'more than ' if len(raw) > size else ''}{min(len(raw), size):,} bytes decompressed, "
                f"expected {size:,} with SHA-256 {sha[:12]}…): it is truncated or altered; "
                f"replace it. " + INSTALL_HINT
            )
    return read_idx(raw, str(path))


@dataclass(frozen=True)
class FashionMNIST:
    """The four arrays: images uint8 (N, 28, 28), labels int64 (N,)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str

    def origin(self) -> dict:
        """Which data a run used, for its history and report: the folder and the verified SHA-256 of each file."""
        return {"path": self.source, "sha256": {name: sha for name, (_, sha) in FILES.items()}}


@lru_cache(maxsize=4)
def _load(paths: tuple[tuple[str, str], ...]) -> FashionMNIST:
    arrays = {name: read_file(Path(p)) for name, p in paths}
    for split, n in (("train", EXAMPLES["train"]), ("t10k", EXAMPLES["test"])):
        images, labels = arrays[f"{split}-images-idx3-ubyte"], arrays[f"{split}-labels-idx1-ubyte"]
        if images.shape != (n, 28, 28) or labels.shape != (n,) or labels.max() >= len(CLASSES):
            raise DataError(
                f"{split} files hold images {images.shape} and labels {labels.shape}; "
                f"expected ({n}, 28, 28) and ({n},) with labels 0-9"
            )
    return FashionMNIST(
        arrays["train-images-idx3-ubyte"],
        arrays["train-labels-idx1-ubyte"].astype(np.int64),
        arrays["t10k-images-idx3-ubyte"],
        arrays["t10k-labels-idx1-ubyte"].astype(np.int64),
        str(Path(paths[0][1]).parent),
    )


def load_fashion_mnist(data_dir: str | os.PathLike | None = None) -> FashionMNIST:
    """Find, verify (SHA-256) and read the real Fashion-MNIST; cached per process."""
    return _load(tuple(sorted((k, str(v)) for k, v in find_files(data_dir).items())))


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) bilinear interpolation matrix with half-pixel centres (align_corners=False)."""
    m = np.zeros((n_out, n_in), dtype=np.float32)
    centre = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    centre = np.clip(centre, 0, n_in - 1)
    lo = np.floor(centre).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (centre - lo).astype(np.float32)
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a (B, H, W) float batch to (B, size, size): two matrix products, no Python loop."""
    _b, h, w = images.shape
    if (h, w) == (size, size):
        return images
    rows, cols = resize_matrix(h, size), resize_matrix(w, size)
    return np.matmul(np.matmul(rows, images), cols.T)


class Batches:
    """Seeded mini-batches of (images float32 in [0, 1], labels int64) in NCHW or NHWC layout.

    Epoch ``e`` of a shuffled stream uses the permutation drawn from ``(seed, e)``, so a run is
    reproducible, every framework sees the same order, and a resumed run continues the sequence.
    Iterating starts the next epoch; set :attr:`epoch` to jump.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        resize: int | None = None,
        layout: str = "NCHW",
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if layout not in ("NCHW", "NHWC"):
            raise ConfigError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = int(batch_size), shuffle, check_seed(seed)
        self.size = images.shape[1] if resize is None else check_input_size(resize)
        _check_batch_memory(min(self.batch_size, len(labels)), images.shape[1], self.size)
        self.layout = layout
        self.epoch = 0
        self.origin: dict | None = None  # where the images come from (FashionMNIST.origin), if known

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    @property
    def num_examples(self) -> int:
        return len(self.labels)

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.labels))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.labels))

    def batch(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = self.images[index].astype(np.float32) / np.float32(255)
        x = resize_images(x, self.size)
        x = x[:, :, :, None] if self.layout == "NHWC" else x[:, None]
        return np.ascontiguousarray(x), self.labels[index]

    def next_order(self) -> np.ndarray:
        """The example order of the next pass (epoch :attr:`epoch`'s), which this starts."""
        order = self.order(self.epoch)
        self.epoch += 1
        return order

    def __iter__(self):
        order = self.next_order()
        for start in range(0, len(order), self.batch_size):
            yield self.batch(order[start : start + self.batch_size])


class DataIter:
    """An iterable of (X, y) framework tensors over one split; each pass is the next seeded epoch.

    ``convert(images, labels)`` turns one NumPy batch into the framework's tensors: the only part of a
    backend's ``load_data_fashion_mnist`` that is its own.
    """

    def __init__(self, batches: Batches, convert, verified: bool = False):
        self.batches, self.convert = batches, convert
        self.verified = verified  # see common.training.verified: only the first batch of a pass is checked

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for x, y in self.batches:
            yield self.convert(x, y)


def _check_batch_memory(batch: int, side: int, size: int) -> None:
    """Refuse a stream whose every batch is larger than this machine's free memory: the resized batch and the
    resize's intermediate (:func:`resize_images`), float32, at least."""
    need = batch * size * (size + side) * 4
    available = available_memory()
    if available is not None and need > available:
        raise ConfigError(
            f"a batch of {batch} images resized to {size} px needs at least {format_bytes(need)} of memory, but "
            f"{format_bytes(available)} is available; lower resize (or batch_size)"
        )


def fashion_mnist_batches(
    batch_size: int,
    resize: int | None = None,
    seed: int = 0,
    layout: str = "NCHW",
    data_dir=None,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> tuple[Batches, Batches]:
    """(train, test) batch streams over the real data; the training stream is shuffled by ``seed``."""
    data = load_fashion_mnist(data_dir)
    for limit, what in ((train_limit, "train_limit"), (test_limit, "test_limit")):
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
            raise ConfigError(f"{what} must be a positive number of examples, got {limit!r}")
    train = Batches(
        data.train_images[:train_limit], data.train_labels[:train_limit], batch_size, True, seed, resize, layout
    )
    test = Batches(
        data.test_images[:test_limit], data.test_labels[:test_limit], batch_size, False, seed, resize, layout
    )
    train.origin = test.origin = data.origin()
    return train, test


def _expected_shape(config, layout: str) -> tuple[int, int, int]:
    c, s = config.in_channels, config.input_size
    return (c, s, s) if layout == "NCHW" else (s, s, c)


# How a batch of the other layout is turned into the one each framework's network takes: (label, expression).
TRANSPOSE = {
    "torch": ("PyTorch", "x.permute(0, 3, 1, 2)"),
    "tf": ("tf.keras", "tf.transpose(x, (0, 2, 3, 1))"),
    "mxnet": ("MXNet", "x.transpose((0, 3, 1, 2))"),
    "jax": ("JAX (Flax)", "jnp.transpose(x, (0, 2, 3, 1))"),
}


def _transposed(config, shape: tuple[int, ...], layout: str) -> bool:
    """Whether a rank-4 batch the network cannot take reads as one of the other layout (channels on the other side,
    square images the other way)."""
    other = "NHWC" if layout == "NCHW" else "NCHW"
    channels, spatial = (shape[1], shape[2:]) if other == "NCHW" else (shape[3], shape[1:3])
    mine = shape[1] if layout == "NCHW" else shape[3]
    return mine != config.in_channels and channels == config.in_channels and spatial[0] == spatial[1]


def _transpose_fix(layout: str, framework: str | None) -> str:
    """The advice for a batch of the other layout: what it looks like, what the network takes, how to turn it."""
    seen = "NHWC (channels last)" if layout == "NCHW" else "NCHW (channels first)"
    axes = (0, 3, 1, 2) if layout == "NCHW" else (0, 2, 3, 1)
    label, how = TRANSPOSE.get(framework or "", ("", f"the axes {axes}"))
    return f"this looks {seen}; the {label + ' ' if label else ''}network takes {layout}: transpose it with {how}"


def check_batch(
    config,
    x_shape,
    x_dtype: str,
    labels: np.ndarray | None = None,
    layout: str = "NCHW",
    all_finite: bool = True,
    where: str = "the batch",
    label_dtype: str | None = None,
    framework: str | None = None,
) -> None:
    """Refuse a batch the network built from ``config`` cannot take, with one message that says what to change.

    ``x_shape``/``x_dtype`` describe the images (``x_dtype`` a name such as ``"float32"``), ``labels`` are the
    class indices as a NumPy array (or None), ``layout`` is the framework's ("NCHW", or "NHWC" in tf.keras),
    ``all_finite`` whether every pixel is a finite number (the backend computes it, or passes True to skip),
    ``label_dtype`` the one label dtype the framework's loss takes, if it takes only one, ``framework`` the
    backend's name (``"torch"``, ``"tf"``, ``"mxnet"``), for the way to transpose a batch of the other layout.
    A batch wrong in shape and dtype is told both.
    """
    shape, want = tuple(int(n) for n in x_shape), _expected_shape(config, layout)
    hint = f"the network ({config.describe()}) takes {layout} batches of shape (N, {', '.join(map(str, want))})"
    dtype_fix = "" if x_dtype == "float32" else f"; it is also {x_dtype}: convert it to float32 (pixels in [0, 1])"
    if len(shape) != 4:
        fix = "add the batch axis (x[None])" if len(shape) == 3 else "reshape it"
        raise InputError(f"{where} has shape {shape} (rank {len(shape)}); {hint}: {fix}{dtype_fix}")
    if _transposed(config, shape, layout):
        raise InputError(
            f"{where} has shape {shape}: {_transpose_fix(layout, framework)} to get {(shape[0], *want)}{dtype_fix}"
        )
    channels, spatial = (shape[1], shape[2:]) if layout == "NCHW" else (shape[3], shape[1:3])
    if channels != config.in_channels:
        raise InputError(
            f"{where} has {channels} channel(s) (shape {shape}); {hint}: convert the images "
            f"or build the network with in_channels={channels}{dtype_fix}"
        )
    if spatial != (config.input_size,) * 2:
        raise InputError(
            f"{where} has {spatial[0]}x{spatial[1]} images (shape {shape}); {hint}: resize them to "
            f"{config.input_size}x{config.input_size} or build the network with input_size={spatial[0]}{dtype_fix}"
        )
    if shape[0] == 0:
        raise InputError(f"{where} is empty (shape {shape}); give at least one example")
    if x_dtype != "float32":
        raise InputError(f"{where} has dtype {x_dtype}; {hint} in float32: convert it (pixels scaled to [0, 1])")
    if not all_finite:
        raise InputError(
            f"{where} holds NaN or infinite pixel values; clean the data (or pass "
            f"check_finite=False to skip this check)"
        )
    if labels is not None:
        check_labels(config, labels, shape[0], where, label_dtype)


def check_labels(
    config, labels: np.ndarray, batch: int, where: str = "the batch", label_dtype: str | None = None
) -> None:
    """Labels must be one whole class index in [0, num_classes) per example (of ``label_dtype`` if given)."""
    labels = np.asarray(labels)
    if labels.shape != (batch,):
        raise InputError(
            f"{where} has labels of shape {labels.shape} for {batch} images; give one class index "
            f"per image, shape ({batch},)"
        )
    if label_dtype is not None and labels.dtype.name != label_dtype:
        raise InputError(f"{where} has labels of dtype {labels.dtype}; give {label_dtype} class indices")
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise InputError(f"{where} has labels of dtype {labels.dtype}; give integer class indices")
    if np.issubdtype(labels.dtype, np.floating) and not np.all(np.isfinite(labels) & (labels == np.round(labels))):
        raise InputError(f"{where} has labels that are not whole numbers; give integer class indices")
    low, high = labels.min(), labels.max()
    if low < 0 or high >= config.num_classes:
        bad = low if low < 0 else high
        raise InputError(
            f"{where} has label {bad:g}, outside [0, {config.num_classes}) for a network with "
            f"{config.num_classes} classes; fix the labels or build it with num_classes="
            f"{int(high) + 1 if low >= 0 else config.num_classes}"
        )
