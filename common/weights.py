"""Framework-free weights: canonical names and layouts, checked against the spec, in a safe .npz file.

A file holds one array per canonical parameter (``block1.conv1.weight`` OIHW, ``fc1.weight`` (out, in)
with features in C,H,W order, batch-norm ``running_mean``/``running_var`` included) and a JSON
record ``__meta__`` (format version, configuration, source framework and version). It is read with
``allow_pickle=False``: loading can never run code.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import tokenize
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .arch import NetConfig, config_from_dict
from .errors import ConfigError, WeightsError, reason
from .files import atomic_write, check_name
from .recipe import check_seed
from .spec import available_memory, format_bytes, memory_needed, spec

FORMAT = "vgg-weights"
VERSION = 1
META_KEY = "__meta__"


# What NumPy raises reading a damaged .npz: its zip layer, and its header parser (a damaged header raises
# tokenize.TokenError or SyntaxError from ast.literal_eval).
UNREADABLE = (OSError, ValueError, zipfile.BadZipFile, EOFError, tokenize.TokenError, SyntaxError)


def check_weights(
    config: NetConfig,
    weights: Mapping[str, np.ndarray],
    copy: bool = True,
    source: str | os.PathLike = "the weights given",
) -> dict[str, np.ndarray]:
    """Every canonical parameter present with its canonical shape, nothing extra, every value finite in float32;
    float32 copies back.

    ``copy=False``: an array that is float32 already comes back as it is, not copied; for callers that only read
    the arrays (an import copies them into the framework, a save writes them), so that a network's worth of
    weights is not held twice.
    """
    expected = spec(config).param_shapes()
    for name, shape in expected.items():
        if name not in weights:
            raise WeightsError(
                f"parameter {name} {shape} is missing from the weights given "
                f"({len(weights)} arrays); they were made for another configuration"
            )
        got = tuple(np.shape(weights[name]))
        if got != shape:
            raise WeightsError(
                f"parameter {name} has shape {got} in the weights given but {shape} in this network "
                f"({config.describe()}); build the network with the configuration the weights "
                f"were saved from"
            )
    extra = [n for n in weights if n not in expected]
    if extra:
        raise WeightsError(
            f"the weights hold {len(extra)} parameter(s) this network does not have, first {extra[0]}; "
            f"they were made for another configuration"
        )
    out = {}
    for name in expected:
        array = np.asarray(weights[name])
        if not np.issubdtype(array.dtype, np.floating):
            raise WeightsError(f"parameter {name} has dtype {array.dtype}; expected floating point")
        with np.errstate(over="ignore"):  # a value float32 cannot hold becomes infinite, refused just below
            out[name] = array.astype(np.float32, copy=copy)
    return check_finite_weights(out, source)


def check_finite_weights(weights: dict[str, np.ndarray], source: str | os.PathLike) -> dict[str, np.ndarray]:
    """``weights`` if every value is a finite number; else a WeightsError naming the first bad parameter.

    A float64 sum of float32 values cannot overflow, so it is finite exactly when every value is, and it needs
    no array of flags as large as the weights.
    """
    bad = [name for name, array in weights.items() if not np.isfinite(np.sum(array, dtype=np.float64))]
    if bad:
        raise WeightsError(
            f"NaN or infinite values (as float32) in {source}, in {len(bad)} parameter(s), first {bad[0]}: they "
            f"come from a run that diverged; use an earlier checkpoint's weights or train again with a lower "
            f"learning rate"
        )
    return weights


# Layouts other frameworks keep weights in, converted here once for every backend and zoo reader:
# "conv": HWIO kernels (Keras); "dense": (in, out) kernels (Keras); "flat": the (in, out) kernel of the dense
# layer right after Flatten on NHWC features, whose inputs arrive in H,W,C order — its rows must be permuted
# to C,H,W, not only transposed. ``None``: vectors, the same everywhere.
LAYOUTS = ("conv", "dense", "flat", None)


def _final_shape(config: NetConfig | None) -> tuple[int, int]:
    """(side, channels) of the feature map entering the first dense layer: what the "flat" layout needs."""
    if config is None:
        raise ConfigError("the 'flat' layout (a dense layer after Flatten) needs the network's configuration")
    return config.final_size, config.final_channels


def to_canonical(array: np.ndarray, layout: str | None, config: NetConfig | None) -> np.ndarray:
    """An array in ``layout`` -> canonical (conv OIHW, dense (out, in) with C,H,W features)."""
    if layout == "conv":
        return array.transpose(3, 2, 0, 1)
    if layout == "dense":
        return array.T
    if layout == "flat":  # rows (h, w, c) -> columns (c, h, w)
        s, c = _final_shape(config)
        return array.reshape(s, s, c, -1).transpose(3, 2, 0, 1).reshape(array.shape[1], -1)
    return array


def from_canonical(array: np.ndarray, layout: str | None, config: NetConfig | None) -> np.ndarray:
    """A canonical array -> ``layout``; the inverse of :func:`to_canonical`."""
    if layout == "conv":
        return array.transpose(2, 3, 1, 0)
    if layout == "dense":
        return array.T
    if layout == "flat":  # columns (c, h, w) -> rows (h, w, c)
        s, c = _final_shape(config)
        return array.reshape(-1, c, s, s).transpose(2, 3, 1, 0).reshape(-1, array.shape[0])
    return array


# Values drawn at a time in float64 before they are stored in float32.
_DRAW_CHUNK = 1 << 20


def _uniform_float32(rng: np.random.Generator, limit: float, shape: tuple[int, ...]) -> np.ndarray:
    """``rng.uniform(-limit, limit, shape).astype(np.float32)``, the same values, without the float64 whole.

    Drawn in chunks (the generator gives the same sequence in pieces), so the largest layer (fc1 of the book's
    VGG, 103 M values) does not need a transient 800 MB float64 array beside its 400 MB result.
    """
    out = np.empty(shape, np.float32)
    flat = out.reshape(-1)
    for start in range(0, flat.size, _DRAW_CHUNK):
        flat[start : start + _DRAW_CHUNK] = rng.uniform(-limit, limit, size=min(_DRAW_CHUNK, flat.size - start))
    return out


def xavier_init(config: NetConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """The recipe's starting weights, drawn from one seeded generator in canonical order.

    Xavier-uniform (Glorot) conv and dense weights, zero biases, batch norm at identity — so every
    framework can start from bit-identical weights.
    """
    rng = np.random.default_rng(check_seed(seed))
    out = {}
    for name, shape in spec(config).param_shapes().items():
        if name.endswith(".weight") and len(shape) > 1:
            receptive = int(np.prod(shape[2:]))
            limit = np.sqrt(6.0 / (shape[0] * receptive + shape[1] * receptive))
            out[name] = _uniform_float32(rng, limit, shape)
        elif name.endswith((".weight", ".running_var")):
            out[name] = np.ones(shape, np.float32)
        else:
            out[name] = np.zeros(shape, np.float32)
    return out


INIT_SCHEMES = ("normal", "constant", "xavier", "default")


def trainable_shapes(weights: dict[str, np.ndarray]) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of the trainable parameters among canonical weights (batch-norm statistics left out)."""
    return [
        (name, tuple(np.shape(a))) for name, a in weights.items() if not name.endswith(("running_mean", "running_var"))
    ]


