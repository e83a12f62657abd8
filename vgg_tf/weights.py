"""Weights in canonical form: Keras' kernels converted at the edge (HWIO -> OIHW, (in, out) -> (out, in))."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np
import tensorflow as tf

from common.arch import VGGConfig
from common.errors import WeightsError, reason
from common.files import atomic_write
from common.interchange import weights_api
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

from .model import Net, _named_layers, from_config

# Keras' batch-norm variables under their canonical (PyTorch) names
_BN = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"), ("running_var", "moving_variance"))


def _variables(net):
    """Canonical name -> (Keras variable, layout) in the network's order; the layout says how to convert.

    ``conv``: HWIO kernel; ``dense``: (in, out) kernel; ``flat``: the (in, out) kernel of the dense layer after
    ``Flatten``, whose inputs arrive in H,W,C order; ``None``: a vector, the same in both.
    """
    out: dict[str, tuple[Any, str | None]] = {}
    after_flatten = False
    for name, layer in _named_layers(net):
        if isinstance(layer, keras.layers.Flatten):
            after_flatten = True
        elif isinstance(layer, keras.layers.Conv2D):
            out[f"{name}.weight"], out[f"{name}.bias"] = (layer.kernel, "conv"), (layer.bias, None)
        elif isinstance(layer, keras.layers.Dense):
            out[f"{name}.weight"] = (layer.kernel, "flat" if after_flatten else "dense")
            out[f"{name}.bias"] = (layer.bias, None)
            after_flatten = False
        elif isinstance(layer, keras.layers.BatchNormalization):
            for canonical, keras_name in _BN:
                out[f"{name}.{canonical}"] = (getattr(layer, keras_name), None)
    return out


def export_weights(net: Net) -> dict[str, np.ndarray]:
    """Canonical name -> NumPy array (conv OIHW, dense (out, in), batch-norm statistics included)."""
    return {
        name: np.ascontiguousarray(to_canonical(keras.ops.convert_to_numpy(v), layout, net.config))
        for name, (v, layout) in _variables(net).items()
    }


def import_weights(net: Net, weights: Mapping[str, np.ndarray]) -> Net:
    """Set every parameter from canonical arrays; checks all names and shapes before changing anything."""
    weights = check_weights(net.config, weights, copy=False)
    variables = _variables(net)
    converted = {
        name: np.ascontiguousarray(from_canonical(array, variables[name][1], net.config))
        for name, array in weights.items()
    }
    for name, array in converted.items():
        variables[name][0].assign(array)
    return net


def _default_init(net):
    """Keras' own: Glorot-uniform kernels, zero biases, batch norm at identity (``init_weights(net, "default")``)."""
    for _, layer in _named_layers(net):
        for w in layer.weights:
            initializer = getattr(
                layer,
                {
                    "kernel": "kernel_initializer",
                    "bias": "bias_initializer",
                    "gamma": "gamma_initializer",
                    "beta": "beta_initializer",
                    "moving_mean": "moving_mean_initializer",
                    "moving_variance": "moving_variance_initializer",
                }[w.name],
            )
            w.assign(initializer(w.shape))


named_parameters, init_weights, save_weights, load_weights = weights_api(
    export_weights, import_weights, "tf", tf.__version__, _default_init
)


def save_model(net: Net, path: str | os.PathLike) -> Path:
    """Keras' own weights file (``.weights.h5``) with the configuration as an HDF5 attribute, written atomically."""
    path = check_model_path(path, "tf")
    meta = json.dumps(make_meta(net.config, "tf", tf.__version__))
    check_finite_weights(export_weights(net), "the network")

    def write(tmp):
        net.save_weights(tmp)
        with h5py.File(tmp, "a") as f:
            f.attrs["vgg_meta"] = meta

    return atomic_write(path, write, by_name=True)


def load_model(path: str | os.PathLike) -> Net:
    """A network rebuilt from a ``.weights.h5`` of :func:`save_model` (HDF5: data only, no code)."""
    path = existing_model(path, "tf")
    try:
        with h5py.File(path, "r") as f:
            text = f.attrs.get("vgg_meta")
    except Exception as e:  # h5py on damaged bytes: OSError, RuntimeError, ...
        raise WeightsError(
            f"{path} is not a readable HDF5 file ({reason(e)}); it is empty, damaged or of another format"
        ) from None
    if text is None:
        raise WeightsError(f"{path} is a Keras weights file but not one of this project's models")
    net = from_config(meta_config(parse_meta(text, path), path))
    try:
        net.load_weights(path)
    except (ValueError, KeyError, OSError) as e:
        raise WeightsError(f"{path} does not fit the network it describes ({e}); it is damaged") from None
    check_finite_weights(export_weights(net), path)  # Keras reads the file into the network, past check_weights
    return net


def zoo_weights(zoo_net: Any) -> tuple[VGGConfig, dict[str, np.ndarray]]:
    """(config, canonical weights) of a ``keras.applications`` VGG16 or VGG19 built with ``include_top=True``."""
    return from_keras_applications(
        [
            (layer.name, [keras.ops.convert_to_numpy(w) for w in layer.weights])
            for layer in zoo_net.layers
            if layer.weights
        ]
    )
