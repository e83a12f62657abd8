"""Framework-specific test code, one module per backend with the same function names, found by backend name.

``adapter(backend)`` is the module for a backend package (``vgg_torch`` -> ``adapters.torch``). Each module has:

- ``forward(net, x_nchw)``: evaluation-mode logits for a canonical NCHW float32 batch;
- ``forward_train(net, x_nchw)``: training-mode logits (dropout on, batch statistics; may update running ones);
- ``loss_and_gradients(net, x_nchw, y)``: mean softmax cross-entropy in training mode and the gradient of every
  trainable canonical parameter;
- ``trainable(net)``, ``read(handle)``, ``write(handle, value)``: what holds each trainable parameter (a "handle"),
  read and written in canonical layout;
- ``children(net)``, ``dense_use_weights(net)``, ``output_and_gradients(net, x)``: for the chapter's small networks;
- ``to_backend(x, y)``: NumPy images (in the backend's layout) and labels as the framework's tensors;
- ``to_numpy(t)``: a framework tensor as a NumPy array;
- ``batch_norms(net)``: (epsilon, weight of the new batch statistic in PyTorch's convention) of every batch-norm
  layer, read from the built layers;
- ``optimizer_steps(optimizer, lr, w0, grads)``: a float32 vector after steps of the optimizer the backend's
  ``train`` builds, one per given gradient.
- ``float64_steps(config, weights, batches, optimizer, lr)``: canonical weights after one step of the backend's
  ``Trainer`` per NCHW batch, the network, the optimizer's state and the batches in float64.
- ``layer_forward(plan, x_nchw)``: the backend's layer for one ``common.arch.LayerPlan`` alone, in evaluation mode.
- ``CONTAINER``: the class name of the framework's container that ``vgg_block`` returns.

The helpers below compose these; nothing else in the suite touches a framework by name.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np

from common.arch import make_config
from common.backends import BACKENDS

_PACKAGES = {package: name for name, (package, *_) in BACKENDS.items()}


def adapter(backend) -> ModuleType:
    """The adapter module of a backend package (imported on first use, so only loaded frameworks are imported)."""
    return importlib.import_module(f"adapters.{_PACKAGES[backend.__name__]}")


def build_abstract(backend, **kwargs):
    """``backend.vgg(**kwargs)`` without its parameters' memory, for shape and count checks."""
    return backend.abstract_network(make_config(**kwargs))


def forward(backend, net, x_nchw: np.ndarray) -> np.ndarray:
    return adapter(backend).forward(net, x_nchw)


def loss_and_gradients(backend, net, x_nchw, y):
    return adapter(backend).loss_and_gradients(net, x_nchw, y)


def parameters(backend, net) -> dict[str, np.ndarray]:
    """Canonical name -> value of every trainable parameter."""
    a = adapter(backend)
    return {n: a.read(h) for n, h in a.trainable(net).items()}


def set_parameters(backend, net, values: dict[str, np.ndarray]) -> None:
    """Set trainable parameters by canonical name."""
    a = adapter(backend)
    handles = a.trainable(net)
    for key, value in values.items():
        a.write(handles[key], value)


def optimizer_steps(backend, optimizer: str, lr: float, w0: np.ndarray, grads: list[np.ndarray]) -> np.ndarray:
    """``w0`` after one step of the optimizer ``backend``'s ``train`` builds for ``optimizer`` per gradient."""
    return adapter(backend).optimizer_steps(optimizer, lr, w0, grads)


def float64_steps(backend, config: dict, weights: dict, batches: list, optimizer: str, lr: float) -> dict:
    """``weights`` after one step of ``backend``'s ``Trainer`` per (NCHW images, labels) batch, all in float64."""
    return adapter(backend).float64_steps(config, weights, batches, optimizer, lr)


def layer_forward(backend, plan, x_nchw: np.ndarray) -> np.ndarray:
    """The backend's layer for ``plan`` (a ``common.arch.LayerPlan``) alone, in evaluation mode, on NCHW input."""
    return adapter(backend).layer_forward(plan, x_nchw)
