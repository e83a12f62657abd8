"""The book's ``train_ch6`` in MXNet Gluon: SGD (or Adam), softmax cross-entropy, per-epoch history, checkpoints."""

from __future__ import annotations

import warnings

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from mxnet.contrib import amp

from common.checkpoint import load_checkpoint, make_recipe, prepare_checkpoint, save_checkpoint
from common.errors import InputError, WeightsError
from common.training import (
    Epoch,
    History,
    Meter,
    Progress,
    check_batch,
    check_loss,
    check_precision,
    check_train_args,
    data_epoch,
    epoch_lr,
    resume_point,
)

from .weights import export_weights, import_weights


def try_gpu(i=0):
    """The i-th GPU if MXNet sees one, else the CPU."""
    return mx.gpu(i) if mx.context.num_gpus() > i else mx.cpu()


def _check_batch(net, x, y, check_finite, where):
    """The checks of :func:`common.training.check_batch` on one batch of NDArrays (NCHW)."""
    if not isinstance(x, mx.nd.NDArray) or not isinstance(y, mx.nd.NDArray):
        raise InputError(
            f"{where} is ({type(x).__name__}, {type(y).__name__}); give (images, labels) as NDArrays (mx.nd.array)"
        )
    if getattr(net, "config", None) is None:  # a network not built by vgg(): nothing to check against
        return
    floating = np.issubdtype(x.dtype, np.floating)
    finite = bool(mx.nd.contrib.isfinite(x).min().asscalar()) if check_finite and floating else True
    check_batch(net.config, x.shape, np.dtype(x.dtype).name, y.asnumpy(), "NCHW", finite, where)


def evaluate_accuracy(net, data_iter, device=None, check_finite=True):
    """Accuracy of ``net`` over ``data_iter`` in evaluation mode (dropout off, batch-norm statistics fixed).

    Every batch is checked against the network first (rank, channels, size, dtype, labels; with
    ``check_finite``, NaN or infinite pixels): a mistake is an :class:`common.errors.InputError`.
    """
    device = device or next(iter(net.collect_params().values())).list_ctx()[0]
    n, correct = 0, mx.nd.zeros((1,), ctx=device)  # summed on the device: one host sync per pass
    for i, (x, y) in enumerate(data_iter, start=1):  # outside autograd.record(): Gluon's prediction mode
        _check_batch(net, x, y, check_finite, f"evaluation batch {i}")
        x, y = x.as_in_context(device), y.as_in_context(device)
        correct += (net(x).argmax(axis=1) == y).sum()
        n += y.shape[0]
    meter = Meter()
    meter.add(0.0, correct.asscalar().item(), n)
    return meter.accuracy


def _optimizer(net, optimizer, lr):
    return gluon.Trainer(net.collect_params(), "adam" if optimizer == "adam" else "sgd", {"learning_rate": lr})


def _optimizer_state(net, opt) -> dict[str, np.ndarray]:
    """The trainer's per-parameter state (Adam's moments; none for plain SGD) as ``<index>/<slot>`` arrays."""
    out = {}
    for index, state in opt._updaters[0].states.items():
        slots = state if isinstance(state, (tuple, list)) else () if state is None else (state,)
        out.update({f"{index}/{j}": slot.asnumpy() for j, slot in enumerate(slots)})
    return out


def _update_counts(opt) -> dict:
    """The optimizer's update counters (Adam's bias correction reads them)."""
    o = opt._optimizer
    return {"num_update": o.num_update, "counts": {str(k): v for k, v in o._index_update_count.items()}}


def _set_optimizer_state(net, opt, arrays: dict[str, np.ndarray], counts: dict) -> None:
    updater, o = opt._updaters[0], opt._optimizer
    params = opt._params  # the trainer's numbering of the parameters
    for index in sorted({int(key.partition("/")[0]) for key in arrays}):
        if index >= len(params):
            raise WeightsError(
                f"the checkpoint holds optimizer state for parameter {index}; this network has "
                f"{len(params)}: resume with the configuration it was saved from"
            )
        weight = params[index].list_data()[0]
        state = o.create_state_multi_precision(index, weight)
        slots = state if isinstance(state, (tuple, list)) else (state,)
        for j, slot in enumerate(slots):
            slot[:] = mx.nd.array(arrays[f"{index}/{j}"], ctx=weight.context, dtype=slot.dtype)
        updater.states[index], updater.states_synced[index] = state, True
    o.num_update = counts.get("num_update", 0)
    o._index_update_count.update({int(k): v for k, v in counts.get("counts", {}).items()})


def _rng_state(net) -> dict[str, np.ndarray]:
    """Nothing to save: dropout is reseeded from (seed, epoch) at the start of every epoch."""
    return {}


def _set_rng_state(net, arrays: dict[str, np.ndarray]) -> None:
    """Nothing to restore: see :func:`_rng_state`."""


def _seed_epoch(seed, epoch):
    """Dropout masks of epoch ``epoch`` drawn from (seed, epoch): a resumed epoch draws what it would have."""
    mx.random.seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] % 2**31))


# How train() (and vgg bench's project path) hybridizes. Static memory and shapes let the cached graph plan
# its buffers once: measured 1.25x the training speed of a plain hybridize() on a 2-core CPU (vgg11 ratio 4,
# 96 px, batch 128; scripts/levers.py mxnet). A smaller last batch re-plans them, once per epoch.
HYBRIDIZE = {"static_alloc": True, "static_shape": True}


def hybridize(net, **flags):
    """Turn ``net`` into one cached graph, the way ``train`` runs it (``flags``, else :data:`HYBRIDIZE`)."""
    net.hybridize(**(flags or HYBRIDIZE))
    return net