def scheme_weights(config: NetConfig, scheme="xavier", seed: int = 0, value: float = 1.0) -> dict[str, np.ndarray]:
    """Starting weights by one of the book's schemes, drawn from one seeded generator in canonical order.

    ``"normal"``: N(0, 0.01) conv and dense weights; ``"constant"``: every weight ``value``; ``"xavier"``:
    :func:`xavier_init`; a function ``(name, shape, rng) -> array`` (the book's ``my_init``) for each conv
    and dense weight. Biases are zero and batch norm at identity in every scheme, so the same seed gives
    bit-identical weights in every framework. (``"default"``, the framework's own, is each backend's.)
    """
    if scheme == "xavier":
        return xavier_init(config, seed)
    if not callable(scheme) and scheme not in ("normal", "constant"):
        raise ConfigError(
            f"unknown init scheme {scheme!r}; choose from {', '.join(INIT_SCHEMES)} or give a "
            f"function (name, shape, rng) -> array"
        )
    if scheme == "constant" and (
        isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(np.float32(value))
    ):
        raise ConfigError(f"value must be a finite number (float32), got {value!r}")
    rng, out = np.random.default_rng(check_seed(seed)), xavier_init(config, seed)
    for name, array in out.items():
        if not (name.endswith(".weight") and array.ndim > 1):
            continue
        if scheme == "normal":
            drawn = rng.normal(0.0, 0.01, array.shape)
        elif scheme == "constant":
            drawn = np.full(array.shape, value)
        else:
            drawn = np.asarray(scheme(name, array.shape, rng))
            if drawn.shape != array.shape:
                raise ConfigError(f"the init function returned shape {drawn.shape} for {name}, which is {array.shape}")
            if not np.issubdtype(drawn.dtype, np.number) or not np.isfinite(drawn.astype(np.float32)).all():
                raise ConfigError(f"the init function returned values for {name} that are not finite numbers")
        out[name] = drawn.astype(np.float32)
    for name, array in out.items():  # biases zero whatever xavier_init drew for the weights above
        if name.endswith(".bias"):
            array[...] = 0
    return out


