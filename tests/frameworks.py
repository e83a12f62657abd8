"""Test adapters: run a backend's network on canonical NumPy data and read its gradients canonically.

The only place in the suite that touches the frameworks directly, one small function per framework.
"""

from __future__ import annotations

import numpy as np


def forward(backend, net, x_nchw: np.ndarray) -> np.ndarray:
    """Evaluation-mode logits for a canonical NCHW float32 batch."""
    name = backend.__name__
    if name == "vgg_torch":
        import torch

        net.eval()
        with torch.no_grad():
            return net(torch.from_numpy(x_nchw)).numpy()
    if name == "vgg_tf":
        return np.asarray(net(np.transpose(x_nchw, (0, 2, 3, 1)), training=False))
    import mxnet as mx

    return net(mx.nd.array(x_nchw)).asnumpy()


def loss_and_gradients(backend, net, x_nchw: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    """Mean softmax cross-entropy in training mode and its gradient for every trainable canonical parameter."""
    name = backend.__name__
    if name == "vgg_torch":
        import torch

        net.train()
        net.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x_nchw)), torch.from_numpy(y))
        loss.backward()
        return loss.item(), {n: p.grad.numpy().copy() for n, p in net.named_parameters()}
    if name == "vgg_tf":
        import keras
        import tensorflow as tf

        from common.weights import to_canonical
        from vgg_tf.weights import _variables

        variables = {n: v for n, v in _variables(net).items() if v[0].trainable}
        with tf.GradientTape() as tape:
            logits = net(np.transpose(x_nchw, (0, 2, 3, 1)), training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        grads = tape.gradient(loss, [v for v, _ in variables.values()])
        return float(loss), {
            n: to_canonical(np.asarray(g), layout, net.config)
            for (n, (_, layout)), g in zip(variables.items(), grads, strict=True)
        }
    import mxnet as mx

    from vgg_mxnet.weights import _params

    params = {n: p for n, p in _params(net).items() if p.grad_req != "null"}
    with mx.autograd.record(train_mode=True):
        loss = mx.gluon.loss.SoftmaxCrossEntropyLoss()(net(mx.nd.array(x_nchw)), mx.nd.array(y)).mean()
    loss.backward()
    return float(loss.asscalar()), {n: p.grad().asnumpy() for n, p in params.items()}


# The chapter's small networks (tests/test_blocks.py). A "handle" is what holds one parameter: a PyTorch tensor,
# a Gluon Parameter, or for Keras a variable with its layout (vgg_tf.weights._variables), read and written in
# canonical layout (dense weights (out, in)). Shared parameters appear once, under the first use's name.


def _trainable(backend, net) -> dict:
    """Canonical name -> handle of every trainable parameter."""
    name = backend.__name__
    if name == "vgg_torch":
        return dict(net.named_parameters())
    if name == "vgg_tf":
        from vgg_tf.weights import _variables

        return {n: v for n, v in _variables(net).items() if v[0].trainable}
    from vgg_mxnet.weights import _params

    return {n: p for n, p in _params(net).items() if p.grad_req != "null"}


def read(backend, handle) -> np.ndarray:
    """A parameter's (or constant's) value in canonical layout, a copy."""
    name = backend.__name__
    if name == "vgg_torch":
        return handle.detach().numpy().copy()
    if name == "vgg_tf":
        from common.weights import to_canonical

        variable, layout = handle if isinstance(handle, tuple) else (handle, None)
        return to_canonical(np.array(variable), layout, None)
    return handle.data().asnumpy()


def write(backend, handle, value: np.ndarray) -> None:
    """Set a parameter from a value in canonical layout."""
    name = backend.__name__
    if name == "vgg_torch":
        import torch

        with torch.no_grad():
            handle.copy_(torch.from_numpy(np.ascontiguousarray(value)))
    elif name == "vgg_tf":
        from common.weights import from_canonical

        variable, layout = handle
        variable.assign(from_canonical(value, layout, None))
    else:
        import mxnet as mx

        handle.set_data(mx.nd.array(value))


def parameters(backend, net) -> dict[str, np.ndarray]:
    """Canonical name -> value of every trainable parameter."""
    return {n: read(backend, h) for n, h in _trainable(backend, net).items()}


def set_parameters(backend, net, values: dict[str, np.ndarray]) -> None:
    """Set trainable parameters by canonical name."""
    handles = _trainable(backend, net)
    for key, value in values.items():
        write(backend, handles[key], value)


def children(backend, net) -> list:
    """(name, layer) of a network's top-level layers."""
    name = backend.__name__
    if name == "vgg_torch":
        return list(net.named_children())
    if name == "vgg_tf":
        return [(layer.name, layer) for layer in net.layers]
    from vgg_mxnet.model import _named_children

    return _named_children(net)


def dense_use_weights(backend, net) -> list:
    """The weight handle of each dense step of a sequential network, in order (a layer used twice: twice)."""
    name = backend.__name__
    if name == "vgg_torch":
        from torch import nn

        return [m.weight for m in net if isinstance(m, nn.Linear)]
    if name == "vgg_tf":
        import keras

        return [(layer.kernel, "dense") for layer in net.layers if isinstance(layer, keras.layers.Dense)]
    from mxnet.gluon import nn

    return [block.weight for block in net if isinstance(block, nn.Dense)]


def output_and_gradients(backend, net, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The output for a float32 batch and the gradient of its sum for every trainable parameter, by name."""
    name, handles = backend.__name__, _trainable(backend, net)
    if name == "vgg_torch":
        import torch

        net.zero_grad()
        y = net(torch.from_numpy(x))
        y.sum().backward()
        return y.detach().numpy(), {n: p.grad.numpy().copy() for n, p in handles.items()}
    if name == "vgg_tf":
        import tensorflow as tf

        from common.weights import to_canonical

        with tf.GradientTape() as tape:
            y = net(x)
            total = tf.reduce_sum(y)
        grads = tape.gradient(total, [v for v, _ in handles.values()])
        return np.asarray(y), {
            n: to_canonical(np.asarray(g), layout, None)
            for (n, (_, layout)), g in zip(handles.items(), grads, strict=True)
        }
    import mxnet as mx

    with mx.autograd.record():
        y = net(mx.nd.array(x))
        total = y.sum()
    total.backward()
    return y.asnumpy(), {n: p.grad().asnumpy() for n, p in handles.items()}
