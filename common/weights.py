"""Framework-free weights: canonical names and layouts, checked against the spec, in a safe .npz file.

A file holds one array per canonical parameter (``block1.conv1.weight`` OIHW, ``fc1.weight`` (out, in)
with features in C,H,W order, batch-norm ``running_mean``/``running_var`` included) and a JSON
record ``__meta__`` (format version, configuration, source framework and version). It is read with
``allow_pickle=False``: loading can never run code.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .arch import VGGConfig
from .errors import ConfigError, WeightsError
from .spec import spec

FORMAT = "vgg-weights"
VERSION = 1
META_KEY = "__meta__"


def check_weights(config: VGGConfig, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every canonical parameter present with its canonical shape, nothing extra; float32 copies back."""
    expected = spec(config).param_shapes()
    for name, shape in expected.items():
        if name not in weights:
            raise WeightsError(f"parameter {name} {shape} is missing from the weights given "
                               f"({len(weights)} arrays); they were made for another configuration")
        got = tuple(np.shape(weights[name]))
        if got != shape:
            raise WeightsError(f"parameter {name} has shape {got} in the weights given but {shape} in this network "
                               f"({config.describe()}); build the network with the configuration the weights "
                               f"were saved from")
    extra = [n for n in weights if n not in expected]
    if extra:
        raise WeightsError(f"the weights hold {len(extra)} parameter(s) this network does not have, first {extra[0]}; "
                           f"they were made for another configuration")
    out = {}
    for name in expected:
        array = np.asarray(weights[name])
        if not np.issubdtype(array.dtype, np.floating):
            raise WeightsError(f"parameter {name} has dtype {array.dtype}; expected floating point")
        out[name] = array.astype(np.float32)
    return out


def xavier_init(config: VGGConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """The recipe's starting weights, drawn from one seeded generator in canonical order.

    Xavier-uniform (Glorot) conv and dense weights, zero biases, batch norm at identity — so every
    framework can start from bit-identical weights.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in spec(config).param_shapes().items():
        if name.endswith(".weight") and len(shape) > 1:
            receptive = int(np.prod(shape[2:]))
            limit = np.sqrt(6.0 / (shape[0] * receptive + shape[1] * receptive))
            out[name] = rng.uniform(-limit, limit, size=shape).astype(np.float32)
        elif name.endswith((".weight", ".running_var")):
            out[name] = np.ones(shape, np.float32)
        else:
            out[name] = np.zeros(shape, np.float32)
    return out


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(file object)`` on a temporary file beside ``path``, then rename it into place.

    A crash at any moment leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise ConfigError(f"folder {path.parent} does not exist; create it or choose another path")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_npz(path: str | os.PathLike, config: VGGConfig, weights: dict[str, np.ndarray], source: str,
             source_version: str, extra: dict | None = None) -> Path:
    """Write canonical weights and their metadata atomically."""
    weights = check_weights(config, weights)
    meta = {"format": FORMAT, "version": VERSION, "config": config.to_dict(), "source": source,
            "source_version": source_version, **(extra or {})}
    arrays = {**weights, META_KEY: np.array(json.dumps(meta))}
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def read_meta(path: str | os.PathLike) -> dict:
    """The metadata of a weights file, read before any tensor."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            if META_KEY not in z.files:
                raise WeightsError(f"{path} is an .npz file but not one of this project's weights files "
                                   f"(no {META_KEY} record)")
            meta = json.loads(str(z[META_KEY]))
    except WeightsError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, json.JSONDecodeError) as e:
        raise WeightsError(f"{path} is not a readable weights file ({type(e).__name__}: {e}); "
                           f"it is damaged or of another format") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise WeightsError(f"{path} has format {meta.get('format')!r} version {meta.get('version')!r}; "
                           f"this version reads {FORMAT!r} version {VERSION}")
    return meta


def load_npz(path: str | os.PathLike, config: VGGConfig | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Read a weights file; with ``config``, refuse one saved for another configuration before reading tensors."""
    meta = read_meta(path)
    saved = VGGConfig.from_dict(meta["config"])
    if config is not None and saved != config:
        diffs = [k for k, v in config.to_dict().items() if saved.to_dict()[k] != v and k != "dropout"]
        if diffs:
            raise WeightsError(f"{path} holds weights for {saved.describe()}, but this network is "
                               f"{config.describe()} (they differ in {', '.join(diffs)}); build the network "
                               f"with the saved configuration")
    try:
        with np.load(path, allow_pickle=False) as z:
            weights = {k: z[k] for k in z.files if k != META_KEY}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise WeightsError(f"{path} is damaged ({type(e).__name__}: {e})") from None
    return check_weights(config or saved, weights), meta
