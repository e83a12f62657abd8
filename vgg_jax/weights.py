"""Weights in canonical form: Flax's kernels converted at the edge (HWIO -> OIHW, (in, out) -> (out, in)).

The framework's own file is Flax's serialization (``flax.serialization``: MessagePack, data only, no code) of
the network's variables beside the configuration.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import msgpack  # MessagePack itself, the format library flax serializes with: its record is read first, alone
import numpy as np
from flax import serialization

from common.arch import NetConfig, VGGConfig
from common.errors import WeightsError, reason
from common.files import atomic_write
from common.interchange import weights_api
from common.weights import (
    META_LIMIT,
    check_file_size,
    check_finite_weights,
    check_model_path,
    check_weights,
    existing_model,
    make_meta,
    meta_config,
    parse_meta,
    to_canonical,
)
from common.zoo import from_keras_applications

from .model import Net, _variables, from_config, get, initialise, put_weights


def export_weights(net: Net) -> dict[str, np.ndarray]:
    """Canonical name -> NumPy array (conv OIHW, dense (out, in), batch-norm statistics included)."""
    return {
        name: np.ascontiguousarray(to_canonical(np.asarray(get(net.variables, path)), layout, net.config))
        for name, (path, layout) in _variables(net).items()
    }


def import_weights(net: Net, weights: Mapping[str, np.ndarray]) -> Net:
    """Set every parameter from canonical arrays; checks all names and shapes before changing anything."""
    put_weights(net, check_weights(net.config, weights, copy=False))
    return net


def _default_init(net):
    """Flax's init of the module (the recipe's Xavier-uniform, as this package builds its layers) from a new key."""
    config = net.config
    net.variables = dict(initialise(net.module, 1, config.input_size, config.input_size, config.in_channels))


named_parameters, init_weights, save_weights, load_weights = weights_api(
    export_weights, import_weights, "jax", jax.__version__, _default_init
)


def save_model(net: Net, path: str | os.PathLike) -> Path:
    """Flax's serialization (``.msgpack``) of the network's variables with its configuration, written atomically."""
    path = check_model_path(path, "jax")
    meta = json.dumps(make_meta(net.config, "jax", jax.__version__))
    check_finite_weights(export_weights(net), "the network")
    variables = jax.tree_util.tree_map(np.asarray, serialization.to_state_dict(net.variables))
    # in place: the copy flax makes otherwise sorts the keys, and the record must come first (_read_config)
    data = serialization.msgpack_serialize({"vgg_meta": meta, "variables": variables}, in_place=True)
    return atomic_write(path, lambda f: f.write(data))


def _unreadable(path: Path, e: Exception) -> WeightsError:
    return WeightsError(f"{path} is not a readable Flax file ({reason(e)}); it is empty, damaged or of another format")


def _read_config(path: Path) -> NetConfig:
    """The configuration in the record of a ``.msgpack`` of :func:`save_model`, its first key, read alone by
    MessagePack's streaming unpacker: no more of the file than the record (at most META_LIMIT bytes)."""
    try:
        with path.open("rb") as f:
            unpacker = msgpack.Unpacker(f, raw=False, max_buffer_size=META_LIMIT + 2**10)
            unpacker.read_map_header()
            first = unpacker.unpack()
            meta = unpacker.unpack() if first == "vgg_meta" else None
    except Exception as e:  # msgpack on damaged bytes: OutOfData, FormatError, BufferFull, ValueError, ...
        raise _unreadable(path, e) from None
    if first == "variables":  # the layout of vgg_jax's first save_model, whose record came last
        raise WeightsError(
            f"{path} keeps its record after its weights, as vgg_jax's first version wrote it, so its size cannot be "
            f"checked before it is read; save the network again with this version"
        )
    if not isinstance(meta, str):
        raise WeightsError(f"{path} is a MessagePack file but not one of this project's models")
    return meta_config(parse_meta(meta, path), path)


def load_model(path: str | os.PathLike) -> Net:
    """A network rebuilt from a ``.msgpack`` of :func:`save_model` (MessagePack: data only, no code).

    The record is read first (:func:`_read_config`), and a file larger than a model of the network it describes
    is refused before the rest is read (:func:`common.weights.check_file_size`).
    """
    path = existing_model(path, "jax")
    config = _read_config(path)
    check_file_size(path, config)
    try:
        state = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # msgpack on damaged bytes: ExtraData, FormatError, StackError, ValueError, ...
        raise _unreadable(path, e) from None
    if not isinstance(state, dict) or not isinstance(state.get("vgg_meta"), str) or "variables" not in state:
        raise WeightsError(f"{path} is a MessagePack file but not one of this project's models")
    net = from_config(config)
    try:
        saved = type(net)(net.module, serialization.from_state_dict(net.variables, state["variables"]), net.config)
        weights = export_weights(saved)
    except Exception as e:  # a tree or an array that is not the network's
        raise WeightsError(f"{path} does not fit the network it describes ({reason(e)}); it is damaged") from None
    try:
        return import_weights(net, weights)
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}") from None


def zoo_weights(zoo_net: Any) -> tuple[VGGConfig, dict[str, np.ndarray]]:
    """(config, canonical weights) of a ``keras.applications`` VGG16 or VGG19 built with ``include_top=True``.

    JAX has no model zoo of its own; the Keras one is read here as in ``vgg_tf`` (its layers' NumPy arrays).
    """
    return from_keras_applications(
        [(layer.name, [np.asarray(w) for w in layer.get_weights()]) for layer in zoo_net.layers if layer.get_weights()]
    )