def in_precision(net, x, precision="fp32"):
    """A block computing ``net`` in ``precision``, sharing its parameters: ``net`` itself for fp32.

    For bf16, ``net``'s cached graph (built by a forward pass on ``x`` if not yet) goes through MXNet's AMP
    graph pass (``amp.convert_symbol``): convolutions and dense layers compute in bfloat16 behind casts,
    batch norm and the output stay float32; the parameters are ``net``'s own float32 ones, so training the
    returned block trains ``net``. (``amp.init()`` would do the same by patching every MXNet operator for
    the rest of the process; this touches nothing global.)
    """
    if precision == "fp32":
        return net
    if not net._cached_graph:
        net(x)
    inputs, graph = net._cached_graph
    graph = amp.convert_symbol(graph, "bfloat16", data_names=[i.name for i in inputs], cast_optional_params=False)
    with warnings.catch_warnings():  # the data's dtype is not known until the first batch; it is float32
        warnings.simplefilter("ignore", UserWarning)
        block = gluon.SymbolBlock(graph, inputs, params=net.collect_params())
    return hybridize(block)


def _resume(net, opt, resume_from, recipe, train_iter, verbose):
    """Weights, optimizer state and history of a checkpoint; the first epoch still to train."""
    ckpt = load_checkpoint(resume_from, "mxnet", net.config, recipe)
    import_weights(net, ckpt.weights)
    _set_optimizer_state(net, opt, ckpt.optimizer, ckpt.state.get("optimizer", {}))
    _set_rng_state(net, ckpt.rng)
    history = ckpt.history
    if verbose:
        print(f"[mxnet] resuming from {ckpt.path} after epoch {ckpt.epoch} of {recipe['num_epochs']}", flush=True)
    return history, resume_point(history, ckpt.state.get("data_epoch"), train_iter)


def _save(path, net, opt, recipe, epoch, history, train_iter):
    save_checkpoint(
        path,
        "mxnet",
        net.config,
        recipe,
        epoch,
        history,
        export_weights(net),
        _optimizer_state(net, opt),
        _rng_state(net),
        {"data_epoch": data_epoch(train_iter), "optimizer": _update_counts(opt)},
    )


def train(
    net,
    train_iter,
    test_iter,
    num_epochs,
    lr=0.05,
    optimizer="sgd",
    device=None,
    seed=0,
    verbose=True,
    lr_schedule="constant",
    checkpoint=None,
    resume_from=None,
    check_finite=True,
    precision="fp32",
):
    """Train ``net`` in place; return a :class:`common.training.History` (loss, accuracies, speed per epoch).

    ``lr_schedule``: ``"constant"`` (the book's) or ``"cosine"`` (annealed per epoch, see common.training).
    ``checkpoint``: a folder (or ``.npz`` path) where a checkpoint is written atomically after every epoch;
    ``resume_from``: a checkpoint to continue from (same configuration and recipe; no batch is repeated or
    skipped). ``check_finite``: refuse batches with NaN or infinite pixels.
    ``precision``: ``"fp32"``, or ``"bf16"``: convolutions and dense layers in bfloat16 through MXNet's AMP
    graph pass (see :func:`in_precision`), parameters and optimizer float32; evaluation stays float32.
    """
    num_epochs, lr, optimizer = check_train_args(num_epochs, lr, optimizer, lr_schedule)
    precision = check_precision(precision)
    recipe = make_recipe(lr, lr_schedule, optimizer, seed, num_epochs, train_iter, test_iter, precision)
    checkpoint = None if checkpoint is None else prepare_checkpoint(checkpoint)
    device = device or try_gpu()
    net.collect_params().reset_ctx(device)
    hybridize(net)
    forward = None  # net, or its bfloat16 graph: made from the first batch
    opt = _optimizer(net, optimizer, lr)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    history, first = History("mxnet", str(device)), 1
    if resume_from is not None:
        history, first = _resume(net, opt, resume_from, recipe, train_iter, verbose)
    for epoch in range(first, num_epochs + 1):
        _seed_epoch(seed, epoch)  # dropout masks
        rate = epoch_lr(lr, lr_schedule, epoch, num_epochs)
        opt.set_learning_rate(rate)
        meter, bar = Meter(), Progress(len(train_iter), f"[mxnet] epoch {epoch}", enabled=None if verbose else False)
        for step, (x, y) in enumerate(train_iter, start=1):
            _check_batch(net, x, y, check_finite, f"training batch {step} of epoch {epoch}")
            x, y = x.as_in_context(device), y.as_in_context(device)
            if forward is None:
                forward = in_precision(net, x, precision)
            with autograd.record():  # training mode: dropout on, batch-norm batch statistics
                logits = forward(x)
                loss = loss_fn(logits, y)
            loss.backward()
            opt.step(y.shape[0])  # gradients of the summed loss, scaled by 1 / batch: the mean
            # loss sum and correct count in one host sync
            loss_sum, correct = mx.nd.concat(loss.sum(), (logits.argmax(axis=1) == y).sum(), dim=0).asnumpy().tolist()
            check_loss(loss_sum, epoch, step, rate)
            meter.add(loss_sum, correct, y.shape[0])
            bar.update(loss=meter.mean_loss)
        bar.close()
        seconds = meter.seconds
        history.add(
            Epoch(
                epoch,
                meter.mean_loss,
                meter.accuracy,
                evaluate_accuracy(net, test_iter, device),
                meter.n / seconds,
                seconds,
            ),
            verbose,
        )
        if checkpoint is not None:
            _save(checkpoint, net, opt, recipe, epoch, history, train_iter)
    return history
