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

from .train import get_device, hybridize, in_precision, policy  # noqa: F401  (policy: every backend's bench has it)

PATHS = ("book", "project")


def synchronize(device="cpu"):
    """Wait until ``device`` has done the work queued on it (MXNet's engine runs behind the host)."""
    mx.nd.waitall()


def device_info(device="cpu"):
    """The device's name and peak memory where MXNet reports them (it reports neither: None)."""
    device = get_device(device)
    return {"device": "cpu" if device.device_type == "cpu" else str(device), "name": None, "peak_memory_mib": None}


def matmul_gflops(precision="fp32", n=None, repeats=5, device="cpu"):
    """GFLOP/s of an ``n`` x ``n`` matrix product (the best of ``repeats``); None where unsupported.

    ``n``: 2048 on a CPU, 8192 on a GPU. Only fp32: NDArray has no bfloat16 matrix product outside AMP's
    graphs, and MXNet has no TF32 switch.
    """
    device = get_device(device)
    if precision != "fp32":
        return None
    n = n or (2048 if device.device_type == "cpu" else 8192)
    a, b = mx.nd.random.uniform(shape=(n, n), ctx=device), mx.nd.random.uniform(shape=(n, n), ctx=device)
    return 2 * n**3 / best_seconds(lambda: mx.nd.dot(a, b).wait_to_read(), repeats) / 1e9


def _forward(net, path, precision, device):
    """``net`` on ``device``, on the given path (the project's hybridizes it) and in the given precision."""
    net.collect_params().reset_ctx(device)
    return in_precision(hybridize(net) if path == "project" else net, precision)


def compiles(step) -> tuple[int, float] | None:
    """Gluon's hybridized graph is not counted as compilations: None."""
    return None


def train_step(net, path="book", precision="fp32", lr=0.05, device="cpu", compile=False):
    """A function ``step(x, y) -> loss`` doing one SGD step of the book's recipe on ``net``, on the given path
    (``compile``: taken, no change; the project's path is hybridized already)."""
    device = get_device(device)
    forward = _forward(net, path, precision, device)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": lr})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    def step(x, y):
        x, y = x.as_in_context(device), y.as_in_context(device)
        with autograd.record():
            loss = loss_fn(forward(x), y)
        loss.backward()
        trainer.step(x.shape[0])
        return float(loss.mean().asscalar())

    return step


def infer_step(net, path="book", precision="fp32", device="cpu", compile=False):
    """A function ``step(x) -> logits`` of evaluation-mode inference on the given path."""
    device = get_device(device)
    forward = _forward(net, path, precision, device)
    return lambda x: forward(x.as_in_context(device)).asnumpy()
