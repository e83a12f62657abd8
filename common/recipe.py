"""The recipe of a run and its checks: optimizer, learning rate and its schedule, seed, precision.

Framework-free and below the data, the weights and the training loop, which all take a seed or a recipe.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from .arch import MAX_INT
from .errors import ConfigError

OPTIMIZERS = ("sgd", "adam")


DEFAULT_LR = {"sgd": 0.05, "adam": 0.001}  # the book's SGD recipe; Adam as in its older edition
# Adam, one definition for every backend: PyTorch's torch.optim.Adam (the book's framework), which adds epsilon
# to the bias-corrected root of the second moment, step t from 1:
#   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
#   w -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
# Keras' and Gluon's own Adam add epsilon to sqrt(v) before the correction (an epsilon sqrt(1 - beta2^t) times
# PyTorch's, 1/32 at step 1), and Keras' default epsilon is 1e-7: each backend computes this one (docs/conformance.md).
ADAM = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}


ALEXNET_SGD_LR = 0.01  # the book's AlexNet recipe (without batch norm, 0.05 diverges there)


# "constant" is the book's; "cosine" anneals the rate per epoch from lr towards 0 (half a cosine), which
# settles the final test accuracy where a constant rate leaves it jumping by +-0.02 between epochs.
LR_SCHEDULES = ("constant", "cosine")


# "bf16": forward and backward compute in bfloat16 where the framework's mixed precision says it is safe
# (convolutions, matrix products), weights and optimizer stay float32.
PRECISIONS = ("fp32", "bf16")


SEED_MAX = 2**32 - 1  # what NumPy, PyTorch, TensorFlow and MXNet all accept as a seed


def check_seed(seed) -> int:
    """A seed is a whole number in [0, 2**32 - 1], the range every framework's generator takes."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"seed must be a whole number from 0 to {SEED_MAX}, got {seed!r}")
    return int(seed)


# every framework's optimizer holds the rate as a float32 (MXNet refuses a subnormal one)
MIN_LR, MAX_LR = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)


def check_train_args(num_epochs, lr, optimizer, lr_schedule="constant") -> tuple[int, float, str]:
    """Validate the training recipe before any work starts."""
    whole = not isinstance(num_epochs, bool) and isinstance(num_epochs, numbers.Integral)
    if not whole or not 0 <= int(num_epochs) <= MAX_INT:
        raise ConfigError(f"num_epochs must be a whole number from 0 to {MAX_INT:,}, got {num_epochs!r}")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not MIN_LR <= float(lr) <= MAX_LR:
        raise ConfigError(
            f"lr must be a positive number from {MIN_LR:.3g} to {MAX_LR:.3g} (float32's smallest normal and "
            f"largest), got {lr!r} (the book uses 0.05 for SGD, 0.001 for Adam)"
        )
    num_epochs, lr = int(num_epochs), float(lr)
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    if lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"unknown lr_schedule {lr_schedule!r}; choose from {', '.join(LR_SCHEDULES)}")
    return num_epochs, float(lr), optimizer


def default_lr(optimizer: str, arch="vgg11") -> float:
    """The book's learning rate for ``optimizer`` on ``arch``: SGD 0.05 for VGG, 0.01 for AlexNet; Adam 0.001."""
    if optimizer == "sgd" and arch == "alexnet":
        return ALEXNET_SGD_LR
    return DEFAULT_LR[optimizer]


def epoch_lr(lr: float, lr_schedule: str, epoch: int, num_epochs: int) -> float:
    """The learning rate of epoch ``epoch`` (1-based): ``lr`` throughout, or cosine-annealed from ``lr``."""
    if lr_schedule == "constant":
        return lr
    return lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / num_epochs))


def check_precision(precision) -> str:
    """Validate the compute precision of a run (one of :data:`PRECISIONS`)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return precision


def _examples(data_iter) -> int | None:
    return getattr(getattr(data_iter, "batches", None), "num_examples", None)


@dataclass(frozen=True)
class Recipe:
    """How a run trains, validated when made: what a checkpoint records and a resumed run must repeat.

    ``lr_schedule``: ``"constant"`` (the book's) or ``"cosine"`` (annealed per epoch, see :meth:`lr_at`);
    ``precision``: ``"fp32"`` or ``"bf16"`` (bfloat16 compute, float32 weights and optimizer);
    ``check_finite``: refuse batches with NaN or infinite pixels, in training and evaluation alike.
    """

    num_epochs: int
    lr: float = 0.05
    optimizer: str = "sgd"
    lr_schedule: str = "constant"
    seed: int = 0
    precision: str = "fp32"
    check_finite: bool = True

    def __post_init__(self):
        _num_epochs, lr, _optimizer = check_train_args(self.num_epochs, self.lr, self.optimizer, self.lr_schedule)
        object.__setattr__(self, "lr", lr)
        object.__setattr__(self, "seed", check_seed(self.seed))
        check_precision(self.precision)

    def lr_at(self, epoch: int) -> float:
        """The learning rate of epoch ``epoch`` (1-based)."""
        return epoch_lr(self.lr, self.lr_schedule, epoch, self.num_epochs)

    def record(self, train_iter=None, test_iter=None) -> dict[str, Any]:
        """The JSON record a checkpoint keeps; the batch size and data sizes come from the iterators."""
        batches = getattr(train_iter, "batches", None)
        return {
            "lr": self.lr,
            "lr_schedule": self.lr_schedule,
            "optimizer": self.optimizer,
            "batch_size": getattr(batches, "batch_size", None),
            "seed": self.seed,
            "num_epochs": self.num_epochs,
            "train_examples": _examples(train_iter),
            "test_examples": _examples(test_iter),
            "precision": self.precision,
        }
