"""The real Fashion-MNIST as JAX arrays: ``common.data`` batches, NHWC float32 (Flax's layout) and int32 labels."""

from __future__ import annotations

import os
from collections.abc import Iterable

import jax.numpy as jnp

from common.data import DataIter, fashion_mnist_batches

from .model import Device


def _tensors(x, y):
    return jnp.asarray(x), jnp.asarray(y)  # JAX keeps 32-bit integers unless x64 is enabled: int64 labels -> int32


def load_data_fashion_mnist(
    batch_size: int,
    resize: int | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> tuple[DataIter, DataIter]:
    """(train_iter, test_iter) over the real Fashion-MNIST, pixels in [0, 1], optionally resized (bilinear)."""
    train, test = fashion_mnist_batches(batch_size, resize, seed, "NHWC", data_dir, train_limit, test_limit)
    return DataIter(train, _tensors, verified=True), DataIter(test, _tensors, verified=True)


def on_device(data_iter: Iterable, device: Device) -> Iterable:
    """``data_iter`` as a step on ``device`` is best fed: as it is here (``jnp.asarray`` puts each host batch on
    JAX's default device; the device-resident stream is PyTorch's, the one framework whose GPU build this
    project measures)."""
    return data_iter
