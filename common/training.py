"""The training skeleton every backend shares: the recipe, the epoch loop, the checks, the progress.

:func:`fit` owns the book's ``train_ch6`` bookkeeping once (schedule, history, progress, checkpoint
cadence, resume, NaN stop); each backend's ``train.py`` supplies a :class:`Trainer`: the step (forward,
loss, backward, update: the four lines a reader of the book looks for), evaluation, and small adapters
for the optimizer's and the random streams' state, under the same names in all three.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import numbers
import os
import sys
import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from .arch import MAX_INT
from .errors import ConfigError, InputError, TrainingDiverged, VGGError, WeightsError, arg
from .history import Epoch, History

__all__ = ["Epoch", "History"]  # re-exported: the records a run returns

OPTIMIZERS = ("sgd", "adam")
DEFAULT_LR = {"sgd": 0.05, "adam": 0.001}  # the book's SGD recipe; Adam as in its older edition
ALEXNET_SGD_LR = 0.01  # the book's AlexNet recipe (without batch norm, 0.05 diverges there)
# "constant" is the book's; "cosine" anneals the rate per epoch from lr towards 0 (half a cosine), which
# settles the final test accuracy where a constant rate leaves it jumping by +-0.02 between epochs.
LR_SCHEDULES = ("constant", "cosine")
# "bf16": forward and backward compute in bfloat16 where the framework's mixed precision says it is safe
# (convolutions, matrix products), weights and optimizer stay float32.
PRECISIONS = ("fp32", "bf16")


DEVICES = "auto, cpu, cuda or cuda:N"


def parse_device(device) -> tuple[str, int]:
    """A device asked for by name -> (kind, index): ``"auto"`` (a GPU when the framework sees one, else the
    CPU), ``"cpu"``, ``"cuda"`` (the first GPU) or ``"cuda:N"``; ``None`` is ``"auto"``."""
    text = "auto" if device is None else str(device).strip().lower()
    kind, _, index = text.partition(":")
    if kind == "gpu":
        kind = "cuda"
    if kind in ("auto", "cpu") and not index:
        return kind, 0
    if kind == "cuda" and (not index or index.isdigit()):
        return kind, int(index or 0)
    raise ConfigError(f"unknown device {device!r}; choose {DEVICES}")


def no_gpu(framework: str, index: int, count: int, install: str) -> ConfigError:
    """The error for ``cuda:index`` on a framework that sees ``count`` GPUs."""
    return ConfigError(
        f"device cuda:{index} was asked for, but {framework} sees {count} GPU(s) here; use device cpu (or auto), "
        f"or install {framework}'s GPU build ({install})"
    )


# glibc's malloc, where this process has it (Linux): the C library, and mallopt's parameters (malloc.h).
_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if sys.platform.startswith("linux") else None
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
KEEP_HEAP_TOP = 2**31 - 1  # bytes of free heap top kept rather than trimmed (mallopt takes an int)


def reuse_freed_memory() -> bool:
    """Keep the memory this process frees for its next allocations; True where glibc's malloc took the setting.

    glibc gives a freed block above its mmap threshold (at most 32 MiB) straight back to the kernel, so a CPU
    training step whose activations are larger maps them afresh every step and the kernel zeroes every page
    again: PyTorch's CPU tensors come from malloc one by one, and at ``vgg bench``'s defaults that was 150,000
    page faults and a quarter of the CPU time per step (TensorFlow's ops, which allocate on its own threads,
    90,000). After this, large blocks come from the heap, a free heap top under 2 GiB stays, and threads started
    from now on share the main heap (TensorFlow's, when this runs before it starts them: ``vgg train`` calls it
    first); the process keeps what its steps used until :func:`give_back_freed_memory`.
    ``VGG_REUSE_FREED_MEMORY=0`` leaves malloc as it is.
    """
    if os.environ.get("VGG_REUSE_FREED_MEMORY", "1") == "0" or _LIBC is None or not hasattr(_LIBC, "mallopt"):
        return False
    return all(
        _LIBC.mallopt(param, value) == 1
        for param, value in ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, KEEP_HEAP_TOP), (M_ARENA_MAX, 1))
    )


def give_back_freed_memory() -> None:
    """Return the free pages of this process's heap to the kernel (glibc's ``malloc_trim``; elsewhere nothing)."""
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


SEED_MAX = 2**32 - 1  # what NumPy, PyTorch, TensorFlow and MXNet all accept as a seed


def check_seed(seed) -> int:
    """A seed is a whole number in [0, 2**32 - 1], the range every framework's generator takes."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"seed must be a whole number from 0 to {SEED_MAX}, got {seed!r}")
    return int(seed)


