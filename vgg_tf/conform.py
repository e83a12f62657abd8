"""``vgg conform`` in tf.keras: a user's Keras model (a ``.keras`` file, loaded with ``safe_mode=True``), traced
layer by layer.

The same functions in every backend's ``conform.py`` (the core is :mod:`common.conform`): ``open_model``,
``model_parameters``, ``declared_input``, ``input_layout``, ``has_lrn``, ``load_parameters``, ``trace_model``.
Keras has no forward hooks: a model that is a chain of layers (``Sequential``, nested or not, or a functional
chain) is run one leaf layer at a time, and that run is checked to give the model's own logits. Channels-last is
Keras' convention, not a fault: maps are reported NCHW, and the first dense layer after ``Flatten`` is loaded with
its rows permuted (``vgg_tf``'s own "flat" layout).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np

from common.conform import Event, Param, Trace, failure, users_own
from common.errors import InputError, WeightsError
from common.weights import from_canonical, no_file

from .model import LocalResponseNorm, PaddedConv2D

_BN = (("gamma", None), ("beta", None), ("moving_mean", "running_mean"), ("moving_variance", "running_var"))


def open_model(source):
    """A ``keras.Model`` as it is, or one loaded from a ``.keras`` file with ``safe_mode=True`` (no code runs)."""
    if isinstance(source, keras.Model):
        return source
    path = Path(source)
    if not path.is_file():
        raise InputError(no_file(path, "model file"))
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" of a file that is there
        raise WeightsError(f"{path} is not a Keras model Keras can load safely (not a .keras file: no zip archive)")
    try:
        return keras.saving.load_model(
            str(path),
            safe_mode=True,
            compile=False,
            custom_objects={"LocalResponseNorm": LocalResponseNorm, "PaddedConv2D": PaddedConv2D},
        )
    except Exception as e:  # Keras raises ValueError, TypeError, zipfile errors, ... for a file it cannot read
        said, text = failure(e), str(e)
        if "safe_mode" in text or "could not be deserialized" in text:  # a Lambda's code, or a class of the user's
            raise WeightsError(
                f"{path} holds Python code (a Lambda layer) or layers of the user's own classes, which a file "
                f"loaded here never runs or imports; check the model object in Python (common.conform.conform"
                f"(model)), or export it to ONNX and check the .onnx"
            ) from None
        raise WeightsError(f"{path} is not a Keras model Keras can load safely ({said})") from None


def _leaves(model, prefix: str = ""):
    """(name, layer) of every leaf layer in order, nested models opened (``block1.conv1`` for vgg_tf's)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaves(layer, f"{prefix}{layer.name}.")
        elif not isinstance(layer, keras.layers.InputLayer):
            yield f"{prefix}{layer.name}", layer


def _channels_last(model) -> bool:
    formats = {getattr(layer, "data_format", None) for _, layer in _leaves(model)} - {None}
    return formats != {"channels_first"}


def _variables(model):
    """(user name, variable, layout, trainable, stat, owner) of every weight, in order."""
    out: list[tuple[str, Any, str | None, bool, str | None, str | None]] = []
    after_flatten, last = False, _channels_last(model)
    for name, layer in _leaves(model):
        if isinstance(layer, keras.layers.Flatten):
            after_flatten = True
        elif isinstance(layer, keras.layers.Conv2D):
            out.append((f"{name}.kernel", layer.kernel, "conv", True, None, None))
            if layer.bias is not None:
                out.append((f"{name}.bias", layer.bias, None, True, None, None))
        elif isinstance(layer, keras.layers.Dense):
            out.append(
                (f"{name}.kernel", layer.kernel, "flat" if after_flatten and last else "dense", True, None, None)
            )
            if layer.bias is not None:
                out.append((f"{name}.bias", layer.bias, None, True, None, None))
            after_flatten = False
        elif isinstance(layer, keras.layers.BatchNormalization):
            for attr, stat in _BN:
                variable = getattr(layer, attr, None)
                if variable is not None:
                    out.append((f"{name}.{attr}", variable, None, stat is None, stat, f"{name}.gamma"))
        else:
            out += [(f"{name}.{i}", w, None, w.trainable, None, None) for i, w in enumerate(layer.weights)]
    return out


def model_parameters(model) -> list[Param]:
    """Every weight with its shape in canonical layout (conv OIHW, dense (out, in)); moving statistics last."""
    params: list[Param] = []
    stats: list[Param] = []
    for name, variable, layout, trainable, stat, owner in _variables(model):
        shape = tuple(int(d) for d in variable.shape)
        if layout == "conv":
            shape = (shape[3], shape[2], shape[0], shape[1])
        elif layout in ("dense", "flat"):
            shape = shape[::-1]
        largest = float(np.max(np.abs(keras.ops.convert_to_numpy(variable)))) if trainable and shape else None
        (params if trainable else stats).append(Param(name, shape, trainable, largest, stat, owner))
    return params + stats


def declared_input(model) -> tuple[int, int, int] | None:
    """(channels, height, width) of the model's declared input, where it declares a whole one."""
    try:
        shape = tuple(model.inputs[0].shape)
    except (AttributeError, IndexError, ValueError, TypeError):
        return None
    if len(shape) != 4 or any(d is None for d in shape[1:]):
        return None
    c, h, w = (shape[3], shape[1], shape[2]) if _channels_last(model) else (shape[1], shape[2], shape[3])
    return (int(c), int(h), int(w)) if h == w else None


def input_layout(model) -> str | None:
    return "NHWC" if _channels_last(model) else "NCHW"


def has_lrn(model) -> bool:
    return any(
        "localresponse" in type(layer).__name__.lower() or type(layer).__name__.lower() == "lrn"
        for _, layer in _leaves(model)
    )


def load_parameters(model, arrays, config) -> list[str]:
    """Assign canonical arrays (by the user's names), converted to Keras' layouts."""
    notes = []
    for name, variable, layout, *_ in _variables(model):
        if name in arrays:
            variable.assign(np.ascontiguousarray(from_canonical(arrays[name], layout, config)))
            if layout == "flat" and config.final_size > 1:
                notes.append(f"{name} follows a channels-last Flatten: loaded with its rows permuted (H,W,C order)")
    return notes


def _kind(layer) -> str:
    if isinstance(layer, keras.layers.Conv2D):
        return "conv"
    if isinstance(layer, keras.layers.Dense):
        return "linear"
    if isinstance(layer, keras.layers.BatchNormalization):
        return "bn"
    if isinstance(layer, keras.layers.ReLU) or (
        isinstance(layer, keras.layers.Activation) and getattr(layer.activation, "__name__", "") == "relu"
    ):
        return "relu"
    if isinstance(layer, keras.layers.MaxPooling2D):
        return "pool"
    if isinstance(layer, keras.layers.Flatten):
        return "flatten"
    if isinstance(layer, keras.layers.Dropout):
        return "dropout"
    if isinstance(layer, LocalResponseNorm):
        return "lrn"
    return "other"


def _canonical(value: np.ndarray, before: tuple[int, ...], kind: str, last: bool) -> np.ndarray:
    """A layer's output as the spec writes it: maps NCHW; a channels-last flatten put back in C,H,W order."""
    if last and value.ndim == 4:
        return value.transpose(0, 3, 1, 2)
    if last and kind == "flatten" and len(before) == 4:
        n, h, w, c = before
        return value.reshape(n, h, w, c).transpose(0, 3, 1, 2).reshape(n, -1)
    return value


def trace_model(model, x: np.ndarray) -> Trace:
    """Run the leaf layers one by one (evaluation mode), recording each output; the model's own call gives the
    logits, and a chain whose step-by-step run gives other logits (a model with branches) reports no layers."""
    events: list[Event] = []
    last = _channels_last(model)
    h = keras.ops.convert_to_tensor(x)
    try:
        for name, layer in _leaves(model):
            before = tuple(int(d) for d in h.shape)
            h = layer(h, training=False)
            value = _canonical(keras.ops.convert_to_numpy(h), before, _kind(layer), last)
            kind = _kind(layer)
            fused = getattr(getattr(layer, "activation", None), "__name__", "linear")
            if kind in ("conv", "linear") and fused == "relu":  # Conv2D(activation="relu"): its output is the ReLU's
                events += [
                    Event(name, kind, None, value.shape),
                    Event(f"{name}.activation", "relu", value, value.shape),
                ]
            else:
                events.append(Event(name, kind, value, value.shape))
        logits = np.asarray(model(x, training=False))
    except BaseException as e:  # whatever the user's layers raise is reported, with the layers seen so far
        if not users_own(e):
            raise
        return Trace(None, events, failure(e))
    stepped = keras.ops.convert_to_numpy(h)
    if stepped.shape != logits.shape or np.max(np.abs(stepped - logits)) > 1e-5 * max(1.0, np.max(np.abs(logits))):
        return Trace(logits, [], None)  # not a chain of its layers: only the logits can be compared
    return Trace(logits, events, None)
