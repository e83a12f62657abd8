"""The book's ``train_ch6`` in MXNet Gluon: SGD (or Adam), softmax cross-entropy, per-epoch history."""
from __future__ import annotations

import mxnet as mx
from mxnet import autograd, gluon

from common.training import Epoch, History, Meter, Progress, check_loss, check_train_args


def try_gpu(i=0):
    """The i-th GPU if MXNet sees one, else the CPU."""
    return mx.gpu(i) if mx.context.num_gpus() > i else mx.cpu()


def evaluate_accuracy(net, data_iter, device=None):
    """Accuracy of ``net`` over ``data_iter`` in evaluation mode (dropout off, batch-norm statistics fixed)."""
    device = device or next(iter(net.collect_params().values())).list_ctx()[0]
    n, correct = 0, mx.nd.zeros((1,), ctx=device)  # summed on the device: one host sync per pass
    for x, y in data_iter:  # outside autograd.record(): Gluon's prediction mode
        x, y = x.as_in_context(device), y.as_in_context(device)
        correct += (net(x).argmax(axis=1) == y).sum()
        n += y.shape[0]
    meter = Meter()
    meter.add(0.0, correct.asscalar().item(), n)
    return meter.accuracy


def _optimizer(net, optimizer, lr):
    return gluon.Trainer(net.collect_params(), "adam" if optimizer == "adam" else "sgd", {"learning_rate": lr})


def train(net, train_iter, test_iter, num_epochs, lr=0.05, optimizer="sgd", device=None, seed=0, verbose=True):
    """Train ``net`` in place; return a :class:`common.training.History` (loss, accuracies, speed per epoch)."""
    num_epochs, lr, optimizer = check_train_args(num_epochs, lr, optimizer)
    device = device or try_gpu()
    mx.random.seed(seed)  # dropout masks
    net.collect_params().reset_ctx(device)
    # static_alloc / static_shape measured no faster on CPU (within 3%), and static_shape re-plans memory for
    # every smaller last batch; the plain cached graph it is
    net.hybridize()
    opt = _optimizer(net, optimizer, lr)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    history = History("mxnet", str(device))
    for epoch in range(1, num_epochs + 1):
        meter, bar = Meter(), Progress(len(train_iter), f"[mxnet] epoch {epoch}", enabled=None if verbose else False)
        for step, (x, y) in enumerate(train_iter, start=1):
            x, y = x.as_in_context(device), y.as_in_context(device)
            with autograd.record():  # training mode: dropout on, batch-norm batch statistics
                logits = net(x)
                loss = loss_fn(logits, y)
            loss.backward()
            opt.step(y.shape[0])  # gradients of the summed loss, scaled by 1 / batch: the mean
            # loss sum and correct count in one host sync
            loss_sum, correct = mx.nd.concat(loss.sum(), (logits.argmax(axis=1) == y).sum(), dim=0).asnumpy().tolist()
            check_loss(loss_sum, epoch, step, lr)
            meter.add(loss_sum, correct, y.shape[0])
            bar.update(loss=meter.mean_loss)
        bar.close()
        seconds = meter.seconds
        history.add(Epoch(epoch, meter.mean_loss, meter.accuracy, evaluate_accuracy(net, test_iter, device),
                          meter.n / seconds, seconds), verbose)
    return history