def gpu_index(i) -> int:
    """``try_gpu``'s ``i``: a GPU's index, a whole number >= 0."""
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0:
        raise ConfigError(f"a GPU's index is a whole number >= 0, got {i!r}")
    return int(i)


def derived_seed(*words: int) -> int:
    """A seed in [0, 2**31) drawn from whole numbers (NumPy's ``SeedSequence``): the same words give the same seed,
    different words unrelated ones, and every framework's generator takes it (MXNet's only below 2**31)."""
    return int(np.random.SeedSequence(list(words)).generate_state(1)[0] % 2**31)


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


def check_loss(loss: float, epoch: int, step: int, lr: float) -> None:
    """Stop a run whose loss is no longer a finite number, saying where and what to try."""
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"the loss became {loss} at epoch {epoch}, step {step} (lr {lr:g}); training stopped. Lower the "
            f"learning rate (e.g. {arg('lr', float(f'{min(lr / 10, 0.05):g}'))}) or use {arg('batch_norm', True)}"
        )


def check_precision(precision) -> str:
    """Validate the compute precision of a run (one of :data:`PRECISIONS`)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return precision


def _expected_shape(config, layout: str) -> tuple[int, int, int]:
    c, s = config.in_channels, config.input_size
    return (c, s, s) if layout == "NCHW" else (s, s, c)


# How a batch of the other layout is turned into the one each framework's network takes: (label, expression).
TRANSPOSE = {
    "torch": ("PyTorch", "x.permute(0, 3, 1, 2)"),
    "tf": ("tf.keras", "tf.transpose(x, (0, 2, 3, 1))"),
    "mxnet": ("MXNet", "x.transpose((0, 3, 1, 2))"),
}


def _transposed(config, shape: tuple[int, ...], layout: str) -> bool:
    """Whether a rank-4 batch the network cannot take reads as one of the other layout (channels on the other side,
    square images the other way)."""
    other = "NHWC" if layout == "NCHW" else "NCHW"
    channels, spatial = (shape[1], shape[2:]) if other == "NCHW" else (shape[3], shape[1:3])
    mine = shape[1] if layout == "NCHW" else shape[3]
    return mine != config.in_channels and channels == config.in_channels and spatial[0] == spatial[1]


def _transpose_fix(layout: str, framework: str | None) -> str:
    """The advice for a batch of the other layout: what it looks like, what the network takes, how to turn it."""
    seen = "NHWC (channels last)" if layout == "NCHW" else "NCHW (channels first)"
    axes = (0, 3, 1, 2) if layout == "NCHW" else (0, 2, 3, 1)
    label, how = TRANSPOSE.get(framework or "", ("", f"the axes {axes}"))
    return f"this looks {seen}; the {label + ' ' if label else ''}network takes {layout}: transpose it with {how}"


def check_batch(
    config,
    x_shape,
    x_dtype: str,
    labels: np.ndarray | None = None,
    layout: str = "NCHW",
    all_finite: bool = True,
    where: str = "the batch",
    label_dtype: str | None = None,
    framework: str | None = None,
) -> None:
    """Refuse a batch the network built from ``config`` cannot take, with one message that says what to change.

    ``x_shape``/``x_dtype`` describe the images (``x_dtype`` a name such as ``"float32"``), ``labels`` are the
    class indices as a NumPy array (or None), ``layout`` is the framework's ("NCHW", or "NHWC" in tf.keras),
    ``all_finite`` whether every pixel is a finite number (the backend computes it, or passes True to skip),
    ``label_dtype`` the one label dtype the framework's loss takes, if it takes only one, ``framework`` the
    backend's name (``"torch"``, ``"tf"``, ``"mxnet"``), for the way to transpose a batch of the other layout.
    A batch wrong in shape and dtype is told both.
    """
    shape, want = tuple(int(n) for n in x_shape), _expected_shape(config, layout)
    hint = f"the network ({config.describe()}) takes {layout} batches of shape (N, {', '.join(map(str, want))})"
    dtype_fix = "" if x_dtype == "float32" else f"; it is also {x_dtype}: convert it to float32 (pixels in [0, 1])"
    if len(shape) != 4:
        fix = "add the batch axis (x[None])" if len(shape) == 3 else "reshape it"
        raise InputError(f"{where} has shape {shape} (rank {len(shape)}); {hint}: {fix}{dtype_fix}")
    if _transposed(config, shape, layout):
        raise InputError(
            f"{where} has shape {shape}: {_transpose_fix(layout, framework)} to get {(shape[0], *want)}{dtype_fix}"
        )
    channels, spatial = (shape[1], shape[2:]) if layout == "NCHW" else (shape[3], shape[1:3])
    if channels != config.in_channels:
        raise InputError(
            f"{where} has {channels} channel(s) (shape {shape}); {hint}: convert the images "
            f"or build the network with in_channels={channels}{dtype_fix}"
        )
    if spatial != (config.input_size,) * 2:
        raise InputError(
            f"{where} has {spatial[0]}x{spatial[1]} images (shape {shape}); {hint}: resize them to "
            f"{config.input_size}x{config.input_size} or build the network with input_size={spatial[0]}{dtype_fix}"
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


def verified(data_iter) -> bool:
    """True for the project's own stream over the verified Fashion-MNIST (:class:`common.data.DataIter` made by
    ``load_data_fashion_mnist``): its batches are checked once, on the first batch of each pass, since every
    batch has the same shape and dtype and its pixels come from checksummed uint8 files. Any other iterable
    is checked batch by batch."""
    return bool(getattr(data_iter, "verified", False))


def _data_epoch(train_iter) -> int | None:
    """Where the training stream stands (its next epoch), for a checkpoint; None for an iterable of another kind."""
    return getattr(getattr(train_iter, "batches", None), "epoch", None)


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
        num_epochs, lr, optimizer = check_train_args(self.num_epochs, self.lr, self.optimizer, self.lr_schedule)
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


def check_state(
    saved: dict[str, np.ndarray], expected: dict[str, tuple[int, ...] | None], what: str, optional: tuple = ()
) -> None:
    """Refuse a checkpoint's ``what`` (its optimizer or random-generator state) unless its arrays are exactly the
    ``expected`` names, each of real numbers and of the expected shape (None: any; the framework checks it where
    it is used); ``optional`` names may be absent. Each backend's Trainer calls it before it sets any of them."""
    missing = [name for name in expected if name not in saved and name not in optional]
    extra = [name for name in saved if name not in expected]
    wrong = [n for n, shape in expected.items() if n in saved and shape is not None and saved[n].shape != shape]
    odd = [n for n in expected if n in saved and saved[n].dtype.kind not in "biuf"]  # the frameworks cast the rest
    if missing or extra or wrong or odd:
        said = [f"{len(missing)} missing (first {missing[0]})"] if missing else []
        said += [f"{len(extra)} unknown (first {extra[0]})"] if extra else []
        said += [f"{wrong[0]} of shape {saved[wrong[0]].shape}, not {expected[wrong[0]]}"] if wrong else []
        said += [f"{odd[0]} of {saved[odd[0]].dtype}, not real numbers"] if odd else []
        raise WeightsError(f"its {what} is not this network's: {'; '.join(said)}")


