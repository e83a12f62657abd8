"""Speed in MXNet Gluon: the book's plain training step beside the project's, and the machine's matmul peak.

``path="book"`` is the book's ``train_ch6`` step as written: an imperative (not hybridized) network.
``path="project"`` is what ``vgg_mxnet.train`` runs: the network hybridized into one cached graph with static
memory and shapes (``vgg_mxnet.train.hybridize``). ``precision="bf16"`` runs that graph after MXNet's AMP pass
(``vgg_mxnet.train.in_precision``: bfloat16 convolutions and dense layers, float32 parameters).
"""

from __future__ import annotations

import mxnet as mx
from mxnet import autograd, gluon

from common.bench import best_seconds

from .train import hybridize, in_precision, policy  # noqa: F401  (policy: part of every backend's bench interface)

PATHS = ("book", "project")


def matmul_gflops(precision="fp32", n=2048, repeats=5):
    """GFLOP/s of an ``n`` x ``n`` matrix product (the best of ``repeats``); None where unsupported."""
    if precision != "fp32":  # NDArray has no bfloat16 matrix product outside AMP's graphs
        return None
    a, b = mx.nd.random.uniform(shape=(n, n)), mx.nd.random.uniform(shape=(n, n))
    return 2 * n**3 / best_seconds(lambda: mx.nd.dot(a, b).wait_to_read(), repeats) / 1e9


def _forward(net, path, precision):
    """``net`` on the given path (the project's hybridizes it) and in the given precision."""
    return in_precision(hybridize(net) if path == "project" else net, precision)


def train_step(net, path="book", precision="fp32", lr=0.05):
    """A function ``step(x, y) -> loss`` doing one SGD step of the book's recipe on ``net``, on the given path."""
    forward = _forward(net, path, precision)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": lr})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    def step(x, y):
        with autograd.record():
            loss = loss_fn(forward(x), y)
        loss.backward()
        trainer.step(x.shape[0])
        return float(loss.mean().asscalar())

    return step


def infer_step(net, path="book", precision="fp32"):
    """A function ``step(x) -> logits`` of evaluation-mode inference on the given path."""
    forward = _forward(net, path, precision)
    return lambda x: forward(x).asnumpy()
