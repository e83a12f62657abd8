"""Weights in canonical form: Gluon's parameter names map one-to-one onto the canonical names, layouts match."""
from __future__ import annotations

import mxnet as mx

from common.weights import check_weights, load_npz, save_npz

# Gluon's batch-norm parameter names -> canonical; every other suffix keeps its name
_SUFFIXES = {"gamma": "weight", "beta": "bias", "running_mean": "running_mean", "running_var": "running_var",
             "weight": "weight", "bias": "bias"}


def _params(net):
    """Canonical name -> Gluon ``Parameter``, the one mapping used both ways: ``block1_bn1_gamma`` -> ``block1.bn1.weight``."""
    out = {}
    for name, p in net.collect_params().items():
        layer, suffix = next((name[len(net.prefix):-len(s) - 1], s) for s in _SUFFIXES if name.endswith("_" + s))
        out[f"{layer.replace('_', '.')}.{_SUFFIXES[suffix]}"] = p
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