def check_counter(value, most: int | None, what: str) -> int:
    """An optimizer's update counter from a checkpoint: a whole number from 0 to ``most``, the steps the run has
    taken (Adam divides by a function of it: a negative count fails in the framework, or turns the run to NaN)."""
    array = np.asarray(value)
    number = float(array) if array.shape == () and array.dtype.kind in "iuf" else math.nan
    if not (number.is_integer() and 0 <= number <= (MAX_INT if most is None else most)):
        bound = "" if most is None else f" (the run has taken {most} step(s))"
        raise WeightsError(f"its {what} is {value!r}, not a count of updates from 0 to the steps taken{bound}")
    return int(number)


class Trainer:
    """One framework's side of :func:`fit`. Each backend's ``train.py`` defines ``Trainer(net, recipe, device)``.

    A subclass sets :attr:`backend` and supplies the methods below that raise ``NotImplementedError``;
    :func:`fit` calls nothing else.
    """

    backend = ""
    # The backend's own functions behind the shared methods below; each subclass sets them (staticmethod):
    # its batch check ``(net, x, y, check_finite, where)``, evaluate_accuracy, export_weights, import_weights,
    # and on_device ``(data_iter, device)``: the iterable the step is best fed from on that device.
    batch_check: Callable
    evaluate_accuracy: Callable
    export_weights: Callable
    import_weights: Callable
    on_device: Callable
    # Steps between two reads of the step's sums on the host: 1 reads every step; a GPU backend queues many
    # steps between reads, so that the device never waits for the host (see :func:`fit`).
    read_every = 1
    # This process's place in a data-parallel run: rank 0 of 1 unless a backend's DistributedTrainer says else.
    rank, size = 0, 1
    # The steps a resumed run's checkpoint has taken (its epochs times the steps of one), set by fit() before
    # set_optimizer_state: no update counter of the optimizer may exceed it (None: unknown).
    steps_done: int | None = None

    def __init__(self, net, recipe: Recipe, device):
        self.net, self.recipe, self.device = net, recipe, device
        self._fed: dict[int, tuple[Any, Any]] = {}

    def feed(self, data_iter):
        """``data_iter`` as the step takes it (the backend's ``on_device``), made once per iterable."""
        known = self._fed.get(id(data_iter))
        if known is None or known[0] is not data_iter:
            known = self._fed[id(data_iter)] = (data_iter, self.on_device(data_iter, self.device))
        return known[1]

    @property
    def model(self):
        """The network whose weights the step changes: ``net`` (a backend that trains a twin says so)."""
        return self.net

    def check_batch(self, x, y, where: str) -> None:
        """Refuse a batch the network cannot take (:func:`check_batch`), before any step."""
        self.batch_check(self.net, x, y, self.recipe.check_finite, where)

    def start_epoch(self, epoch: int, lr: float) -> None:
        """Set the epoch's learning rate (and whatever else an epoch starts with)."""
        raise NotImplementedError

    def train_step(self, x, y):
        """One step of the recipe on one batch: its (summed loss, correct predictions), as numbers or as the
        framework's values still on the device (:meth:`to_host` reads them)."""
        raise NotImplementedError

    def to_host(self, sums: list) -> np.ndarray:
        """The (summed loss, correct) pairs of several steps as a (steps, 2) float array, in one host sync."""
        return np.asarray(sums, dtype=np.float64).reshape(len(sums), 2)

    def evaluate(self, data_iter) -> float:
        """Test accuracy in evaluation mode (the backend's ``evaluate_accuracy``)."""
        return self.evaluate_accuracy(self.model, self.feed(data_iter), self.device, self.recipe.check_finite)

    def weights(self) -> dict[str, np.ndarray]:
        return self.export_weights(self.model)

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.import_weights(self.model, weights)

    def optimizer_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The optimizer's state: named arrays and JSON scalars (update counters)."""
        raise NotImplementedError

    def set_optimizer_state(self, arrays: dict[str, np.ndarray], scalars: dict[str, Any]) -> None:
        raise NotImplementedError

    def rng_state(self) -> dict[str, np.ndarray]:
        """The random streams dropout draws from, where the framework lets them be saved."""
        raise NotImplementedError

    def set_rng_state(self, arrays: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Called once when the loop ends or stops (a backend that trains a twin copies its weights back)."""


def fit(
    trainer: Trainer,
    train_iter,
    test_iter,
    checkpoint: str | os.PathLike | None = None,
    resume_from: str | os.PathLike | None = None,
    verbose: bool = True,
    replaces: str | os.PathLike | None = None,
) -> History:
    """The book's ``train_ch6`` loop around ``trainer``: return the :class:`History` (one :class:`Epoch` each).

    ``checkpoint``: a folder (or ``.npz`` path) where a checkpoint is written atomically after every epoch;
    ``resume_from``: a checkpoint to continue from (same configuration and recipe; no batch is repeated or
    skipped). A loss that is no longer finite stops the run (:class:`TrainingDiverged`), naming the step.
    ``replaces``: a folder holding an earlier run that this one replaces; its other files go just before this
    run's first checkpoint takes the place of its checkpoint (:func:`common.checkpoint.retire_run`).
    """
    from .checkpoint import (
        ALTERED,
        Snapshot,
        load_checkpoint,
        new_run_id,
        prepare_checkpoint,
        retire_run,
        save_checkpoint,
    )
    from .weights import reason

    for what, data in (("train_iter", train_iter), ("test_iter", test_iter)):
        if not isinstance(data, Iterable):  # before an epoch is spent: the test data are read only at its end
            raise InputError(f"{what} must be an iterable of (x, y) batches, got {type(data).__name__}")
    recipe, name, net = trainer.recipe, trainer.backend, trainer.net
    record = recipe.record(train_iter, test_iter)
    # room for one checkpoint: the weights and up to two optimizer slots per weight (Adam), written beside
    # the previous one until the rename
    needed = 2 * 3 * sum(a.nbytes for a in trainer.weights().values()) if checkpoint is not None else 0
    path = None if checkpoint is None else prepare_checkpoint(checkpoint, needed)
    origin = getattr(getattr(train_iter, "batches", None), "origin", None)
    history, first = History(name, str(trainer.device), data=origin), 1
    run = new_run_id()
    try:
        if resume_from is not None:
            ckpt = load_checkpoint(resume_from, name, net.config, record)
            trainer.set_weights(ckpt.weights)
            if isinstance(train_iter, Sized):
                trainer.steps_done = ckpt.epoch * len(train_iter)
            try:
                trainer.set_optimizer_state(ckpt.optimizer, ckpt.state.get("optimizer", {}))
                trainer.set_rng_state(ckpt.rng)
            except WeightsError as e:  # check_state's refusal, and the backends' own
                raise WeightsError(f"{ckpt.path}: {e}; {ALTERED}") from None
            except VGGError:  # another of the project's (a worker that lost its peers) keeps its meaning
                raise
            except Exception as e:  # the framework's own error where an array's shape, type or name is not its own
                raise WeightsError(
                    f"{ckpt.path} holds optimizer or random-generator state this {name} run cannot take "
                    f"({reason(e)[:250]}); {ALTERED}"
                ) from None
            history, first, run = ckpt.history, ckpt.epoch + 1, ckpt.meta.get("run") or run
            if first <= recipe.num_epochs:
                history.resumed_on(str(trainer.device), first)
            batches = getattr(train_iter, "batches", None)
            if ckpt.state.get("data_epoch") is not None and batches is not None:
                batches.epoch = ckpt.state["data_epoch"]  # the stream continues where the run stopped
            if verbose:
                print(f"[{name}] resuming from {ckpt.path} after epoch {ckpt.epoch} of {recipe.num_epochs}", flush=True)
        before, started = history.wall_seconds, time.perf_counter()  # a resumed run adds this part's time
        for epoch in range(first, recipe.num_epochs + 1):
            rate = recipe.lr_at(epoch)
            trainer.start_epoch(epoch, rate)
            meter = Meter()
            steps = len(train_iter) if isinstance(train_iter, Sized) else None  # a generator has no length
            bar = Progress(steps, f"[{name}] epoch {epoch}", enabled=None if verbose else False)
            pending: list[tuple[int, int, Any]] = []  # steps whose sums the host has not read yet
            for step, batch in enumerate(trainer.feed(train_iter), start=1):
                x, y = pair(batch, step, epoch)
                if step == 1 or not verified(train_iter):
                    trainer.check_batch(x, y, f"training batch {step} of epoch {epoch}")
                pending.append((step, len(y), trainer.train_step(x, y)))
                if len(pending) >= trainer.read_every:
                    _settle(trainer, pending, meter, bar, epoch, rate)
            _settle(trainer, pending, meter, bar, epoch, rate)
            bar.close()
            if meter.n == 0:
                raise InputError(f"the training data gave no batches in epoch {epoch}; {NO_BATCHES}")
            seconds = meter.seconds
            test_acc = trainer.evaluate(test_iter)
            done = Epoch(epoch, meter.mean_loss, meter.accuracy, test_acc, meter.n / seconds, seconds)
            history.add(done)
            history.wall_seconds = before + time.perf_counter() - started
            if path is not None:
                arrays, scalars = trainer.optimizer_state()
                state = {"data_epoch": _data_epoch(train_iter), "optimizer": scalars}
                snapshot = Snapshot(
                    name, net.config, record, epoch, history, trainer.weights(), arrays, trainer.rng_state(), state, run
                )
                if replaces is not None and resume_from is None and epoch == first:
                    retire_run(replaces)
                save_checkpoint(path, snapshot)
            if verbose:  # after the checkpoint: an epoch's line means the epoch is saved
                print(f"[{name}] {done.line()}", flush=True)
    finally:
        trainer.finish()
    return history


def _settle(trainer: Trainer, pending: list, meter: Meter, bar: Progress, epoch: int, rate: float) -> None:
    """Read the pending steps' sums in one host sync, stop at the first loss that is not finite (naming its
    step), count the rest."""
    if not pending:
        return
    sums = trainer.to_host([value for _, _, value in pending])
    for (step, n, _), (loss_sum, correct) in zip(pending, sums, strict=True):
        check_loss(float(loss_sum), epoch, step, rate)
        meter.add(float(loss_sum), float(correct), n)
    bar.update(len(pending), examples=sum(n for _, n, _ in pending), loss=meter.mean_loss)
    pending.clear()


def train_function(trainer_class: type[Trainer], get_device):
    """A backend's public ``train``, the same signature in every backend, made from its :class:`Trainer`."""

    def train(
        net,
        train_iter,
        test_iter,
        num_epochs,
        lr=0.05,
        optimizer="sgd",
        device=None,
        seed=0,
        verbose=True,
        lr_schedule="constant",
        checkpoint=None,
        resume_from=None,
        check_finite=True,
        precision="fp32",
    ):
        """Train ``net`` in place; return a :class:`common.training.History` (loss, accuracies, speed per epoch).

        The recipe's arguments are those of :class:`common.training.Recipe`; ``checkpoint``, ``resume_from``
        and ``verbose`` those of :func:`common.training.fit`; ``device``: ``"auto"`` (``None``: a GPU when the
        framework sees one), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or the framework's own device object. For bf16,
        see the backend's ``in_precision``.
        """
        recipe = Recipe(num_epochs, lr, optimizer, lr_schedule, seed, precision, check_finite)
        trainer = trainer_class(net, recipe, get_device(device))
        return fit(trainer, train_iter, test_iter, checkpoint, resume_from, verbose)

    return train


