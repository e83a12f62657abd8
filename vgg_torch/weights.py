"""Weights in canonical form: PyTorch's ``state_dict`` names are the canonical names, layouts too."""
from __future__ import annotations

import numpy as np
import torch

from common.weights import check_weights, load_npz, save_npz


def export_weights(net):
    """Canonical name -> NumPy array (conv OIHW, dense (out, in), batch-norm statistics included)."""
    return {name: t.detach().cpu().numpy().copy() for name, t in net.state_dict().items()
            if not name.endswith("num_batches_tracked")}


def import_weights(net, weights):
    """Set every parameter from canonical arrays; checks all names and shapes before changing anything."""
    weights = check_weights(net.config, weights)
    state = net.state_dict()
    with torch.no_grad():
        for name, array in weights.items():
            state[name].copy_(torch.from_numpy(np.ascontiguousarray(array)))
    return net


def save_weights(net, path):
    """Write the canonical weights and configuration to a ``.npz`` file, atomically."""
    return save_npz(path, net.config, export_weights(net), "torch", torch.__version__)


def load_weights(net, path):
    """Load a ``.npz`` written by any backend; refuses another configuration before touching the network."""
    weights, _ = load_npz(path, net.config)
    return import_weights(net, weights)
