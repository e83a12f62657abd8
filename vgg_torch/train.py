"""The book's ``train_ch6`` in PyTorch: SGD (or Adam), softmax cross-entropy, per-epoch history."""
from __future__ import annotations

import torch
from torch import nn

from common.training import Epoch, History, Meter, Progress, check_loss, check_train_args


def try_gpu(i=0):
    """The i-th GPU if PyTorch sees one, else the CPU."""
    return torch.device(f"cuda:{i}") if torch.cuda.device_count() > i else torch.device("cpu")


def evaluate_accuracy(net, data_iter, device=None):
    """Accuracy of ``net`` over ``data_iter`` in evaluation mode (dropout off, batch-norm statistics fixed)."""
    device = device or next(net.parameters()).device
    net.eval()
    meter = Meter()
    with torch.no_grad():
        for x, y in data_iter:
            x, y = x.to(device), y.to(device)
            meter.add(0.0, (net(x).argmax(dim=1) == y).sum().item(), y.numel())
    return meter.accuracy


def _optimizer(net, optimizer, lr):
    if optimizer == "adam":
        return torch.optim.Adam(net.parameters(), lr=lr)
    return torch.optim.SGD(net.parameters(), lr=lr)


def train(net, train_iter, test_iter, num_epochs, lr=0.05, optimizer="sgd", device=None, seed=0, verbose=True):
    """Train ``net`` in place; return a :class:`common.training.History` (loss, accuracies, speed per epoch)."""
    num_epochs, lr, optimizer = check_train_args(num_epochs, lr, optimizer)
    device = device or try_gpu()
    torch.manual_seed(seed)  # dropout masks
    net.to(device)
    opt = _optimizer(net, optimizer, lr)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    history = History("torch", str(device))
    for epoch in range(1, num_epochs + 1):
        net.train()
        meter, bar = Meter(), Progress(len(train_iter), f"[torch] epoch {epoch}", enabled=None if verbose else False)
        for step, (x, y) in enumerate(train_iter, start=1):
            x, y = x.to(device), y.to(device)
            logits = net(x)
            loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            (loss / y.numel()).backward()
            opt.step()
            loss_sum = loss.item()
            check_loss(loss_sum, epoch, step, lr)
            meter.add(loss_sum, (logits.argmax(dim=1) == y).sum().item(), y.numel())
            bar.update(loss=meter.mean_loss)
        bar.close()
        seconds = meter.seconds
        history.add(Epoch(epoch, meter.mean_loss, meter.accuracy, evaluate_accuracy(net, test_iter, device),
                          meter.n / seconds, seconds), verbose)
    return history
