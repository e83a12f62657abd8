"""The real Fashion-MNIST as MXNet NDArrays: ``common.data`` batches, NCHW float32 and float32 labels."""

from __future__ import annotations

import os
from collections.abc import Iterable

import mxnet as mx
import numpy as np

from common.data import DataIter, fashion_mnist_batches

from .model import Device


def _tensors(x, y):
    """Labels are float32 class indices: what ``SoftmaxCrossEntropyLoss`` picks with and ``argmax`` returns."""
    return mx.nd.array(x, dtype=np.float32), mx.nd.array(y, dtype=np.float32)


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
    """``data_iter`` as a step on ``device`` is best fed: as it is here (each step moves its host batch to the
    device; the device-resident stream is PyTorch's, the one framework whose GPU build this project measures)."""
    return data_iter
