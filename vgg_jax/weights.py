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

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from common.arch import VGGConfig
from common.errors import WeightsError, reason
from common.files import atomic_write
from common.interchange import weights_api
from common.spec import spec
from common.weights import (
    check_finite_weights,
    check_model_path,
    check_weights,
    existing_model,
    from_canonical,
    make_meta,
    meta_config,
    parse_meta,
    to_canonical,
)
from common.zoo import from_keras_applications

from .model import Net, from_config, initialise

# Flax's batch-norm variables under their canonical (PyTorch) names: (canonical, collection, Flax name)
_BN = (
    ("weight", "params", "scale"),
    ("bias", "params", "bias"),
    ("running_mean", "batch_stats", "mean"),
    ("running_var", "batch_stats", "var"),
)


def _order(module, keys):
    """``keys`` (a level of the variables) in the order the module uses them: JAX keeps a dict's keys sorted."""
    names = getattr(module, "names", None)  # a hand-made Sequential's layers, in order
    if names is None:
        return list(keys)
    return [n for n in dict.fromkeys(names) if n in keys]


def _sublayer(module, name):
    if getattr(module, "names", None) is None:
        return None
    return dict(zip(module.names, module.layers, strict=True))[name]


def _variables(net):
    """Canonical name -> (path in ``net.variables``, layout) in the network's order; the layout says how to convert.

    ``conv``: HWIO kernel; ``dense``: (in, out) kernel; ``flat``: the (in, out) kernel of the first dense layer of
    VGG and AlexNet, whose inputs arrive from the NHWC features in H,W,C order; ``None``: a vector.
    """
    found: dict[str, tuple[tuple[str, ...], str | None]] = {}

    def walk(params, path, module):
        for key in _order(module, params):
            sub, name, where = params[key], ".".join((*path, key)), (*path, key)
            if "kernel" in sub:
                layout = "conv" if len(sub["kernel"].shape) == 4 else "dense"
                found[f"{name}.weight"] = (("params", *where, "kernel"), layout)
                found[f"{name}.bias"] = (("params", *where, "bias"), None)
            elif "scale" in sub:
                for canonical, collection, flax_name in _BN:
                    found[f"{name}.{canonical}"] = ((collection, *where, flax_name), None)
            else:
                walk(sub, where, _sublayer(module, key))

    walk(net.variables.get("params", {}), (), net.module)
    if net.config is None:
        return found
    order = list(spec(net.config).param_shapes())  # canonical order; the first dense layer reads the NHWC features
    first_dense = next(n for n in order if n.endswith(".weight") and found[n][1] == "dense")
    found[first_dense] = (found[first_dense][0], "flat")
    return {n: found[n] for n in order}


def get(variables, path):
    for key in path:
        variables = variables[key]
    return variables


def put(variables, path, value):
    """Replace one leaf of a nested dict of variables, in place."""
    for key in path[:-1]:
        variables = variables[key]
    variables[path[-1]] = value


def export_weights(net: Net) -> dict[str, np.ndarray]:
    """Canonical name -> NumPy array (conv OIHW, dense (out, in), batch-norm statistics included)."""
    return {
        name: np.ascontiguousarray(to_canonical(np.asarray(get(net.variables, path)), layout, net.config))
        for name, (path, layout) in _variables(net).items()
    }


def _thawed(variables):
    """The variables as plain nested dicts, each level a new one (so a leaf can be replaced without touching
    another network's variables)."""
    return {k: _thawed(v) if isinstance(v, (dict, flax.core.FrozenDict)) else v for k, v in variables.items()}


def import_weights(net: Net, weights: Mapping[str, np.ndarray]) -> Net:
    """Set every parameter from canonical arrays; checks all names and shapes before changing anything."""
    weights = check_weights(net.config, weights, copy=False)
    variables, places = _thawed(net.variables), _variables(net)
    for name, array in weights.items():
        path, layout = places[name]
        put(variables, path, jnp.asarray(from_canonical(array, layout, net.config)))
    net.variables = variables
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
    data = serialization.msgpack_serialize({"vgg_meta": meta, "variables": variables})
    return atomic_write(path, lambda f: f.write(data))


def load_model(path: str | os.PathLike) -> Net:
    """A network rebuilt from a ``.msgpack`` of :func:`save_model` (MessagePack: data only, no code)."""
    path = existing_model(path, "jax")
    try:
        state = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # msgpack on damaged bytes: ExtraData, FormatError, StackError, ValueError, ...
        raise WeightsError(
            f"{path} is not a readable Flax file ({reason(e)}); it is empty, damaged or of another format"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("vgg_meta"), str) or "variables" not in state:
        raise WeightsError(f"{path} is a MessagePack file but not one of this project's models")
    net = from_config(meta_config(parse_meta(state["vgg_meta"], path), path))
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
