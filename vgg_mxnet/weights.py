"""Weights in canonical form: Gluon's parameter names map one-to-one onto the canonical names, layouts match."""
from __future__ import annotations

import mxnet as mx

from common.weights import check_weights, load_npz, save_npz

# Gluon's batch-norm parameter names -> canonical; the other suffixes are canonical already
_RENAME = {"gamma": "weight", "beta": "bias"}
_SUFFIXES = ("weight", "bias", "gamma", "beta", "running_mean", "running_var")


def _params(net):
    """Canonical name -> Gluon ``Parameter``, one mapping for both ways: ``block1_bn1_gamma`` is ``block1.bn1.weight``."""
    out = {}
    for name, p in net.collect_params().items():
        suffix = next(s for s in _SUFFIXES if name.endswith("_" + s))
        layer = name[len(net.prefix):-len(suffix) - 1]  # block1_bn1 (the network's own prefix, if any, dropped)
        out[f"{layer.replace('_', '.')}.{_RENAME.get(suffix, suffix)}"] = p
    return out


def export_weights(net):
    """Canonical name -> NumPy array (conv OIHW, dense (out, in), batch-norm statistics included)."""
    return {name: p.list_data()[0].asnumpy() for name, p in _params(net).items()}


def import_weights(net, weights):
    """Set every parameter from canonical arrays; checks all names and shapes before changing anything."""
    weights = check_weights(net.config, weights)
    params = _params(net)
    for name, array in weights.items():
        params[name].set_data(mx.nd.array(array, dtype=array.dtype))
    return net


def save_weights(net, path):
    """Write the canonical weights and configuration to a ``.npz`` file, atomically."""
    return save_npz(path, net.config, export_weights(net), "mxnet", mx.__version__)


def load_weights(net, path):
    """Load a ``.npz`` written by any backend; refuses another configuration before touching the network."""
    weights, _ = load_npz(path, net.config)
    return import_weights(net, weights)
