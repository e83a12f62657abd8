"""The real Fashion-MNIST as PyTorch tensors: ``common.data`` batches, NCHW float32 and int64 labels."""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch

from common.data import DataIter, fashion_mnist_batches, resize_matrix

from .model import Device


def _tensors(x, y):
    return torch.from_numpy(x), torch.from_numpy(y)


def load_data_fashion_mnist(
    batch_size: int,
    resize: int | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> tuple[DataIter, DataIter]:
    """(train_iter, test_iter) over the real Fashion-MNIST, pixels in [0, 1], optionally resized (bilinear)."""
    train, test = fashion_mnist_batches(batch_size, resize, seed, "NCHW", data_dir, train_limit, test_limit)
    return DataIter(train, _tensors, verified=True), DataIter(test, _tensors, verified=True)


def on_device(data_iter: Iterable, device: Device) -> Iterable:
    """``data_iter`` as a step on ``device`` is best fed: on a GPU the project's own stream becomes a
    :class:`DeviceIter` (the data uploaded once, every batch made there); anything else is returned as it is."""
    if torch.device(device).type != "cuda" or type(data_iter) is not DataIter or not data_iter.verified:
        return data_iter
    return DeviceIter(data_iter.batches, device)


class DeviceIter(DataIter):
    """The same seeded stream as :func:`load_data_fashion_mnist`'s, made on ``device``: the uint8 images
    (47 MB for the training split) are uploaded once, and each batch is gathered, scaled to [0, 1] and resized
    there with the same bilinear matrices (``common.data.resize_matrix``), ready in channels-last memory.

    The host does no per-batch work and waits for nothing: one 480 KB index upload per pass. The batch order
    is the host stream's (``Batches.next_order``), so a seed gives the same batches on the CPU and the GPU.
    """

    def __init__(self, batches, device):
        super().__init__(batches, None, verified=True)
        self.device = torch.device(device)
        self.images = torch.tensor(batches.images, device=self.device)  # a copy: the host arrays are read-only
        self.labels = torch.tensor(batches.labels, device=self.device)
        height, width = batches.images.shape[1:]
        self.resized = (height, width) != (batches.size, batches.size)
        self.rows = torch.tensor(resize_matrix(height, batches.size), device=self.device)
        self.cols = torch.tensor(resize_matrix(width, batches.size).T, device=self.device)

    def __iter__(self):
        size = self.batches.batch_size
        order = torch.from_numpy(self.batches.next_order()).to(self.device)
        for start in range(0, len(order), size):
            index = order[start : start + size]
            x = self.images[index].float() / 255
            if self.resized:  # as common.data.resize_images: rows @ image @ cols.T
                x = torch.matmul(torch.matmul(self.rows, x), self.cols)
            yield x.unsqueeze(1).contiguous(memory_format=torch.channels_last), self.labels[index]
