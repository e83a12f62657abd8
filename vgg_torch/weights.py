"""Weights in canonical form: PyTorch's ``state_dict`` names are the canonical names, layouts too."""

from __future__ import annotations

import json
import pickle
import zipfile

import numpy as np
import torch

from common.errors import WeightsError
from common.interchange import load_weights_file, save_weights_file
from common.weights import (
    atomic_write,
    check_model_path,
    check_weights,
    existing_model,
    make_meta,
    meta_config,
    parse_meta,
    scheme_weights,
    trainable_shapes,
)
from common.zoo import from_torchvision

from .model import from_config


def export_weights(net):
    """Canonical name -> NumPy array (conv OIHW, dense (out, in), batch-norm statistics included)."""
    return {
        name: t.detach().cpu().numpy().copy()
        for name, t in net.state_dict().items()
        if not name.endswith("num_batches_tracked")
    }


def import_weights(net, weights):
    """Set every parameter from canonical arrays; checks all names and shapes before changing anything."""
    weights = check_weights(net.config, weights)
    state = net.state_dict()
    with torch.no_grad():
        for name, array in weights.items():
            state[name].copy_(torch.from_numpy(np.ascontiguousarray(array)))
    return net


def named_parameters(net):
    """(canonical name, shape) of every trainable parameter, in order: the same list in every backend."""
    return trainable_shapes(export_weights(net))


def init_weights(net, scheme="xavier", seed=0, value=1.0):
    """Re-initialise ``net`` by one of the book's schemes (see :func:`common.weights.scheme_weights`).

    Every scheme but ``"default"`` is drawn in NumPy and imported, so a seed gives bit-identical weights in
    all three frameworks; ``"default"`` is the framework's own initialisation.
    """
    if scheme == "default":  # PyTorch's own: Kaiming-uniform weights and fan-in uniform biases
        for m in net.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        return net
    return import_weights(net, scheme_weights(net.config, scheme, seed, value))


def save_weights(net, path):
    """Write the canonical weights and configuration to a ``.npz`` (or, so named, ``.safetensors``) file, atomically."""
    return save_weights_file(path, net.config, export_weights(net), "torch", torch.__version__)


def load_weights(net, path):
    """Load a ``.npz`` or ``.safetensors`` written by any backend; refuses another configuration before touching it."""
    weights, _ = load_weights_file(path, net.config)
    return import_weights(net, weights)


def save_model(net, path):
    """PyTorch's own format (``.pt``): the ``state_dict`` and the configuration, written atomically."""
    path = check_model_path(path, "torch")
    meta = json.dumps(make_meta(net.config, "torch", torch.__version__))
    state = {name: torch.from_numpy(array) for name, array in export_weights(net).items()}
    return atomic_write(path, lambda f: torch.save({"meta": meta, "state_dict": state}, f))


def load_model(path):
    """A network rebuilt from a ``.pt`` of :func:`save_model`; read with ``weights_only=True`` (no code runs)."""
    path = existing_model(path, "torch")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise WeightsError(
            f"{path} is not a readable PyTorch model file ({type(e).__name__}: "
            f"{str(e).splitlines()[0]}); it is damaged, of another format, or holds code"
        ) from None
    if not isinstance(saved, dict) or "meta" not in saved or "state_dict" not in saved:
        raise WeightsError(f"{path} is a PyTorch file but not one of this project's models")
    config = meta_config(parse_meta(saved["meta"], path), path)
    net = from_config(config)
    return import_weights(net, {k: v.numpy() for k, v in saved["state_dict"].items()})


def zoo_weights(zoo_net):
    """(config, canonical weights) of a torchvision VGG or its ``state_dict`` (``vgg11`` ... ``vgg19_bn``)."""
    state = zoo_net.state_dict() if isinstance(zoo_net, torch.nn.Module) else zoo_net
    return from_torchvision(
        {k: v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v) for k, v in state.items()}
    )
