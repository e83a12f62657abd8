"""PyTorch side of the test adapters (see ``adapters/__init__.py``)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

CONTAINER = "Sequential"  # what vgg_block returns


def forward(net, x_nchw: np.ndarray) -> np.ndarray:
    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(x_nchw)).numpy()


def forward_train(net, x_nchw: np.ndarray) -> np.ndarray:
    net.train()
    with torch.no_grad():
        return net(torch.from_numpy(x_nchw)).numpy()


def loss_and_gradients(net, x_nchw: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    net.train()
    net.zero_grad()
    loss = nn.functional.cross_entropy(net(torch.from_numpy(x_nchw)), torch.from_numpy(y))
    loss.backward()
    return loss.item(), {n: p.grad.numpy().copy() for n, p in net.named_parameters()}


def trainable(net) -> dict:
    return dict(net.named_parameters())


def read(handle) -> np.ndarray:
    return handle.detach().numpy().copy()


def write(handle, value: np.ndarray) -> None:
    with torch.no_grad():
        handle.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def children(net) -> list:
    return list(net.named_children())


def dense_use_weights(net) -> list:
    return [m.weight for m in net if isinstance(m, nn.Linear)]


def output_and_gradients(net, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    handles = trainable(net)
    net.zero_grad()
    y = net(torch.from_numpy(x))
    y.sum().backward()
    return y.detach().numpy(), {n: p.grad.numpy().copy() for n, p in handles.items()}


def to_backend(x: np.ndarray, y: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)


def to_numpy(t) -> np.ndarray:
    return t.numpy()


def batch_norms(net) -> list[tuple[float, float]]:
    return [(m.eps, m.momentum) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]


def optimizer_steps(optimizer: str, lr: float, w0: np.ndarray, grads: list[np.ndarray]) -> np.ndarray:
    """A float32 vector ``w0`` after one step of the backend's ``optimizer`` per gradient of ``grads``."""
    from vgg_torch.train import _optimizer

    holder = nn.Module()
    holder.w = nn.Parameter(torch.from_numpy(w0.copy()))
    opt = _optimizer(holder, optimizer, lr)
    for g in grads:
        holder.w.grad = torch.from_numpy(g.copy())
        opt.step()
    return holder.w.detach().numpy().copy()


def float64_steps(config: dict, weights: dict, batches: list, optimizer: str, lr: float) -> dict[str, np.ndarray]:
    """Canonical weights after one step of the backend's ``Trainer`` (the recipe's loss and ``optimizer``) per
    NCHW batch, with the network, its optimizer's state and the batches in float64."""
    import vgg_torch
    from common.recipe import Recipe
    from vgg_torch.train import Trainer

    net = vgg_torch.import_weights(vgg_torch.vgg(**config), weights).double()
    net.forward = lambda x: nn.Sequential.forward(net, x)  # past the network's check that the input is float32
    trainer = Trainer(net, Recipe(1, lr, optimizer), "cpu")
    trainer.start_epoch(0, lr)
    for x, y in batches:
        trainer.train_step(torch.from_numpy(x.astype(np.float64)), torch.from_numpy(y))
    return vgg_torch.export_weights(net)


def layer_forward(plan, x_nchw: np.ndarray) -> np.ndarray:
    """The backend's layer for one planned layer (``common.arch.LayerPlan``) alone, on an NCHW batch."""
    from vgg_torch.model import _layer

    with torch.no_grad():
        return _layer(plan).eval()(torch.from_numpy(x_nchw)).numpy()
