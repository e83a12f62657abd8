"""The training skeleton every backend shares: the epoch loop, its checks, the devices.

:func:`fit` owns the book's ``train_ch6`` bookkeeping once (schedule, history, progress, checkpoint
cadence, resume, NaN stop); each backend's ``train.py`` supplies a :class:`Trainer`: the step (forward,
loss, backward, update: the four lines a reader of the book looks for), evaluation, and small adapters
for the optimizer's and the random streams' state, under the same names in all three.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sized
from typing import Any

import numpy as np

from .arch import MAX_INT
from .checkpoint import (
    ALTERED,
    Snapshot,
    load_checkpoint,
    new_run_id,
    prepare_checkpoint,
    retire_run,
    save_checkpoint,
)
from .errors import ConfigError, InputError, TrainingDiverged, VGGError, WeightsError, arg, reason
from .history import Epoch, History
from .host import Progress
from .recipe import Recipe

__all__ = ["Epoch", "History"]  # re-exported: the records a run returns


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


def gpu_index(i) -> int:
    """``try_gpu``'s ``i``: a GPU's index, a whole number >= 0."""
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0:
        raise ConfigError(f"a GPU's index is a whole number >= 0, got {i!r}")
    return int(i)


def derived_seed(*words: int) -> int:
    """A seed in [0, 2**31) drawn from whole numbers (NumPy's ``SeedSequence``): the same words give the same seed,
    different words unrelated ones, and every framework's generator takes it (MXNet's only below 2**31)."""
    return int(np.random.SeedSequence(list(words)).generate_state(1)[0] % 2**31)


def check_loss(loss: float, epoch: int, step: int, lr: float) -> None:
    """Stop a run whose loss is no longer a finite number, saying where and what to try."""
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"the loss became {loss} at epoch {epoch}, step {step} (lr {lr:g}); training stopped. Lower the "
            f"learning rate (e.g. {arg('lr', float(f'{min(lr / 10, 0.05):g}'))}) or use {arg('batch_norm', True)}"
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


def check_state(
    saved: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...] | None], what: str, optional: tuple = ()
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

    def __init__(self, net, recipe: Recipe, device, compile: bool = False):
        """``compile``: run the step and evaluation through the framework's compiler where the backend has one
        that it does not use already (PyTorch's ``torch.compile``; tf.keras' XLA ``jit_compile``); a backend
        whose step is compiled anyway (MXNet's hybridized graph) takes it and changes nothing."""
        self.net, self.recipe, self.device, self.compile = net, recipe, device, bool(compile)
        self._fed: dict[int, tuple[Any, Any]] = {}

    def feed(self, data_iter):
        """``data_iter`` as the step takes it (the backend's ``on_device``), made once per iterable."""
        known = self._fed.get(id(data_iter))
        if known is None or known[0] is not data_iter:
            known = self._fed[id(data_iter)] = (data_iter, self.on_device(data_iter, self.device))
        return known[1]

    @property
    def compiles(self) -> int:
        """Graphs the framework's compiler built for this trainer (0 where ``compile`` counts none)."""
        return 0

    @property
    def compile_seconds(self) -> float:
        """The wall time of the calls that built :attr:`compiles`."""
        return 0.0

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
        return self.evaluate_accuracy(
            self.model, self.feed(data_iter), self.device, self.recipe.check_finite, compile=self.compile
        )

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
            history, first, resumed = _resume(trainer, resume_from, record, train_iter, verbose)
            run = resumed or run
        before, started = history.wall_seconds, time.perf_counter()  # a resumed run adds this part's time
        compiled_before = (history.compiles, history.compile_seconds)
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
            wall = before + time.perf_counter() - started
            done = Epoch(epoch, meter.mean_loss, meter.accuracy, test_acc, meter.n / seconds, seconds, wall)
            history.add(done)
            history.wall_seconds = wall
            history.compiles = compiled_before[0] + trainer.compiles
            history.compile_seconds = compiled_before[1] + trainer.compile_seconds
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


def _resume(
    trainer: Trainer, resume_from: str | os.PathLike, record: dict, train_iter, verbose: bool
) -> tuple[History, int, str | None]:
    """Set ``trainer`` to the checkpoint ``resume_from`` (weights, optimizer, random streams, the data stream's
    epoch); its history, the first epoch still to train and the run's identity (None: a checkpoint of before)."""
    recipe, name = trainer.recipe, trainer.backend
    ckpt = load_checkpoint(resume_from, name, trainer.net.config, record)
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
    history, first = ckpt.history, ckpt.epoch + 1
    if first <= recipe.num_epochs:
        history.resumed_on(str(trainer.device), first)
    batches = getattr(train_iter, "batches", None)
    if ckpt.state.get("data_epoch") is not None and batches is not None:
        batches.epoch = ckpt.state["data_epoch"]  # the stream continues where the run stopped
    if verbose:
        print(f"[{name}] resuming from {ckpt.path} after epoch {ckpt.epoch} of {recipe.num_epochs}", flush=True)
    return history, first, ckpt.meta.get("run")


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


def train_function(trainer_class: type[Trainer], get_device: Callable[[Any], Any]) -> Callable[..., History]:
    """A backend's public ``train``, the same signature in every backend, made from its :class:`Trainer`."""

    def train(
        net: Any,
        train_iter: Iterable,
        test_iter: Iterable,
        num_epochs: int,
        lr: float = 0.05,
        optimizer: str = "sgd",
        device: Any = None,
        seed: int = 0,
        verbose: bool = True,
        lr_schedule: str = "constant",
        checkpoint: str | os.PathLike | None = None,
        resume_from: str | os.PathLike | None = None,
        check_finite: bool = True,
        precision: str = "fp32",
        compile: bool = False,
    ) -> History:
        """Train ``net`` in place; return a :class:`common.training.History` (loss, accuracies, speed per epoch).

        The recipe's arguments are those of :class:`common.recipe.Recipe`; ``checkpoint``, ``resume_from``
        and ``verbose`` those of :func:`common.training.fit`; ``device``: ``"auto"`` (``None``: a GPU when the
        framework sees one), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or the framework's own device object. For bf16,
        see the backend's ``in_precision``. ``compile``: through the framework's compiler (see :class:`Trainer`);
        the history counts the graphs it built (``compiles``, ``compile_seconds``).
        """
        recipe = Recipe(num_epochs, lr, optimizer, lr_schedule, seed, precision, check_finite)
        trainer = trainer_class(net, recipe, get_device(device), compile=compile)
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
