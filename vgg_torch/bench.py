"""Speed in PyTorch: the book's plain training step beside the project's, and the machine's matmul peak.

``path="book"`` is the book's ``train_ch6`` step as written: eager, NCHW (PyTorch's default layout).
``path="project"`` is what ``vgg_torch.train`` runs: channels-last memory format, which lets oneDNN run
its blocked convolution kernels without reordering every tensor. ``precision="bf16"``
runs forward and backward under ``torch.autocast`` (bfloat16 matmuls and convolutions, fp32 weights).
"""

from __future__ import annotations

import torch
from torch import nn

from common.bench import best_seconds

from .train import in_precision, policy  # noqa: F401  (policy: part of every backend's bench interface)

PATHS = ("book", "project")


def matmul_gflops(precision="fp32", n=2048, repeats=5):
    """GFLOP/s of an ``n`` x ``n`` matrix product (the best of ``repeats``); PyTorch multiplies in every precision."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    a, b = torch.rand(n, n).to(dtype), torch.rand(n, n).to(dtype)
    return 2 * n**3 / best_seconds(lambda: torch.mm(a, b), repeats) / 1e9


def train_step(net, path="book", precision="fp32", lr=0.05):
    """A function ``step(x, y) -> loss`` doing one SGD step of the book's recipe on ``net``, on the given path."""
    channels_last = path == "project"
    net = net.to(memory_format=torch.channels_last) if channels_last else net
    net.train()
    forward = in_precision(net, precision)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()

    def step(x, y):
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        opt.zero_grad()
        loss = loss_fn(forward(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def infer_step(net, path="book", precision="fp32"):
    """A function ``step(x) -> logits`` of evaluation-mode inference on the given path."""
    channels_last = path == "project"
    net = net.to(memory_format=torch.channels_last) if channels_last else net
    net.eval()
    forward = in_precision(net, precision)

    def step(x):
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        with torch.no_grad():
            return forward(x).float().numpy()

    return step
