"""Speed in PyTorch: the book's plain training step beside the project's, and the machine's matmul peak.

``path="book"`` is the book's ``train_ch6`` step as written: eager, NCHW (PyTorch's default layout), the
batch moved to the device and the loss read on the host at every step (the book's ``Accumulator``).
``path="project"`` is what ``vgg_torch.train`` runs: channels-last memory format, which lets oneDNN and cuDNN
run their blocked convolution kernels without reordering every tensor, and no host read per step.
``precision="bf16"`` runs forward and backward under ``torch.autocast`` (bfloat16 matmuls and convolutions,
fp32 weights).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from common.bench import best_seconds

from .train import get_device, in_precision, policy  # noqa: F401  (policy: part of every backend's bench interface)

PATHS = ("book", "project")


def synchronize(device="cpu"):
    """Wait until ``device`` has done all the work queued on it (a GPU runs behind the host)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def device_info(device="cpu"):
    """The device's name and the most memory the framework's allocator has held on it since the last call."""
    device = get_device(device)
    if device.type != "cuda":
        return {"device": "cpu", "name": None, "peak_memory_mib": None}
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    torch.cuda.reset_peak_memory_stats(device)
    return {"device": str(device), "name": torch.cuda.get_device_name(device), "peak_memory_mib": peak}


@contextlib.contextmanager
def _tf32(enabled):
    """Matrix products in TF32 (``enabled``) or in full fp32, for the block."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # PyTorch >= 2.9
        name, value = "fp32_precision", "tf32" if enabled else "ieee"
    else:
        name, value = "allow_tf32", enabled
    before = getattr(matmul, name)
    setattr(matmul, name, value)
    try:
        yield
    finally:
        setattr(matmul, name, before)


def matmul_gflops(precision="fp32", n=None, repeats=5, device="cpu"):
    """GFLOP/s of an ``n`` x ``n`` matrix product (the best of ``repeats``); None where unsupported.

    ``precision``: ``"fp32"`` (full float32), ``"tf32"`` (float32 in TensorFloat-32, GPUs only) or ``"bf16"``.
    ``n``: 2048 on a CPU, 8192 on a GPU (a smaller product leaves it idle between kernels).

    On a CPU the product is also run as a 1x1 convolution in channels-last, which oneDNN computes (the library
    of the network's convolutions), and the faster of the two counts: on the 2-core AMD EPYC ``torch.mm``
    (MKL) reached 178 GFLOP/s in fp32 where oneDNN's product reached 206-215, so ``torch.mm`` alone put
    PyTorch's own training above "the peak".
    """
    device = get_device(device)
    cuda = device.type == "cuda"
    if precision == "tf32" and not cuda:
        return None
    n = n or (8192 if cuda else 2048)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.rand(n, n, device=device).to(dtype), torch.rand(n, n, device=device).to(dtype)

    def product():
        torch.mm(a, b)
        synchronize(device)

    with _tf32(precision == "tf32"):
        seconds = best_seconds(product, repeats)
    if not cuda:  # the n x n product as n pixels of n channels through an n -> n 1x1 convolution
        x = a.t().reshape(1, n, 1, n).contiguous(memory_format=torch.channels_last)
        w = b.t().reshape(n, n, 1, 1).contiguous(memory_format=torch.channels_last)
        seconds = min(seconds, best_seconds(lambda: torch.nn.functional.conv2d(x, w), repeats))
    return 2 * n**3 / seconds / 1e9


def train_step(net, path="book", precision="fp32", lr=0.05, device="cpu"):
    """A function ``step(x, y) -> loss`` doing one SGD step of the book's recipe on ``net``, on the given path.

    The book's step returns the loss as a number (a host sync per step); the project's returns it on the
    device (:func:`synchronize` before reading a clock).
    """
    device = get_device(device)
    channels_last = path == "project"
    net = net.to(device, memory_format=torch.channels_last) if channels_last else net.to(device)
    net.train()
    forward = in_precision(net, precision)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()

    def step(x, y):
        x = x.to(device, memory_format=torch.channels_last, non_blocking=True) if channels_last else x.to(device)
        y = y.to(device, non_blocking=channels_last)
        opt.zero_grad()
        loss = loss_fn(forward(x), y)
        loss.backward()
        opt.step()
        return loss.detach() if channels_last else loss.item()

    return step


def infer_step(net, path="book", precision="fp32", device="cpu"):
    """A function ``step(x) -> logits`` of evaluation-mode inference on the given path (logits on the host)."""
    device = get_device(device)
    channels_last = path == "project"
    net = net.to(device, memory_format=torch.channels_last) if channels_last else net.to(device)
    net.eval()
    forward = in_precision(net, precision)

    def step(x):
        x = x.to(device, memory_format=torch.channels_last) if channels_last else x.to(device)
        with torch.no_grad():
            return forward(x).float().cpu().numpy()

    return step