def pair(batch, step: int, epoch: int | None = None) -> tuple[Any, Any]:
    """Batch ``step`` (of training ``epoch``; of the evaluation where None) as its (images, labels), or an
    InputError that says a batch is such a pair (the message is made only then: this runs at every step)."""
    try:
        x, y = batch
    except (TypeError, ValueError):
        where = f"evaluation batch {step}" if epoch is None else f"training batch {step} of epoch {epoch}"
        raise InputError(
            f"{where} is a {type(batch).__name__} that is not an (images, labels) pair; give (x, y) batches"
        ) from None
    return x, y


NO_BATCHES = "give at least one (x, y) batch, each pass (a generator is used up after one: give a list or a loader)"


def accuracy(data_iter, check, correct, read=float) -> float:
    """Accuracy over ``data_iter``: ``check(x, y, where)`` refuses a bad batch, ``correct(x, y)`` counts hits.

    The shared loop of every backend's ``evaluate_accuracy``; ``correct`` may return a device tensor that
    supports ``+`` (summed on the device, turned into a number by ``read`` once at the end) or a number.
    """
    total, n, trusted = 0.0, 0, verified(data_iter)
    for i, batch in enumerate(data_iter, start=1):
        x, y = pair(batch, i)
        if i == 1 or not trusted:
            check(x, y, f"evaluation batch {i}")
        total = total + correct(x, y)
        n += len(y)
    if n == 0:
        raise InputError(f"the evaluation data gave no batches; {NO_BATCHES}")
    return read(total) / n


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


