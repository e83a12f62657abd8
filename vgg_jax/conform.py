"""``vgg conform`` in JAX: a network of this package (a Flax module with its variables), traced layer by layer.

The same functions in every backend's ``conform.py`` (the core is :mod:`common.conform`): ``open_model``,
``model_parameters``, ``declared_input``, ``input_layout``, ``has_lrn``, ``load_parameters``, ``trace_model``.
Flax's method interceptors (``nn.intercept_methods``) play the part of forward hooks: every leaf module's output is
recorded as the model runs, under its path (``block1.conv1``). Channels-last is Flax's convention, not a fault:
maps are reported NCHW, and the first dense layer after the convolutions is loaded with its rows permuted (the
"flat" layout of ``vgg_jax.weights``).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from common.arch import net_plan
from common.conform import Event, Param, Trace, failure
from common.errors import InputError
from common.weights import from_canonical, to_canonical

from .model import Function, Model, _thawed, _variables, flatten, get, local_response_norm, put

_STATS = {"running_mean": "running_mean", "running_var": "running_var"}


def open_model(source):
    """A network of this package as it is (``vgg_jax.vgg()``, ``hand_vgg``, a ``MySequential``, or any
    :class:`vgg_jax.model.Model` around a Flax module and its variables). Flax saves no architecture, so there is
    no file to open: give the object (``common.conform.conform(model)``)."""
    if isinstance(source, Model):
        return source
    raise InputError(
        f"a {type(source).__name__} is no JAX network this can check: give a vgg_jax Model (a Flax module with "
        f"its variables); a Flax file holds numbers only, no architecture"
    )


def _layouts(model) -> dict:
    """Canonical name -> (path, layout), the first dense layer after convolutions in the "flat" layout."""
    found, after_conv = {}, False
    for name, (path, layout) in _variables(model).items():
        if layout == "conv":
            after_conv = True
        elif layout in ("dense", "flat") and name.endswith(".weight"):
            layout, after_conv = ("flat" if after_conv else "dense"), False
        found[name] = (path, layout)
    return found


def model_parameters(model) -> list[Param]:
    """Every variable with its shape in canonical layout (conv OIHW, dense (out, in)); batch-norm statistics last."""
    params: list[Param] = []
    stats: list[Param] = []
    for name, (path, layout) in _layouts(model).items():
        array = np.asarray(get(model.variables, path))
        shape = tuple(int(d) for d in to_canonical(array, "dense" if layout == "flat" else layout, None).shape)
        trainable = path[0] == "params"
        stat = next((s for s in _STATS if name.endswith(f".{s}")), None)
        owner = f"{name.rsplit('.', 1)[0]}.weight" if stat else None
        largest = float(np.max(np.abs(array))) if trainable and array.size else None
        (params if trainable else stats).append(Param(name, shape, trainable, largest, stat, owner))
    return params + stats


def declared_input(model) -> tuple[int, int, int] | None:
    """(channels, height, width) of the configuration a network of this package was built for, if any."""
    config = getattr(model, "config", None)
    return None if config is None else (config.in_channels, config.input_size, config.input_size)


def input_layout(model) -> str | None:
    return "NHWC"


def _modules(module):
    """Every module a network is made of, where its structure says (a plan's blocks, a Sequential's layers)."""
    yield module
    for layer in getattr(module, "layers", ()):
        if isinstance(layer, nn.Module):
            yield from _modules(layer)


def has_lrn(model) -> bool:
    config = getattr(model, "config", None)
    if config is not None:
        return any(q.kind == "lrn" for _, p in net_plan(config) for q in (p if isinstance(p, list) else [p]))
    return any(isinstance(m, Function) and m.fn is local_response_norm for m in _modules(model.module))


def load_parameters(model, arrays, config) -> list[str]:
    """Assign canonical arrays (by the model's names), converted to Flax's layouts."""
    notes, variables = [], _thawed(model.variables)
    for name, (path, layout) in _layouts(model).items():
        if name in arrays:
            put(variables, path, jnp.asarray(from_canonical(arrays[name], layout, config)))
            if layout == "flat" and config.final_size > 1:
                notes.append(f"{name} follows a channels-last flatten: loaded with its rows permuted (H,W,C order)")
    model.variables = variables
    return notes


def _kind(module) -> str | None:
    """The spec's kind of a leaf module; None for a module that holds others."""
    if isinstance(module, nn.Conv):
        return "conv"
    if isinstance(module, nn.Dense):
        return "linear"
    if isinstance(module, nn.BatchNorm):
        return "bn"
    if isinstance(module, nn.Dropout):
        return "dropout"
    if isinstance(module, Function):
        fn = getattr(module.fn, "func", module.fn)  # a functools.partial: the pooling
        return {nn.relu: "relu", nn.max_pool: "pool", flatten: "flatten", local_response_norm: "lrn"}.get(fn, "other")
    return None


def _canonical(value: np.ndarray, before: tuple[int, ...], kind: str) -> np.ndarray:
    """A layer's output as the spec writes it: maps NCHW; a channels-last flatten put back in C,H,W order."""
    if value.ndim == 4:
        return value.transpose(0, 3, 1, 2)
    if kind == "flatten" and len(before) == 4:
        n, h, w, c = before
        return value.reshape(n, h, w, c).transpose(0, 3, 1, 2).reshape(n, -1)
    return value


def trace_model(model, x: np.ndarray) -> Trace:
    """Run the model in evaluation mode (op by op), recording each leaf module's output as it is called."""
    events: list[Event] = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        kind = _kind(context.module)
        if context.method_name == "__call__" and kind is not None:
            before = tuple(int(d) for d in np.shape(args[0]))
            value = _canonical(np.asarray(out, dtype=np.float32), before, kind)
            events.append(Event(".".join(context.module.path), kind, value, value.shape))
        return out

    try:
        with nn.intercept_methods(record):
            logits = np.asarray(model.module.apply(model.variables, jnp.asarray(x), training=False))
    except (Exception, SystemExit) as e:  # whatever the user's layers raise is reported, with the layers seen so far
        return Trace(None, events, failure(e))
    return Trace(logits, events, None)