def make_meta(config: NetConfig, source: str, source_version: str, **extra) -> dict:
    """The metadata every saved model carries, whatever its format: format version, configuration, source."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "config": config.to_dict(),
        "source": source,
        "source_version": source_version,
        **extra,
    }


def parse_meta(text: str, path: str | os.PathLike) -> dict:
    """Metadata read from a file: checked to be this project's and of a version this code reads."""
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, RecursionError, TypeError, UnicodeDecodeError) as e:  # Recursion: deep nesting
        raise WeightsError(f"{path} has unreadable metadata ({e}); it is damaged or of another format") from None
    if isinstance(meta, dict) and meta.get("format") == "vgg-checkpoint":
        raise WeightsError(
            f"{path} is a training checkpoint, not a weights file: evaluate or convert the run's weights.npz or "
            f"model file beside it, or resume the run from it"
        )
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        got = (meta.get("format"), meta.get("version")) if isinstance(meta, dict) else (None, None)
        raise WeightsError(
            f"{path} has format {got[0]!r} version {got[1]!r}; this version reads {FORMAT!r} version {VERSION}"
        )
    return meta


def meta_config(meta: dict, path: str | os.PathLike, expected: NetConfig | None = None) -> NetConfig:
    """The configuration a file was saved from; with ``expected``, refuse another one before any tensor is read."""
    try:
        saved = config_from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise WeightsError(f"{path} has a damaged configuration record ({e})") from None
    if expected is not None and type(saved) is not type(expected):
        raise WeightsError(
            f"{path} holds weights for {saved.describe()}, but this network is "
            f"{expected.describe()}; build the network with the saved configuration"
        )
    if expected is not None and saved != expected:
        diffs = [k for k, v in expected.to_dict().items() if saved.to_dict()[k] != v and k != "dropout"]
        if diffs:
            raise WeightsError(
                f"{path} holds weights for {saved.describe()}, but this network is "
                f"{expected.describe()} (they differ in {', '.join(diffs)}); build the network "
                f"with the saved configuration"
            )
    return saved


# A saved model's format follows from its name: the portable .npz, or one framework's own file.
MODEL_SUFFIXES = {"npz": ".npz", "torch": ".pt", "tf": ".weights.h5", "mxnet": ".params", "jax": ".msgpack"}


