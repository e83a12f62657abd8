"""Speed in MXNet Gluon: the book's plain training step beside the project's, and the machine's matmul peak.

``path="book"`` is the book's ``train_ch6`` step as written: an imperative (not hybridized) network.
``path="project"`` is what ``vgg_mxnet.train`` runs: the network hybridized into one cached graph. ``precision="bf16"`` is not offered: MXNet 1.9's AMP converts to bfloat16 only
symbolic models for inference, not a Gluon training loop (see the README's performance section).
"""
from __future__ import annotations

import contextlib

import mxnet as mx
from mxnet import autograd, gluon

from common.bench import best_seconds

PATHS = ("book", "project")


def matmul_gflops(precision="fp32", n=2048, repeats=5):
    """GFLOP/s of an ``n`` x ``n`` matrix product (the best of ``repeats``); None where unsupported."""
    if precision != "fp32":
        return None
    a, b = mx.nd.random.uniform(shape=(n, n)), mx.nd.random.uniform(shape=(n, n))
    return 2 * n ** 3 / best_seconds(lambda: mx.nd.dot(a, b).wait_to_read(), repeats) / 1e9


@contextlib.contextmanager
def policy(precision="fp32"):
    """Build networks inside this block for ``precision`` (fp32 only in MXNet; nothing to set)."""
    yield


def _prepare(net, path):
    if path == "project":
        net.hybridize()
    return net


def train_step(net, path="book", precision="fp32", lr=0.05):
    """A function ``step(x, y) -> loss`` doing one SGD step of the book's recipe on ``net``, on the given path."""
    if precision != "fp32":
        raise NotImplementedError("MXNet 1.9 has no bfloat16 training for Gluon networks")
    net = _prepare(net, path)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": lr})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    def step(x, y):
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(x.shape[0])
        return float(loss.mean().asscalar())
    return step


def infer_step(net, path="book", precision="fp32"):
    """A function ``step(x) -> logits`` of evaluation-mode inference on the given path."""
    if precision != "fp32":
        raise NotImplementedError("MXNet 1.9 has no bfloat16 inference for Gluon networks")
    net = _prepare(net, path)
    return lambda x: net(x).asnumpy()