# Seconds between two progress lines when stderr is not a terminal (a log file, a pipe, CI); VGG_PROGRESS_EVERY
# sets it (0: every step).
LOG_EVERY = 30.0


def env_seconds(name: str, default: float, zero: bool = False) -> float:
    """Seconds set by the environment variable ``name``, ``default`` where it is unset; a ConfigError where it
    is set to anything but a number > 0 (``zero``: >= 0)."""
    text = os.environ.get(name, "")
    if not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and (value > 0 or zero and value == 0)):
        raise ConfigError(f"{name}={text!r}: give a number of seconds {'>=' if zero else '>'} 0, or unset it")
    return value


class Progress:
    """Progress of a loop on stderr: a tqdm bar on a terminal; elsewhere one line every :data:`LOG_EVERY` s.

    ``update(n, examples=k, **info)`` counts ``n`` steps of ``total`` (and ``k`` examples), ``info`` the
    figures to show (``loss=0.53``). ``enabled=False`` shows nothing; ``None`` decides by the terminal.
    """

    def __init__(self, total: int | None, label: str, enabled: bool | None = None, every: float | None = None):
        self.total, self.label = None if total is None else max(total, 1), label  # None: a loop of unknown length
        self.enabled = enabled is not False
        self.tty = sys.stderr.isatty()
        self.every = env_seconds("VGG_PROGRESS_EVERY", LOG_EVERY, zero=True) if every is None else every
        self.done = self.examples = 0
        self.start = self._logged = time.perf_counter()
        self.bar = (
            tqdm(total=self.total, desc=label, file=sys.stderr, leave=False, dynamic_ncols=True)
            if self.enabled and self.tty
            else None
        )

    def update(self, n: int = 1, examples: int = 0, **info) -> None:
        self.done += n
        self.examples += examples
        figures = {k: f"{v:.3f}" if isinstance(v, float) else str(v) for k, v in info.items()}
        if self.bar is not None:
            self.bar.set_postfix(figures, refresh=False)
            self.bar.update(n)
        elif (
            self.enabled
            and time.perf_counter() - self._logged >= self.every
            and (self.total is None or self.done < self.total)
        ):
            self._logged = now = time.perf_counter()
            rate = self.done / max(now - self.start, 1e-9)
            speed = f", {self.examples / (now - self.start):.1f} examples/s" if self.examples else ""
            extra = "".join(f", {k} {v}" for k, v in figures.items())
            done = f"{self.done} steps" if self.total is None else f"{self.done}/{self.total}"
            eta = "" if self.total is None else f", eta {(self.total - self.done) / rate:.0f} s"
            print(f"{self.label}: {done}{speed}{extra}{eta}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
