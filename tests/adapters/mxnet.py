"""MXNet Gluon side of the test adapters (see ``adapters/__init__.py``)."""

from __future__ import annotations

import mxnet as mx
import numpy as np
from mxnet.gluon import nn

from vgg_mxnet.model import _named_children
from vgg_mxnet.weights import _params

CONTAINER = "HybridSequential"  # what vgg_block returns


def forward(net, x_nchw: np.ndarray) -> np.ndarray:
    return net(mx.nd.array(x_nchw)).asnumpy()  # outside autograd.record(): Gluon's prediction mode


def forward_train(net, x_nchw: np.ndarray) -> np.ndarray:
    with mx.autograd.record(train_mode=True):
        out = net(mx.nd.array(x_nchw))
    return out.asnumpy()


def loss_and_gradients(net, x_nchw: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    params = trainable(net)
    with mx.autograd.record(train_mode=True):
        loss = mx.gluon.loss.SoftmaxCrossEntropyLoss()(net(mx.nd.array(x_nchw)), mx.nd.array(y)).mean()
    loss.backward()
    return float(loss.asscalar()), {n: p.grad().asnumpy() for n, p in params.items()}


def trainable(net) -> dict:
    return {n: p for n, p in _params(net).items() if p.grad_req != "null"}


def read(handle) -> np.ndarray:
    return handle.data().asnumpy()


def write(handle, value: np.ndarray) -> None:
    handle.set_data(mx.nd.array(value))


def children(net) -> list:
    return _named_children(net)


def dense_use_weights(net) -> list:
    return [block.weight for block in net if isinstance(block, nn.Dense)]


def output_and_gradients(net, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    handles = trainable(net)
    with mx.autograd.record():
        y = net(mx.nd.array(x))
        total = y.sum()
    total.backward()
    return y.asnumpy(), {n: p.grad().asnumpy() for n, p in handles.items()}


def to_backend(x: np.ndarray, y: np.ndarray):
    return mx.nd.array(x, dtype=x.dtype), mx.nd.array(y, dtype=np.float32)


def to_numpy(t) -> np.ndarray:
    return t.asnumpy()


def batch_norms(net) -> list[tuple[float, float]]:
    # Gluon's momentum weighs the old running statistic: 1 - momentum is the new batch statistic's weight
    found = []

    def visit(block):
        if isinstance(block, nn.BatchNorm):
            found.append((block._kwargs["eps"], 1 - block._kwargs["momentum"]))
        for child in block._children.values():
            visit(child)

    visit(net)
    return found


def optimizer_steps(optimizer: str, lr: float, w0: np.ndarray, grads: list[np.ndarray]) -> np.ndarray:
    """A float32 vector ``w0`` after one step of the backend's ``optimizer`` per gradient of ``grads``."""
    from vgg_mxnet.train import _optimizer

    holder = nn.Dense(len(w0), in_units=1, use_bias=False)
    holder.initialize()
    holder.weight.set_data(mx.nd.array(w0.reshape(-1, 1)))
    opt = _optimizer(holder, optimizer, lr)
    for g in grads:
        with mx.autograd.record():  # a loss whose gradient is g, exactly: w . g
            dot = (holder.weight.data() * mx.nd.array(g.reshape(-1, 1))).sum()
        dot.backward()
        opt.step(1)  # the gradient as given: Gluon scales it by 1 / 1
    return holder.weight.data().asnumpy().ravel()


def float64_steps(config: dict, weights: dict, batches: list, optimizer: str, lr: float) -> dict[str, np.ndarray]:
    """Canonical weights after one step of the backend's ``Trainer`` (the recipe's loss and ``optimizer``) per
    NCHW batch, with the network, its optimizer's state and the batches in float64."""
    import vgg_mxnet
    from common.recipe import Recipe
    from vgg_mxnet.train import Trainer

    net = vgg_mxnet.import_weights(vgg_mxnet.vgg(**config), weights)
    net.cast("float64")
    net.forward = lambda x: nn.HybridSequential.forward(net, x)  # past the network's check that the input is float32
    trainer = Trainer(net, Recipe(1, lr, optimizer), mx.cpu())
    trainer.start_epoch(0, lr)
    for x, y in batches:
        trainer.train_step(mx.nd.array(x, dtype="float64"), mx.nd.array(y, dtype="float64"))
    return vgg_mxnet.export_weights(net)


def layer_forward(plan, x_nchw: np.ndarray) -> np.ndarray:
    """The backend's layer for one planned layer (``common.arch.LayerPlan``) alone, on an NCHW batch."""
    from vgg_mxnet.model import _layer

    layer = _layer(plan)
    layer.initialize()
    return layer(mx.nd.array(x_nchw)).asnumpy()
