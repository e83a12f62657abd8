"""What every backend's training loop shares: the recipe's arguments, the history, the progress bar."""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field

from .errors import ConfigError, TrainingDiverged

OPTIMIZERS = ("sgd", "adam")
DEFAULT_LR = {"sgd": 0.05, "adam": 0.001}   # the book's SGD recipe; Adam as in its older edition


def check_train_args(num_epochs, lr, optimizer) -> tuple[int, float, str]:
    """Validate the training recipe before any work starts."""
    if isinstance(num_epochs, bool) or not isinstance(num_epochs, int) or num_epochs < 0:
        raise ConfigError(f"num_epochs must be a whole number >= 0, got {num_epochs!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"lr must be a positive number, got {lr!r} (the book uses 0.05 for SGD, 0.001 for Adam)")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    return num_epochs, float(lr), optimizer


def check_loss(loss: float, epoch: int, step: int, lr: float) -> None:
    """Stop a run whose loss is no longer a finite number, saying where and what to try."""
    if not math.isfinite(loss):
        raise TrainingDiverged(f"the loss became {loss} at epoch {epoch}, step {step} (lr {lr:g}); training "
                               f"stopped. Lower the learning rate (e.g. --lr {lr / 10:g}) or use --batch-norm")


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
        return (f"epoch {self.epoch}, loss {self.loss:.3f}, train acc {self.train_acc:.3f}, "
                f"test acc {self.test_acc:.3f}, {self.examples_per_sec:.1f} examples/sec")


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
    def from_dict(cls, d: dict) -> "History":
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
        sys.stderr.write(f"\r{self.label} [{bar:<{self.width}}] {self.done}/{self.total} {extra} "
                         f"eta {eta:4.0f}s ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * (len(self.label) + self.width + 60) + "\r")
            sys.stderr.flush()