def model_format(path: str | os.PathLike) -> str:
    """Which format a model file is in (``npz``, ``torch``, ``tf`` or ``mxnet``), from its name."""
    name = Path(path).name
    for fmt, suffix in MODEL_SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    raise ConfigError(
        f"cannot tell the format of {path}: name it " + ", ".join(f"*{s} ({f})" for f, s in MODEL_SUFFIXES.items())
    )


def no_file(path: str | os.PathLike, what: str) -> str:
    """Why ``path``, which is no file, cannot be read: it is missing, a folder, or no regular file (a pipe)."""
    if Path(path).is_dir():
        return f"{what} {path} is a folder, not a file"
    if Path(path).exists():
        return f"{what} {path} is not a regular file (a pipe or a device?); name a file"
    return f"{what} {path} does not exist"


def check_model_path(path: str | os.PathLike, fmt: str) -> Path:
    """``path`` if its name has ``fmt``'s suffix, else an error that says which name to give."""
    if model_format(path) != fmt:
        raise ConfigError(f"{path}: a {fmt} model file must be named *{MODEL_SUFFIXES[fmt]}")
    return Path(path)


def existing_model(path: str | os.PathLike, fmt: str) -> Path:
    """``path``, checked to be named for ``fmt`` and to exist: what every ``load_model`` starts with."""
    path = check_model_path(check_name(path), fmt)
    if not path.is_file():
        raise WeightsError(no_file(path, "model file"))
    return path


# What a model file may hold beyond its network's values (names, shapes, its record): 1 MiB, and 1/16 more.
FILE_MARGIN = 2**20


def most_file_bytes(config: NetConfig) -> int:
    """The most bytes a model file of one network of ``config`` takes: its parameters and statistics as float32
    (:func:`common.spec.memory_needed`), 1/16 more and :data:`FILE_MARGIN` for what surrounds them."""
    need = memory_needed(config)
    return need + need // 16 + FILE_MARGIN


def check_file_size(path: Path, config: NetConfig) -> None:
    """Refuse, before it is read whole, a file larger than a model file of the network its record describes
    (:func:`most_file_bytes`)."""
    size, most = path.stat().st_size, most_file_bytes(config)
    if size > most:
        raise WeightsError(
            f"{path} is {format_bytes(size)}, more than the {format_bytes(most)} a model file of the network it "
            f"describes takes ({config.describe()}); it was altered or made by another program"
        )


def save_npz(
    path: str | os.PathLike,
    config: NetConfig,
    weights: dict[str, np.ndarray],
    source: str,
    source_version: str,
    extra: dict | None = None,
) -> Path:
    """Write canonical weights and their metadata atomically."""
    weights = check_weights(config, weights, copy=False)
    meta = make_meta(config, source, source_version, **(extra or {}))
    return write_npz(path, {**weights, META_KEY: np.array(json.dumps(meta))})


def savez(file, **arrays) -> None:
    """``numpy.savez`` (the same archive, read by ``numpy.load``), but the archive is closed when a write fails.

    NumPy leaves it open then; Python closes it later, after its file, and prints "Exception ignored in
    ZipFile.__del__ … seek of closed file" under an interrupted or failed save.
    """
    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Named arrays to an ``.npz`` at ``path``, atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda f: savez(f, **arrays))


