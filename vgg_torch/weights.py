"""Weights in canonical form: PyTorch's ``state_dict`` names are the canonical names, layouts too."""

from __future__ import annotations

import json
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.arch import VGGConfig
from common.errors import WeightsError, reason
from common.files import atomic_write
from common.interchange import weights_api
from common.weights import (
    check_finite_weights,
    check_model_path,
    check_weights,
    existing_model,
    make_meta,
    meta_config,
    parse_meta,
    stored_zip,
)
from common.zoo import from_torchvision

from .model import Net, from_config


def export_weights(net: Net) -> dict[str, np.ndarray]:
    """Canonical name -> NumPy array (conv OIHW, dense (out, in), batch-norm statistics included)."""
    return {
        name: t.detach().cpu().numpy().copy()
        for name, t in net.state_dict().items()
        if not name.endswith("num_batches_tracked")
    }


def import_weights(net: Net, weights: Mapping[str, np.ndarray]) -> Net:
    """Set every parameter from canonical arrays; checks all names and shapes before changing anything."""
    weights = check_weights(net.config, weights, copy=False)
    state = net.state_dict()
    with torch.no_grad():
        for name, array in weights.items():
            state[name].copy_(torch.from_numpy(np.require(array, requirements=["C", "W"])))  # copied if read-only
    return net


def _default_init(net):
    """PyTorch's own: Kaiming-uniform weights and fan-in uniform biases (``init_weights(net, "default")``)."""
    for m in net.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()


named_parameters, init_weights, save_weights, load_weights = weights_api(
    export_weights, import_weights, "torch", torch.__version__, _default_init
)


def save_model(net: Net, path: str | os.PathLike) -> Path:
    """PyTorch's own format (``.pt``): the ``state_dict`` and the configuration, written atomically."""
    path = check_model_path(path, "torch")
    meta = json.dumps(make_meta(net.config, "torch", torch.__version__))
    weights = check_finite_weights(export_weights(net), "the network")
    state = {name: torch.from_numpy(array) for name, array in weights.items()}
    return atomic_write(path, lambda f: torch.save({"meta": meta, "state_dict": state}, f))


def load_model(path: str | os.PathLike) -> Net:
    """A network rebuilt from a ``.pt`` of :func:`save_model`; read with ``weights_only=True`` (no code runs)."""
    path = existing_model(path, "torch")
    stored_zip(path, "torch.save")  # no member is inflated: mapped below, a tensor takes no memory until read
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol notice: the refusal below says it all
            warnings.simplefilter("ignore", UserWarning)
            # a zip (what torch.save writes) is mapped; a file of the legacy format, read whole, holds no more
            saved = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError:
        raise WeightsError(
            f"{path} holds Python objects other than tensors, or is not a PyTorch file at all; it was not "
            f"loaded (loading it could run code): give a .pt written by this project (vgg train, vgg convert)"
        ) from None
    except Exception as e:  # an unpickler reading damaged bytes raises anything (KeyError, UnicodeDecodeError, ...)
        raise WeightsError(
            f"{path} is not a readable PyTorch model file ({reason(e)}); it is empty, damaged or of another format"
        ) from None
    state = saved.get("state_dict") if isinstance(saved, dict) else None
    if not isinstance(state, dict) or "meta" not in saved or not all(torch.is_tensor(v) for v in state.values()):
        raise WeightsError(f"{path} is a PyTorch file but not one of this project's models")
    odd = [k for k, v in state.items() if v.layout != torch.strided or v.device.type != "cpu"]
    if odd:  # a sparse or a meta-device tensor: no weights of a network this project saves
        v = state[odd[0]]
        raise WeightsError(
            f"{path}: tensor {odd[0]} is a {str(v.layout).removeprefix('torch.')} tensor on the {v.device.type} "
            f"device; a model file holds dense tensors of the CPU: it was altered or made by another program"
        )
    config = meta_config(parse_meta(saved["meta"], path), path)
    weights = check_weights(config, {k: v.numpy() for k, v in state.items()}, copy=False, source=path)
    return import_weights(from_config(config), weights)


def zoo_weights(zoo_net: Any) -> tuple[VGGConfig, dict[str, np.ndarray]]:
    """(config, canonical weights) of a torchvision VGG or its ``state_dict`` (``vgg11`` ... ``vgg19_bn``)."""
    state = zoo_net.state_dict() if isinstance(zoo_net, torch.nn.Module) else zoo_net
    return from_torchvision(
        {k: v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v) for k, v in state.items()}
    )
