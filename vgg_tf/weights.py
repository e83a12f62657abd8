"""Weights in canonical form: Keras' kernels converted at the edge (HWIO -> OIHW, (in, out) -> (out, in))."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from common.weights import check_weights, load_npz, save_npz

from .model import _named_layers

# Keras' batch-norm variables under their canonical (PyTorch) names
_BN = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"), ("running_var", "moving_variance"))


def _variables(net):
    """Canonical name -> (Keras variable, layout) in the network's order; the layout says how to convert.

    ``conv``: HWIO kernel; ``dense``: (in, out) kernel; ``flat``: the (in, out) kernel of the dense layer after
    ``Flatten``, whose inputs arrive in H,W,C order; ``None``: a vector, the same in both.
    """
    out, after_flatten = {}, False
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


def _to_canonical(array, layout, config):
    if layout == "conv":
        return array.transpose(3, 2, 0, 1)
    if layout == "dense":
        return array.T
    if layout == "flat":  # rows (h, w, c) -> columns (c, h, w)
        s, c = config.final_size, config.final_channels
        return array.reshape(s, s, c, -1).transpose(3, 2, 0, 1).reshape(array.shape[1], -1)
    return array


def _from_canonical(array, layout, config):
    if layout == "conv":
        return array.transpose(2, 3, 1, 0)
    if layout == "dense":
        return array.T
    if layout == "flat":  # columns (c, h, w) -> rows (h, w, c)
        s, c = config.final_size, config.final_channels
        return array.reshape(-1, c, s, s).transpose(2, 3, 1, 0).reshape(-1, array.shape[0])
    return array


def export_weights(net):
    """Canonical name -> NumPy array (conv OIHW, dense (out, in), batch-norm statistics included)."""
    return {name: np.ascontiguousarray(_to_canonical(keras.ops.convert_to_numpy(v), layout, net.config))
            for name, (v, layout) in _variables(net).items()}


def import_weights(net, weights):
    """Set every parameter from canonical arrays; checks all names and shapes before changing anything."""
    weights = check_weights(net.config, weights)
    variables = _variables(net)
    converted = {name: np.ascontiguousarray(_from_canonical(array, variables[name][1], net.config))
                 for name, array in weights.items()}
    for name, array in converted.items():
        variables[name][0].assign(array)
    return net


def save_weights(net, path):
    """Write the canonical weights and configuration to a ``.npz`` file, atomically."""
    return save_npz(path, net.config, export_weights(net), "tf", tf.__version__)


def load_weights(net, path):
    """Load a ``.npz`` written by any backend; refuses another configuration before touching the network."""
    weights, _ = load_npz(path, net.config)
    return import_weights(net, weights)
