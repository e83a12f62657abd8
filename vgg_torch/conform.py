"""``vgg conform`` in PyTorch: a user's ``nn.Module`` from ``module.path:factory``, traced with forward hooks.

The same functions in every backend's ``conform.py`` (the core is :mod:`common.conform`): ``open_model``,
``model_parameters``, ``declared_input``, ``input_layout``, ``has_lrn``, ``load_parameters``, ``trace_model``.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import numpy as np
import torch
from torch import nn

from common.conform import Event, Param, Trace, failure, users_own
from common.errors import ConfigError, InputError

_KINDS = (
    (nn.Conv2d, "conv"),
    (nn.BatchNorm2d, "bn"),
    (nn.ReLU, "relu"),
    (nn.LocalResponseNorm, "lrn"),
    (nn.MaxPool2d, "pool"),
    (nn.Flatten, "flatten"),
    (nn.Linear, "linear"),
    (nn.Dropout, "dropout"),
)


def open_model(source):
    """The network a factory ``module.path:function`` returns (imported and called; nothing unpickled), or an
    ``nn.Module`` as it is; put in evaluation mode."""
    if isinstance(source, nn.Module):
        net = source
    else:
        module_name, _, attr = str(source).partition(":")
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())  # a factory in the current folder, as `python -m` would find it
        try:
            module = importlib.import_module(module_name)
        except BaseException as e:  # the user's module may raise anything while it is imported
            if not users_own(e):
                raise
            raise InputError(
                f"cannot import {module_name} for {source} ({failure(e)}); check the module path"
            ) from None
        factory: Any = module
        for part in attr.split("."):
            factory = getattr(factory, part, None)
        if not callable(factory):
            raise ConfigError(f"{module_name} has no function {attr}; give module.path:function returning the network")
        try:
            net = factory()
        except BaseException as e:  # the user's code may raise anything
            if not users_own(e):
                raise
            raise InputError(
                f"the factory {source} raised {failure(e)}; it must build the network with no arguments"
            ) from None
        if not isinstance(net, nn.Module):
            raise InputError(f"the factory {source} returned a {type(net).__name__}, not a torch.nn.Module")
    if any(t.is_meta for t in (*net.parameters(), *net.buffers())):
        raise InputError(
            f"{source} has tensors on PyTorch's meta device, which hold no values: build it on a real device"
        )
    net.eval()
    return net


def _device(net) -> torch.device:
    """Where the network's first tensor lives (the CPU for one without any): its input is put there."""
    return next((t.device for t in (*net.parameters(), *net.buffers())), torch.device("cpu"))


def _shape(p) -> tuple[int, ...] | None:
    return None if isinstance(p, nn.parameter.UninitializedParameter) else tuple(p.shape)


def model_parameters(net) -> list[Param]:
    """Trainable parameters in order (``named_parameters``), then batch-norm statistics (buffers), canonical
    layouts already (PyTorch's are the canonical ones)."""
    out = []
    for name, p in net.named_parameters():
        shape = _shape(p)
        largest = float(p.detach().abs().max()) if shape and p.numel() else None
        out.append(Param(name, shape, p.requires_grad, largest))
    names = {name for name, _ in net.named_parameters()}
    for name, b in net.named_buffers():
        layer, _, stat = name.rpartition(".")
        if stat in ("running_mean", "running_var"):
            owner = f"{layer}.weight" if f"{layer}.weight" in names else None
            out.append(Param(name, _shape(b), False, None, stat, owner))
    return out


def declared_input(net) -> tuple[int, int, int] | None:
    """A PyTorch module states no input shape."""
    return None


def input_layout(net) -> str | None:
    """Unknown until run: the core tries N,C,H,W first."""
    return None


def has_lrn(net) -> bool:
    return any(isinstance(m, nn.LocalResponseNorm) for m in net.modules())


def load_parameters(net, arrays, config) -> list[str]:
    """Set parameters and statistics by the user's names from canonical arrays (the layouts are PyTorch's)."""
    state = dict(net.named_parameters()) | dict(net.named_buffers())
    with torch.no_grad():
        for name, array in arrays.items():
            state[name].copy_(torch.from_numpy(np.ascontiguousarray(array)))
    return []


def _kind(module: nn.Module) -> str:
    return next((kind for cls, kind in _KINDS if isinstance(module, cls)), "other")


def trace_model(net, x: np.ndarray) -> Trace:
    """Run ``net`` on ``x`` without gradients, a forward hook on every leaf module recording its output."""
    events: list[Event] = []

    def record(name, kind):
        def hook(module, inputs, output):
            if torch.is_tensor(output):
                value = output.detach().cpu().float().numpy().copy()
                events.append(Event(name, kind, value, tuple(value.shape)))

        return hook

    hooks = [
        m.register_forward_hook(record(name, _kind(m)))
        for name, m in net.named_modules()
        if name and not any(True for _ in m.children())
    ]
    try:
        with torch.no_grad():
            out = net(torch.from_numpy(np.ascontiguousarray(x)).to(_device(net)))
        if not torch.is_tensor(out):
            return Trace(None, events, f"the model returned a {type(out).__name__}, not a tensor of logits")
        return Trace(out.detach().cpu().float().numpy(), events, None)
    except BaseException as e:  # whatever the user's forward raises is reported, with the layers seen so far
        if not users_own(e):
            raise
        return Trace(None, events, failure(e))
    finally:
        for h in hooks:
            h.remove()
