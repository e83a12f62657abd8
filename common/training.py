"""What every backend's training loop shares: the recipe's arguments, the history, the progress bar."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import ConfigError, InputError, TrainingDiverged

OPTIMIZERS = ("sgd", "adam")
DEFAULT_LR = {"sgd": 0.05, "adam": 0.001}  # the book's SGD recipe; Adam as in its older edition
ALEXNET_SGD_LR = 0.01  # the book's AlexNet recipe (without batch norm, 0.05 diverges there)
# "constant" is the book's; "cosine" anneals the rate per epoch from lr towards 0 (half a cosine), which
# settles the final test accuracy where a constant rate leaves it jumping by +-0.02 between epochs.
LR_SCHEDULES = ("constant", "cosine")
# "bf16": forward and backward compute in bfloat16 where the framework's mixed precision says it is safe
# (convolutions, matrix products), weights and optimizer stay float32.
PRECISIONS = ("fp32", "bf16")


def check_train_args(num_epochs, lr, optimizer, lr_schedule="constant") -> tuple[int, float, str]:
    """Validate the training recipe before any work starts."""
    if isinstance(num_epochs, bool) or not isinstance(num_epochs, int) or num_epochs < 0:
        raise ConfigError(f"num_epochs must be a whole number >= 0, got {num_epochs!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"lr must be a positive number, got {lr!r} (the book uses 0.05 for SGD, 0.001 for Adam)")
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


def check_loss(loss: float, epoch: int, step: int, lr: float) -> None:
    """Stop a run whose loss is no longer a finite number, saying where and what to try."""
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"the loss became {loss} at epoch {epoch}, step {step} (lr {lr:g}); training "
            f"stopped. Lower the learning rate (e.g. --lr {lr / 10:g}) or use --batch-norm"
        )


def check_precision(precision) -> str:
    """Validate the compute precision of a run (one of :data:`PRECISIONS`)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return precision


def _expected_shape(config, layout: str) -> tuple[int, int, int]:
    c, s = config.in_channels, config.input_size
    return (c, s, s) if layout == "NCHW" else (s, s, c)


def check_batch(
    config,
    x_shape,
    x_dtype: str,
    labels: np.ndarray | None = None,
    layout: str = "NCHW",
    all_finite: bool = True,
    where: str = "the batch",
    label_dtype: str | None = None,
) -> None:
    """Refuse a batch the network built from ``config`` cannot take, with one message that says what to change.

    ``x_shape``/``x_dtype`` describe the images (``x_dtype`` a name such as ``"float32"``), ``labels`` are the
    class indices as a NumPy array (or None), ``layout`` is the framework's ("NCHW", or "NHWC" in tf.keras),
    ``all_finite`` whether every pixel is a finite number (the backend computes it, or passes True to skip),
    ``label_dtype`` the one label dtype the framework's loss takes, if it takes only one.
    """
    shape, want = tuple(int(n) for n in x_shape), _expected_shape(config, layout)
    hint = f"the network ({config.describe()}) takes {layout} batches of shape (N, {', '.join(map(str, want))})"
    if len(shape) != 4:
        fix = "add the batch axis (x[None])" if len(shape) == 3 else "reshape it"
        raise InputError(f"{where} has shape {shape} (rank {len(shape)}); {hint}: {fix}")
    channels, spatial = (shape[1], shape[2:]) if layout == "NCHW" else (shape[3], shape[1:3])
    if channels != config.in_channels:
        raise InputError(
            f"{where} has {channels} channel(s) (shape {shape}); {hint}: convert the images "
            f"or build the network with in_channels={channels}"
        )
    if spatial != (config.input_size,) * 2:
        raise InputError(
            f"{where} has {spatial[0]}x{spatial[1]} images (shape {shape}); {hint}: resize them to "
            f"{config.input_size}x{config.input_size} or build the network with input_size={spatial[0]}"
        )
    if shape[0] == 0:
        raise InputError(f"{where} is empty (shape {shape}); give at least one example")
    if x_dtype != "float32":
        raise InputError(f"{where} has dtype {x_dtype}; {hint} in float32: convert it (pixels scaled to [0, 1])")
    if not all_finite:
        raise InputError(
            f"{where} holds NaN or infinite pixel values; clean the data (or pass "
            f"check_finite=False to skip this check)"
        )
    if labels is not None:
        check_labels(config, labels, shape[0], where, label_dtype)


