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
        return float(loss), {n: to_canonical(np.asarray(g), layout, net.config)
                             for (n, (_, layout)), g in zip(variables.items(), grads)}
    import mxnet as mx
    from vgg_mxnet.weights import _params
    params = {n: p for n, p in _params(net).items() if p.grad_req != "null"}
    with mx.autograd.record(train_mode=True):
        loss = mx.gluon.loss.SoftmaxCrossEntropyLoss()(net(mx.nd.array(x_nchw)), mx.nd.array(y)).mean()
    loss.backward()
    return float(loss.asscalar()), {n: p.grad().asnumpy() for n, p in params.items()}
