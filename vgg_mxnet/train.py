"""The book's ``train_ch6`` in MXNet Gluon: the step and the state adapters that ``common.training.fit`` drives."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import warnings
from collections.abc import Iterable
from typing import Any

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from mxnet.contrib import amp

from common import training
from common.bench import cpu_features
from common.data import check_batch
from common.distributed import SYNC_BN, Watchdog, loss_scale, shard
from common.errors import ConfigError, InputError, WeightsError, arg
from common.recipe import ADAM

from .data import on_device
from .model import Device, Net
from .weights import export_weights, import_weights


def try_gpu(i: int = 0) -> Device:
    """The i-th GPU if MXNet sees one, else the CPU."""
    i = training.gpu_index(i)
    return mx.gpu(i) if mx.context.num_gpus() > i else mx.cpu()


def get_device(device: Device | str | None = "auto") -> Device:
    """The MXNet context of ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (or an ``mx.Context``, as is)."""
    if isinstance(device, mx.Context):
        return device
    kind, index = training.parse_device(device)
    if kind == "auto":
        return try_gpu()
    if kind == "cuda" and mx.context.num_gpus() <= index:
        raise training.no_gpu("MXNet", index, mx.context.num_gpus(), "an mxnet-cu* wheel matching your CUDA")
    return mx.cpu() if kind == "cpu" else mx.gpu(index)


def _check_batch(net, x, y, check_finite, where):
    """The checks of :func:`common.data.check_batch` on one batch of NDArrays (NCHW)."""
    if not isinstance(x, mx.nd.NDArray) or not isinstance(y, mx.nd.NDArray):
        raise InputError(
            f"{where} is ({type(x).__name__}, {type(y).__name__}); give (images, labels) as NDArrays (mx.nd.array)"
        )
    if getattr(net, "config", None) is None:  # a network not built by vgg(): nothing to check against
        return
    floating = np.issubdtype(x.dtype, np.floating)
    finite = bool(mx.nd.contrib.isfinite(x).min().asscalar()) if check_finite and floating else True
    labels = y.asnumpy()  # float32, what Gluon's loss and the accuracy count take (as load_data_fashion_mnist gives)
    check_batch(net.config, x.shape, np.dtype(x.dtype).name, labels, "NCHW", finite, where, "float32", "mxnet")


def evaluate_accuracy(
    net: Net, data_iter: Iterable, device: Device | str | None = None, check_finite: bool = True, compile: bool = False
) -> float:
    """Accuracy of ``net`` over ``data_iter`` in evaluation mode (dropout off, batch-norm statistics fixed).

    Every batch is checked against the network first (rank, channels, size, dtype, labels; with
    ``check_finite``, NaN or infinite pixels): a mistake is an :class:`common.errors.InputError`.
    ``compile``: taken and changes nothing (a hybridized network runs its cached graph already).
    """
    device = next(iter(net.collect_params().values())).list_ctx()[0] if device is None else get_device(device)

    def check(x, y, where):
        _check_batch(net, x, y, check_finite, where)

    def correct(x, y):  # outside autograd.record(): Gluon's prediction mode
        x, y = x.as_in_context(device), y.as_in_context(device)
        return (net(x).argmax(axis=1) == y).sum()  # summed on the device: one host sync per pass

    return training.accuracy(data_iter, check, correct, read=_scalar)


def _scalar(total):
    return total.asscalar().item() if isinstance(total, mx.nd.NDArray) else float(total)


def policy(precision="fp32"):
    """Networks built inside this block are ready for ``precision`` (Gluon needs nothing: see :func:`in_precision`)."""
    return contextlib.nullcontext()


# How train() (and vgg bench's project path) hybridizes. Static memory and shapes let the cached graph plan
# its buffers once: measured 1.25x the training speed of a plain hybridize() on a 2-core CPU (vgg11 ratio 4,
# 96 px, batch 128; scripts/levers.py mxnet). A smaller last batch re-plans them, once per epoch.
HYBRIDIZE = {"static_alloc": True, "static_shape": True}


def hybridize(net, **flags):
    """Turn ``net`` into one cached graph, the way ``train`` runs it (``flags``, else :data:`HYBRIDIZE`)."""
    net.hybridize(**(flags or HYBRIDIZE))
    return net


def in_precision(net, precision="fp32"):
    """``net`` computing in ``precision``, sharing its parameters: ``net`` itself for fp32.

    For bf16, a block that on its first call runs ``net``'s cached graph through MXNet's AMP graph pass
    (``amp.convert_symbol``): convolutions and dense layers compute in bfloat16 behind casts, batch norm and
    the output stay float32; the parameters are ``net``'s own float32 ones, so training it trains ``net``.
    (``amp.init()`` would do the same by patching every MXNet operator for the rest of the process; this
    touches nothing global.)
    """
    return net if precision == "fp32" else _AMP(net)


class _AMP:
    def __init__(self, net):
        self.net, self.block = net, None

    def __call__(self, x):
        if self.block is None:
            if not self.net._cached_graph:
                self.net(x)
            inputs, graph = self.net._cached_graph
            names = [i.name for i in inputs]
            graph = amp.convert_symbol(graph, "bfloat16", data_names=names, cast_optional_params=False)
            with warnings.catch_warnings():  # the data's dtype is not known until the first batch; it is float32
                warnings.simplefilter("ignore", UserWarning)
                self.block = hybridize(gluon.SymbolBlock(graph, inputs, params=self.net.collect_params()))
        return self.block(x)


# CPU features on which Gluon's bf16 training is slower than its fp32, so that train() falls back to fp32:
# AMX, where it measured 0.69x its fp32 training at vgg bench's defaults (2 cores). MXNet 1.9.1's oneDNN
# (v2.4.4) counts AMX as initial support, off by default, so bf16 runs on AVX512-BF16 code there, with AMP's
# casts around every convolution and dense layer (docs/bf16.md).
BF16_SLOWER_ON = ("amx_bf16",)


def run_precision(precision, device, flags=None, quiet=False):
    """The precision Gluon trains in when asked for ``precision`` on ``device``.

    fp32 instead of bf16 on a CPU with one of :data:`BF16_SLOWER_ON` (``flags``, else /proc/cpuinfo's),
    with a one-line notice on stderr (unless ``quiet``: the workers of a run other than rank 0); otherwise
    ``precision`` itself.
    """
    if precision != "bf16" or get_device(device).device_type != "cpu":
        return precision
    slower = sorted(set(cpu_features().get("flags", ()) if flags is None else flags) & set(BF16_SLOWER_ON))
    if not slower:
        return precision
    if not quiet:
        print(
            f"note: MXNet Gluon's bf16 trains slower than its fp32 on this CPU ({', '.join(slower)}: its oneDNN "
            f"2.4 leaves AMX off); training in fp32",
            file=sys.stderr,
            flush=True,
        )
    return "fp32"


class Adam(mx.optimizer.Adam):
    """``common.recipe.ADAM``: PyTorch's Adam, epsilon added to the bias-corrected root of the second moment.

    MXNet's own (its fused ``adam_update``) adds epsilon to the uncorrected root. The state is MXNet's
    (mean, variance) per parameter and its update counters, so a checkpoint holds what Gluon's Adam holds.
    """

    def __init__(self, learning_rate):
        a = ADAM
        super().__init__(learning_rate=learning_rate, beta1=a["beta1"], beta2=a["beta2"], epsilon=a["eps"])

    def update(self, index, weight, grad, state):
        self._update_count(index)
        lr, wd, t = self._get_lr(index), self._get_wd(index), self._index_update_count[index]
        grad = grad * self.rescale_grad + wd * weight  # then clipped, as MXNet's adam_update does
        if self.clip_gradient:
            grad = mx.nd.clip(grad, -self.clip_gradient, self.clip_gradient)
        mean, var = state
        mean[:] = mean + (1 - self.beta1) * (grad - mean)
        var[:] = self.beta2 * var + (1 - self.beta2) * mx.nd.square(grad)
        denominator = mx.nd.sqrt(var) / np.sqrt(1 - self.beta2**t) + self.epsilon
        weight[:] = weight - lr / (1 - self.beta1**t) * mean / denominator


def _rule(optimizer, lr):
    """Gluon's optimizer and its arguments for the recipe's ``optimizer``: what a ``gluon.Trainer`` is made with."""
    return (Adam(lr), None) if optimizer == "adam" else ("sgd", {"learning_rate": lr})


def _optimizer(net, optimizer, lr):
    return gluon.Trainer(net.collect_params(), *_rule(optimizer, lr))


def _slots(state) -> tuple:
    """The arrays an optimizer keeps for one parameter (Adam: its two moments; plain SGD: none), as a tuple."""
    return tuple(state) if isinstance(state, (tuple, list)) else () if state is None else (state,)


class Trainer(training.Trainer):
    """MXNet Gluon's side of :func:`common.training.fit`."""

    backend = "mxnet"
    batch_check = staticmethod(_check_batch)
    evaluate_accuracy = staticmethod(evaluate_accuracy)
    export_weights = staticmethod(export_weights)
    import_weights = staticmethod(import_weights)
    on_device = staticmethod(on_device)

    def __init__(self, net, recipe, device, compile=False):
        # a distributed run's rank 0 speaks for it
        recipe = dataclasses.replace(recipe, precision=run_precision(recipe.precision, device, quiet=self.rank > 0))
        super().__init__(net, recipe, device, compile)  # compile: taken; the hybridized step is compiled already
        net.collect_params().reset_ctx(device)
        self.forward = in_precision(hybridize(net), recipe.precision)
        self.opt = _optimizer(net, recipe.optimizer, recipe.lr)
        self.loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    def start_epoch(self, epoch, lr):
        # dropout masks of each epoch drawn from (seed, epoch): a resumed epoch draws what it would have; a
        # data-parallel worker above rank 0 from (seed, epoch, rank): its own masks, not rank 0's
        mx.random.seed(training.derived_seed(self.recipe.seed, epoch, *([self.rank] if self.rank > 0 else [])))
        self.opt.set_learning_rate(lr)

    def train_step(self, x, y):
        x, y = x.as_in_context(self.device), y.as_in_context(self.device)
        with autograd.record():  # training mode: dropout on, batch-norm batch statistics
            logits = self.forward(x)
            loss = self.loss_fn(logits, y)
        loss.backward()
        self.opt.step(y.shape[0])  # gradients of the summed loss, scaled by 1 / batch: the mean
        correct = (logits.argmax(axis=1) == y).sum()
        return mx.nd.concat(loss.sum(), correct, dim=0).asnumpy().tolist()  # one host sync

    def optimizer_state(self):
        """Per-parameter state (Adam's moments; none for plain SGD) as ``<index>/<slot>``; update counters."""
        arrays = {}
        for index, state in self.opt._updaters[0].states.items():
            arrays.update({f"{index}/{j}": slot.asnumpy() for j, slot in enumerate(_slots(state))})
        o = self.opt._optimizer  # Adam's bias correction reads the counters
        return arrays, {"num_update": o.num_update, "counts": {str(k): v for k, v in o._index_update_count.items()}}

    def set_optimizer_state(self, arrays, scalars):
        updater, o = self.opt._updaters[0], self.opt._optimizer
        params = self.opt._params  # the trainer's numbering of the parameters
        states = {}
        for index, param in enumerate(params):
            state = o.create_state_multi_precision(index, param.list_data()[0])
            states[index] = state, _slots(state)
        expected = {f"{i}/{j}": slot.shape for i, (_, slots) in states.items() for j, slot in enumerate(slots)}
        training.check_state(arrays, expected, "optimizer state")
        counts, num_update = scalars.get("counts", {}), scalars.get("num_update", 0)
        if type(num_update) is not int or not all(type(v) is int for v in counts.values()):
            raise WeightsError(f"its update counters are {num_update!r} and {list(counts.values())[:4]!r}")
        training.check_counter(num_update, self.steps_done, "update count")
        for index, count in counts.items():
            training.check_counter(count, self.steps_done, f"update count of parameter {index}")
        for index, (state, slots) in states.items():
            for j, slot in enumerate(slots):
                slot[:] = mx.nd.array(arrays[f"{index}/{j}"], ctx=slot.context, dtype=slot.dtype)
            if slots:
                updater.states[index], updater.states_synced[index] = state, True
        o.num_update = num_update
        o._index_update_count.update({int(k): v for k, v in counts.items()})

    def rng_state(self):
        """Nothing to save: dropout is reseeded from (seed, epoch) at the start of every epoch."""
        return {}

    def set_rng_state(self, arrays):
        """Nothing to restore: see :meth:`rng_state`."""


train = training.train_function(Trainer, get_device)


_RUN: dict[str, Any] = {}  # the kvstore this process joined: a process is one worker of one run


def join_run():
    """Join the ps-lite run the ``DMLC_*`` variables describe: its ``dist_sync`` kvstore, made once per process."""
    if "kvstore" not in _RUN:
        if not mx.runtime.Features().is_enabled("DIST_KVSTORE"):
            raise ConfigError(
                f"{arg('workers')}: this MXNet is built without the distributed kvstore; use {arg('workers', 1)}"
            )
        _RUN["kvstore"] = mx.kv.create("dist_sync")
    return _RUN["kvstore"]


class DistributedTrainer(Trainer):
    """Data parallel on MXNet's ``dist_sync`` kvstore: this process is one worker of a ps-lite run.

    The run is described by ps-lite's variables (``DMLC_ROLE=worker``, ``DMLC_PS_ROOT_URI``,
    ``DMLC_PS_ROOT_PORT``, ``DMLC_NUM_SERVER``, ``DMLC_NUM_WORKER``), beside a scheduler and server processes;
    the scheduler numbers the workers (:attr:`rank`). The Gluon Trainer pushes each worker's gradients to the
    servers, which sum them, and pulls the sum back (``update_on_kvstore=False``: every worker then applies
    the same update, and its optimizer state stays on the worker, where a checkpoint can read it). Each worker
    steps on its own slice of every global batch (``common.distributed.shard``) with its loss scaled by
    ``common.distributed.loss_scale`` (``1 / batch``): the servers' sum is the one-process mean gradient. Batch norm
    normalizes each worker's slice with its own statistics, and each worker keeps its own running statistics
    (rank 0's are saved): Gluon has no batch norm synchronized over a kvstore, so there is no ``sync_bn``.
    """

    def __init__(self, net, recipe, device, sync_bn=False):
        if sync_bn and SYNC_BN["mxnet"] is None:
            raise ConfigError(
                f"{arg('sync_bn')}: MXNet Gluon has no batch norm synchronized across kvstore workers; leave it out "
                "(each worker then normalizes its own slice)"
            )
        self.kv = join_run()
        self.rank, self.size = self.kv.rank, self.kv.num_workers
        self.watchdog = Watchdog()  # ps-lite waits for a stalled worker for good: this ends the wait
        super().__init__(net, recipe, device)
        self.opt = gluon.Trainer(
            net.collect_params(), *_rule(recipe.optimizer, recipe.lr), kvstore=self.kv, update_on_kvstore=False
        )
        # Gluon joins the kvstore at its first step, where each worker pulls rank 0's parameters (init + pull)
        # and then pushes its gradients under the same keys. The pull and the push write different arrays, so
        # MXNet's engine does not order them: a push that reached the server first replaced the stored
        # parameters with the summed gradients, and the pull then brought those back as the worker's weights
        # (2 runs in 35 ended about 1.0, relative, off the one-process weights). So: join now, wait for the pulls,
        # and let no worker push before every worker has its parameters.
        with self.watchdog.waiting():
            self.opt._init_kvstore()
            self.opt._init_params()
            mx.nd.waitall()
            self.kv._barrier()
            self.metrics = len(self.opt._params)  # the kvstore key after the parameters' own: the step's sums
            self.kv.init(self.metrics, mx.nd.zeros(2))

    def train_step(self, x, y):
        batch, part = y.shape[0], shard(y.shape[0], self.rank, self.size)
        if part.stop > part.start:
            x, y = (
                x[part.start : part.stop].as_in_context(self.device),
                y[part.start : part.stop].as_in_context(self.device),
            )
            with autograd.record():
                logits = self.forward(x)
                loss = self.loss_fn(logits, y)  # per example of this worker's slice
                share = loss * loss_scale(self.size, batch, self.backend)  # the servers sum them: the global mean
            share.backward()
            sums = mx.nd.concat(loss.sum(), (logits.argmax(axis=1) == y).sum(), dim=0)
        else:  # a last batch smaller than the run: this worker adds nothing to the sums
            for param in self.opt._params:
                param.zero_grad()
            sums = mx.nd.zeros(2)
        with self.watchdog.waiting():
            self.opt.step(1)  # the servers sum the workers' scaled gradients: the gradient is the one to apply
            self.kv.pushpull(self.metrics, sums, out=sums)  # the global batch's summed loss and correct predictions
            return sums.asnumpy().tolist()