def check_labels(
    config, labels: np.ndarray, batch: int, where: str = "the batch", label_dtype: str | None = None
) -> None:
    """Labels must be one whole class index in [0, num_classes) per example (of ``label_dtype`` if given)."""
    labels = np.asarray(labels)
    if labels.shape != (batch,):
        raise InputError(
            f"{where} has labels of shape {labels.shape} for {batch} images; give one class index "
            f"per image, shape ({batch},)"
        )
    if label_dtype is not None and labels.dtype.name != label_dtype:
        raise InputError(f"{where} has labels of dtype {labels.dtype}; give {label_dtype} class indices")
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise InputError(f"{where} has labels of dtype {labels.dtype}; give integer class indices")
    if np.issubdtype(labels.dtype, np.floating) and not np.all(np.isfinite(labels) & (labels == np.round(labels))):
        raise InputError(f"{where} has labels that are not whole numbers; give integer class indices")
    low, high = labels.min(), labels.max()
    if low < 0 or high >= config.num_classes:
        bad = low if low < 0 else high
        raise InputError(
            f"{where} has label {bad:g}, outside [0, {config.num_classes}) for a network with "
            f"{config.num_classes} classes; fix the labels or build it with num_classes="
            f"{int(high) + 1 if low >= 0 else config.num_classes}"
        )


def resume_point(history: History | None, data_epoch: int | None, train_iter) -> int:
    """The first epoch to train (1-based); a resumed run also puts the training stream at its next epoch."""
    if history is None:
        return 1
    batches = getattr(train_iter, "batches", None)
    if data_epoch is not None and batches is not None:
        batches.epoch = data_epoch
    return len(history.epochs) + 1


def data_epoch(train_iter) -> int | None:
    """Where the training stream stands (its next epoch), for a checkpoint; None for an iterable of another kind."""
    return getattr(getattr(train_iter, "batches", None), "epoch", None)


@dataclass
class Epoch:
    epoch: int
    loss: float
    train_acc: float
    test_acc: float
    examples_per_sec: float
    seconds: float

    def line(self) -> str:
        """The book's per-epoch line."""
        return (
            f"epoch {self.epoch}, loss {self.loss:.3f}, train acc {self.train_acc:.3f}, "
            f"test acc {self.test_acc:.3f}, {self.examples_per_sec:.1f} examples/sec"
        )


@dataclass
class History:
    backend: str
    device: str
    epochs: list[Epoch] = field(default_factory=list)

    def add(self, epoch: Epoch, verbose: bool = True) -> None:
        self.epochs.append(epoch)
        if verbose:
            print(f"[{self.backend}] {epoch.line()}", flush=True)

    def to_dict(self) -> dict:
        return {"backend": self.backend, "device": self.device, "epochs": [asdict(e) for e in self.epochs]}

    @classmethod
    def from_dict(cls, d: dict) -> History:
        return cls(d["backend"], d["device"], [Epoch(**e) for e in d["epochs"]])

    @property
    def last(self) -> Epoch | None:
        return self.epochs[-1] if self.epochs else None


class Meter:
    """Running sums over one epoch: loss, correct predictions, examples, time."""

    def __init__(self):
        self.loss = self.correct = 0.0
        self.n = 0
        self.start = time.perf_counter()

    def add(self, loss_sum: float, correct: float, n: int) -> None:
        self.loss += loss_sum
        self.correct += correct
        self.n += n

    @property
    def mean_loss(self) -> float:
        return self.loss / max(self.n, 1)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.n, 1)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int, label: str, enabled: bool | None = None, width: int = 28):
        self.total, self.label, self.width = max(total, 1), label, width
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.done = 0
        self.start = time.perf_counter()
        self._drawn = 0.0

    def update(self, n: int = 1, **info) -> None:
        self.done += n
        now = time.perf_counter()
        if not self.enabled or (now - self._drawn < 0.2 and self.done < self.total):
            return
        self._drawn = now
        frac = min(self.done / self.total, 1.0)
        bar = "#" * int(frac * self.width)
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else 0
        extra = " ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
        sys.stderr.write(f"\r{self.label} [{bar:<{self.width}}] {self.done}/{self.total} {extra} eta {eta:4.0f}s ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * (len(self.label) + self.width + 60) + "\r")
            sys.stderr.flush()