def read_meta(path: str | os.PathLike) -> dict:
    """The metadata of a weights file, read before any tensor."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(no_file(path, "weights file"))
    native = next((f for f, suffix in MODEL_SUFFIXES.items() if f != "npz" and path.name.endswith(suffix)), None)
    if native is not None:
        raise WeightsError(
            f"{path} is a {native} model file, not a .npz weights file: read it with vgg_{native}.load_model "
            f"(or vgg convert it to .npz)"
        )
    try:
        with path.open("rb") as f:
            head = f.read(2)
        if head != b"PK":  # NumPy would read anything else as a pickle, and refuse it as one
            raise WeightsError(f"{path} is not an .npz file (not a zip archive); it is damaged or of another format")
        with np.load(path, allow_pickle=False) as z:
            if META_KEY not in z.files:
                raise WeightsError(
                    f"{path} is an .npz file but not one of this project's weights files (no {META_KEY} record)"
                )
            text = str(npz_array(z, META_KEY, path, limit=META_LIMIT))
    except WeightsError:
        raise
    except UNREADABLE as e:
        raise WeightsError(
            f"{path} is not a readable weights file ({reason(e)}); it is damaged or of another format"
        ) from None
    return parse_meta(text, path)


# The most bytes the record of a file (its JSON metadata, a checkpoint's history included) may hold.
META_LIMIT = 64 * 2**20


def npz_array(
    z, key: str, path: str | os.PathLike, shape: tuple[int, ...] | None = None, limit: int | None = None
) -> np.ndarray:
    """The array ``key`` of the open ``.npz`` ``z`` (``np.load``'s), read only once its header is checked: numpy
    makes the array its header describes before reading a byte of it, so a header claiming more bytes than its
    member holds, or than this machine has free, is a WeightsError here instead of a MemoryError there.

    ``shape``: the shape the configuration gives this array (a floating-point one); ``limit``: the most bytes it
    may take. Both are checked on the header alone, before the member is decompressed: however well a member
    compresses, no array larger than the network the file describes is made.
    """
    member = z.zip.getinfo(f"{key}.npy")
    with z.zip.open(member) as f:
        version = np.lib.format.read_magic(f)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read:
            raise WeightsError(f"{path}: its array {key} has an .npy header of version {version}; it is damaged")
        got, _, dtype = read[version](f)
        claimed = math.prod(got) * dtype.itemsize
        if shape is not None and (tuple(got) != tuple(shape) or dtype.kind != "f" or dtype.itemsize > 8):
            raise WeightsError(
                f"{path}: its array {key} is declared {tuple(got)} of {dtype}, but the configuration recorded in "
                f"the file gives it shape {tuple(shape)} in floating point; it was altered or made by another program"
            )
        free = available_memory()
        over = limit is not None and claimed > limit
        room = f"where at most {format_bytes(limit or 0)} belongs" if over else f"in {format_bytes(member.file_size)}"
        if over or claimed > member.file_size or (free is not None and claimed > free):
            raise WeightsError(
                f"{path}: its array {key} claims shape {tuple(got)} of {dtype} ({format_bytes(claimed)}) {room}; "
                f"it is damaged or of another program"
            )
    return z[key]


def stored_zip(path: str | os.PathLike, writer: str) -> None:
    """Refuse a zip archive (a ``.pt``) with a compressed member, which ``writer`` never writes: it could inflate
    to any size once read. A file that is no zip archive is left to its reader to refuse."""
    try:
        with zipfile.ZipFile(path) as archive:
            packed = [m.filename for m in archive.infolist() if m.compress_type != zipfile.ZIP_STORED]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return
    if packed:
        raise WeightsError(
            f"{path} holds compressed members (first {packed[0]}), which {writer} never writes; it was altered or "
            f"made by another program"
        )


def extra_arrays(path: str | os.PathLike, names, expected) -> None:
    """Refuse arrays of a file that its configuration does not have, before any is read."""
    extra = [n for n in names if n not in expected]
    if extra:
        raise WeightsError(
            f"{path} holds {len(extra)} array(s) the network it describes does not have, first {extra[0]}; it was "
            f"altered or made by another program"
        )


def load_npz(path: str | os.PathLike, config: NetConfig | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Read a weights file; with ``config``, refuse one saved for another configuration before reading tensors."""
    meta = read_meta(path)
    saved = meta_config(meta, path, config)
    expected = spec(config or saved).param_shapes()
    try:
        with np.load(path, allow_pickle=False) as z:
            names = [k for k in z.files if k != META_KEY]
            extra_arrays(path, names, expected)
            weights = {k: npz_array(z, k, path, expected[k]) for k in names}
    except UNREADABLE as e:
        raise WeightsError(f"{path} is damaged ({type(e).__name__}: {e})") from None
    return check_weights(config or saved, weights, source=path), meta
