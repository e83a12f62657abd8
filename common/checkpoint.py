"""Training checkpoints: what a run needs to continue where it stopped, in one safe ``.npz`` file.

A checkpoint holds the canonical weights (``weights/<name>``), the optimizer's state as named arrays
(``optimizer/<key>``), the state of the random streams the training loop draws from (``rng/<key>``) and a
JSON record ``__meta__``: format and version, backend, configuration, recipe (lr, lr_schedule, optimizer,
batch_size, seed, num_epochs, train and test examples, precision), the number of epochs completed, the
history so far.

Every backend's ``train(checkpoint=...)`` writes one at the end of each epoch, atomically (a temporary file,
then a rename), so a run killed at any moment leaves the last complete epoch readable. It is read with
``allow_pickle=False`` (loading can never run code), and its metadata is checked against the run that
resumes it before any array is read.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import stat
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from .arch import MAX_INT, NetConfig, positive_int
from .backends import BACKENDS
from .errors import ConfigError, WeightsError, arg
from .files import atomic_write, check_name
from .history import History
from .recipe import Recipe
from .spec import spec
from .weights import (
    META_KEY,
    META_LIMIT,
    UNREADABLE,
    check_finite_weights,
    check_weights,
    extra_arrays,
    meta_config,
    npz_array,
    write_npz,
)

FORMAT = "vgg-checkpoint"
VERSION = 1
FILE_NAME = "checkpoint.npz"
# What a `vgg train --out DIR` leaves in DIR: any of them there means a run is saved there. history.json, the
# run's record, is written last and names the run (its id, also in the checkpoint) and each file's SHA-256.
RECORD = "history.json"
RUN_FILES = (FILE_NAME, "weights.npz", RECORD, "model.pt", "model.weights.h5", "model.params")
GROUPS = ("weights", "optimizer", "rng")
RECIPE_KEYS = (
    "lr",
    "lr_schedule",
    "optimizer",
    "batch_size",
    "seed",
    "train_examples",
    "test_examples",
    "precision",
)
# num_epochs is not among them: a resumed run may extend a run (train more epochs than it was started
# with), never shorten it below the epochs already trained. A cosine schedule then anneals the remaining
# epochs over the new total (common.recipe.Recipe.lr_at).
# What a recipe written before a key existed meant by it.
RECIPE_FORMER = {"precision": "fp32"}
# How a refusal of a checkpoint whose contents no run writes ends.
ALTERED = "it was altered or made by another program: resume from an intact checkpoint or start a new run"


def checkpoint_file(path: str | os.PathLike) -> Path:
    """The checkpoint file meant by ``path``: ``path`` itself if it names a ``.npz``, else ``path/checkpoint.npz``."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise ConfigError(f"a checkpoint is named by a folder or an .npz path, got {path!r}")
    path = Path(path)
    return path if path.suffix.lower() == ".npz" else path / FILE_NAME


def prepare_folder(folder: str | os.PathLike, needed_bytes: int = 0) -> Path:
    """A folder a run will write into, created now and checked: a bad path fails before training starts.

    Refuses a path that is a file (or a device), a folder that cannot be created or written to, and one
    whose file system has less free space than ``needed_bytes``.
    """
    if not str(folder).strip():
        raise ConfigError("an empty folder name was given; name the folder to write in")
    folder = check_name(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file, not a folder; name a folder to write in")
    dangling = next((p for p in (folder, *folder.parents) if p.is_symlink() and not p.exists()), None)
    if dangling is not None:
        raise ConfigError(
            f"{dangling} is a symbolic link that leads nowhere (its target is missing, or it loops); remove it or "
            f"name another folder"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ConfigError(f"cannot write in {folder} ({e.strerror}); choose a folder you can write to") from None
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise ConfigError(
            f"{folder} has {free / 2**20:.0f} MiB free but a checkpoint needs about {needed_bytes / 2**20:.0f} MiB; "
            f"free some space or choose another folder"
        )
    return folder


def prepare_checkpoint(path: str | os.PathLike, needed_bytes: int = 0) -> Path:
    """The checkpoint file a run will write, its folder created and checked now (:func:`prepare_folder`)."""
    file = checkpoint_file(path)
    prepare_folder(file.parent, needed_bytes)
    if file.is_dir():
        raise ConfigError(f"{file} is a folder; give the checkpoint another name")
    if file.exists():  # a checkpoint is replaced by the next one; any other file there is the user's
        try:
            read_checkpoint_meta(file)
        except WeightsError as e:
            raise ConfigError(f"{file} is there and is not a checkpoint ({e}); give checkpoint another path") from None
    return file


class FolderLock:
    """An exclusive lock on a run's folder for as long as the run lives (``with FolderLock(folder):``).

    A second run on the same folder is refused at once. The lock is the kernel's (``flock``) on a file in
    the folder, so a run that is killed leaves nothing stuck: its lock goes with its process. A command that
    runs another in a folder it has locked (``vgg compare`` each backend's ``vgg train``) hands the lock down:
    :meth:`pass_to` gives the child the open lock, which it finds in :data:`HELD` and keeps.
    """

    NAME = ".vgg.lock"
    HELD = "VGG_HELD_LOCK"  # the descriptor of a lock a parent process handed down

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.file: TextIO | None = None

    def pass_to(self, env: dict) -> tuple[int, ...]:
        """Hand this lock to a child process: sets ``env`` and returns the descriptors for ``pass_fds``."""
        if self.file is None:
            return ()
        env[self.HELD] = str(self.file.fileno())
        return (self.file.fileno(),)

    def _inherited(self, path: Path) -> bool:
        """Whether this process was handed the lock on ``path`` by the process that started it."""
        fd = os.environ.get(self.HELD, "")
        if not fd.isdigit():
            return False
        try:
            held, here = os.fstat(int(fd)), os.stat(path, follow_symlinks=False)
        except OSError:
            return False
        return (held.st_dev, held.st_ino) == (here.st_dev, here.st_ino)

    def __enter__(self) -> FolderLock:
        path = self.folder / self.NAME
        if self._inherited(path):
            return self
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
        try:  # held open for the run's lifetime; never through a link (its target would be written)
            fd = os.open(path, flags, 0o666)
        except OSError as e:
            what = "a symbolic link" if path.is_symlink() else f"a file that cannot be opened ({e.strerror})"
            raise ConfigError(
                f"{path} is {what}, where the run keeps its lock: remove it, or choose another folder"
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a named pipe or a device: no lock, and never written
            os.close(fd)
            raise ConfigError(
                f"{path} is not a regular file (a named pipe or a device), where the run keeps its lock: remove "
                f"it, or choose another folder"
            )
        file = os.fdopen(fd, "a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            file.close()
            raise ConfigError(
                f"{self.folder} is in use by another run ({holder}); wait for it to finish or choose another folder"
            ) from None
        file.seek(0)
        file.truncate()
        file.write(f"pid {os.getpid()}")
        file.flush()
        self.file = file
        return self

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.file.close()


@contextlib.contextmanager
def made_folder(folder: str | os.PathLike):
    """Around a command that creates ``folder`` (and the folders above it): a command refused or stopped before
    it wrote anything there takes them away again, so a refusal leaves nothing behind (its lock file aside,
    an empty folder it made is removed)."""
    folder = check_name(folder)
    made = []
    for parent in (folder, *folder.parents):
        if parent.exists() or parent.is_symlink() or str(parent) in ("", "."):
            break
        made.append(parent)
    try:
        yield
    except BaseException:
        for path in made:
            try:
                if set(os.listdir(path)) <= {FolderLock.NAME}:
                    (path / FolderLock.NAME).unlink(missing_ok=True)
                path.rmdir()  # only an empty folder goes
            except OSError:
                break
        raise


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files a run killed while writing left in its folder (``.checkpoint.npz.XXXX.tmp.npz``,
    see :func:`common.weights.atomic_write`); called by the next run there, which holds the folder's lock, so no
    run is writing them. The files removed."""
    folder = Path(folder)
    stale = [p for name in RUN_FILES for p in folder.glob(f".{name}.*.tmp*") if p.is_file() and not p.is_symlink()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def new_run_id() -> str:
    """A run's identity, written in its checkpoint and its record: files of two runs never pass for one."""
    return uuid.uuid4().hex


def retire_run(folder: str | os.PathLike) -> None:
    """Remove what an earlier run left in ``folder`` besides its checkpoint (its record first), just before a run
    that replaces it (``--overwrite``) writes its own first checkpoint there: the earlier run stays whole until
    then, and the folder never holds the new checkpoint beside the earlier run's weights, model or record."""
    folder = Path(folder)
    for name in (RECORD, *(n for n in RUN_FILES if n not in (RECORD, FILE_NAME))):
        path = folder / name
        if path.is_file() or path.is_symlink():
            path.unlink()


def file_digest(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_run_file(path: str | os.PathLike) -> None:
    """Refuse a file of a run's folder that is not of the run recorded there (a folder holding parts of two runs).

    A run's record (``history.json``) names the run and the SHA-256 of each file it wrote; its checkpoint names the
    run too. A record written before runs named their files checks nothing.
    """
    path = Path(path)
    record, ckpt = path.parent / RECORD, path.parent / FILE_NAME
    if path.name not in RUN_FILES or path.name == RECORD or not path.is_file() or not record.is_file():
        return
    try:
        saved = json.loads(record.read_text())
    except (OSError, ValueError, RecursionError):
        return
    files, run = (saved.get("files"), saved.get("run")) if isinstance(saved, dict) else (None, None)
    if not isinstance(files, dict):
        return
    fix = "write the run's files again with vgg train --resume on that folder, or train again with --overwrite"
    if path.name != FILE_NAME and files.get(path.name) != file_digest(path):
        raise WeightsError(
            f"{path} is not the file the run recorded in {record} wrote: it was changed since, or the folder holds "
            f"parts of two runs; {fix}"
        )
    if ckpt.is_file() and read_checkpoint_meta(ckpt).get("run") != run:
        raise WeightsError(f"{ckpt} is of another run than {record}; the folder holds parts of two runs: {fix}")


@dataclass
class Checkpoint:
    """A checkpoint read back: its metadata and its three groups of named arrays."""

    path: Path
    meta: dict
    weights: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    rng: dict[str, np.ndarray]

    @property
    def epoch(self) -> int:
        """Epochs completed when it was written."""
        return self.meta["epoch"]

    @property
    def history(self) -> History:
        return History.from_dict(self.meta["history"])

    @property
    def state(self) -> dict:
        """Backend-specific scalars saved beside the arrays (counters, the data stream's epoch)."""
        return self.meta["state"]


@dataclass
class Snapshot:
    """Everything a run needs to continue after ``epoch``: what :func:`save_checkpoint` writes."""

    backend: str
    config: NetConfig
    recipe: dict  # common.recipe.Recipe.record()
    epoch: int
    history: History
    weights: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)
    rng: dict[str, np.ndarray] = field(default_factory=dict)
    state: dict = field(default_factory=dict)  # JSON scalars: the data stream's epoch, optimizer counters
    run: str | None = None  # the run's identity (new_run_id)


def save_checkpoint(path: str | os.PathLike, snapshot: Snapshot) -> Path:
    """Write a checkpoint atomically: the previous one stays readable until the new one is complete."""
    s = snapshot
    weights = check_weights(s.config, s.weights, copy=False)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "backend": s.backend,
        "config": s.config.to_dict(),
        "recipe": s.recipe,
        "epoch": s.epoch,
        "history": s.history.to_dict(),
        "state": s.state,
        "run": s.run,
    }
    arrays = {META_KEY: np.array(json.dumps(meta))}
    for group, named in zip(GROUPS, (weights, s.optimizer, s.rng), strict=True):
        arrays.update({f"{group}/{name}": np.asarray(a) for name, a in named.items()})
    return write_npz(checkpoint_file(path), arrays)


def _damaged(path, e: Exception) -> WeightsError:
    return WeightsError(
        f"{path} is not a readable checkpoint ({type(e).__name__}: {e}); it is damaged, truncated "
        f"or of another format: resume from an intact one or start a new run"
    )


def read_checkpoint_meta(path: str | os.PathLike) -> dict:
    """The metadata of a checkpoint, read and checked (format, version, fields) before any array."""
    path = checkpoint_file(path)
    if not path.is_file():
        raise WeightsError(
            f"no checkpoint at {path}; a run given that folder to save in writes one there at the end of every epoch"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            if META_KEY not in z.files:
                raise WeightsError(f"{path} is an .npz file but not a checkpoint (no {META_KEY} record)")
            text = str(npz_array(z, META_KEY, path, limit=META_LIMIT))
    except WeightsError:
        raise
    except (*UNREADABLE, KeyError) as e:
        raise _damaged(path, e) from None
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:  # RecursionError: arrays nested past Python's limit
        raise WeightsError(f"{path} has unreadable metadata ({e}); it is damaged") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        got = (meta.get("format"), meta.get("version")) if isinstance(meta, dict) else (None, None)
        raise WeightsError(
            f"{path} has format {got[0]!r} version {got[1]!r}; this version resumes {FORMAT!r} "
            f"version {VERSION} (a weights file is loaded with load_weights, not resumed)"
        )
    missing = [k for k in ("backend", "config", "recipe", "epoch", "history", "state") if k not in meta]
    if missing or not isinstance(meta.get("recipe"), dict) or not isinstance(meta.get("epoch"), int):
        raise WeightsError(
            f"{path} has a damaged metadata record (missing or wrong: {', '.join(missing) or 'recipe/epoch'})"
        )
    _check_record(meta, path)
    return meta


def _check_record(meta: dict, path: Path) -> None:
    """Refuse a record holding what no run writes; each value is checked as train() checks its argument."""

    def damaged(part: str, why) -> WeightsError:
        return WeightsError(f"{path} has a damaged {part} record ({why}); {ALTERED}")

    if not isinstance(meta["backend"], str) or meta["backend"] not in BACKENDS:
        raise damaged("metadata", f"backend {meta['backend']!r} is none of {', '.join(BACKENDS)}")
    recipe = {**RECIPE_FORMER, **meta["recipe"]}
    try:
        known = ("lr", "optimizer", "lr_schedule", "seed", "precision")
        Recipe(recipe["num_epochs"], **{key: recipe[key] for key in known})
        for key in ("batch_size", "train_examples", "test_examples"):  # None: an iterable without these
            if recipe.get(key) is not None:
                positive_int(recipe[key], key)
    except KeyError as e:
        raise damaged("recipe", f"no {e}") from None
    except ConfigError as e:
        raise damaged("recipe", e) from None
    if not 0 <= meta["epoch"] <= recipe["num_epochs"]:
        raise damaged("metadata", f"epoch {meta['epoch']} of {recipe['num_epochs']}")
    try:
        history = History.from_dict(meta["history"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise damaged("history", f"{type(e).__name__}: {e}") from None
    if len(history.epochs) != meta["epoch"]:
        raise damaged("history", f"{len(history.epochs)} epochs recorded, after epoch {meta['epoch']}")
    state = meta["state"]
    data_epoch = state.get("data_epoch") if isinstance(state, dict) else "none"
    if not (data_epoch is None or (type(data_epoch) is int and 0 <= data_epoch <= MAX_INT)):
        raise damaged("state", f"the data stream's epoch is {data_epoch!r}")
    if not isinstance(state.get("optimizer", {}), dict):
        raise damaged("state", f"the optimizer's scalars are {state['optimizer']!r}")


def check_checkpoint(
    meta: dict,
    path: str | os.PathLike,
    backend: str | None = None,
    config: NetConfig | None = None,
    recipe: dict | None = None,
) -> NetConfig:
    """Refuse a checkpoint of another backend, configuration or recipe; return its configuration."""
    if backend is not None and meta["backend"] != backend:
        raise WeightsError(
            f"{path} is a checkpoint of the {meta['backend']} backend; resume it with "
            f"{arg('backend', meta['backend'])} (optimizer and random states do not carry across frameworks; "
            f"the weights alone do: vgg convert)"
        )
    saved = meta_config(meta, path, config)
    if config is not None and saved != config:  # meta_config lets a different dropout pass; a resumed run may not
        raise WeightsError(
            f"{path} was saved from {saved.describe()}, dropout {saved.dropout}; this network has "
            f"dropout {config.dropout}: build it with the saved configuration"
        )
    for key in RECIPE_KEYS if recipe is not None else ():
        saved_value = meta["recipe"].get(key, RECIPE_FORMER.get(key))
        asked = recipe.get(key) if recipe is not None else None
        if asked is not None and saved_value != asked:
            raise ConfigError(
                f"{path} was trained with {key} {saved_value!r} but this run asks for "
                f"{asked!r}; a resumed run repeats the saved recipe: pass "
                f"{key}={saved_value!r}, or start a new run elsewhere"
            )
    asked_epochs = None if recipe is None else recipe.get("num_epochs")
    if asked_epochs is not None and asked_epochs < meta["epoch"]:
        raise ConfigError(
            f"{path} has already trained {meta['epoch']} epochs; a resumed run continues to num_epochs >= "
            f"{meta['epoch']} (this run asks for {asked_epochs})"
        )
    return saved


# The most bytes of a random generator's state (PyTorch's is 5,056; a Keras seed, a few).
RNG_LIMIT = 2**20


def _bound(group: str, name: str, shapes: dict[str, tuple[int, ...]]) -> tuple[tuple[int, ...] | None, int | None]:
    """(shape, most bytes) a checkpoint's array may declare, known from its configuration before it is read: a
    weight its shape; an optimizer slot no more than the largest parameter in float64; a generator's state 1 MiB."""
    if group == "weights":
        extra_arrays("a checkpoint's weights", [name], shapes)
        return shapes[name], None
    if group == "optimizer":
        return None, 8 * max(map(math.prod, shapes.values())) + 1024
    return None, RNG_LIMIT


def load_checkpoint(
    path: str | os.PathLike, backend: str | None = None, config: NetConfig | None = None, recipe: dict | None = None
) -> Checkpoint:
    """Read a checkpoint for a run of ``backend``/``config``/``recipe``; refuses a mismatch before any array."""
    path = checkpoint_file(path)
    meta = read_checkpoint_meta(path)
    saved = check_checkpoint(meta, path, backend, config, recipe)
    groups: dict[str, dict[str, np.ndarray]] = {g: {} for g in GROUPS}
    shapes = spec(saved).param_shapes()
    try:
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                group, _, name = key.partition("/")
                if key != META_KEY and group in groups:
                    groups[group][name] = npz_array(z, key, path, *_bound(group, name, shapes))
    except WeightsError:
        raise
    except (*UNREADABLE, KeyError) as e:
        raise _damaged(path, e) from None
    weights = check_weights(saved, groups["weights"], source=path)
    floats = {name: a for name, a in groups["optimizer"].items() if a.dtype.kind == "f"}
    check_finite_weights(floats, f"the optimizer state of {path}")  # Adam's moments; SGD keeps none
    return Checkpoint(path, meta, weights, groups["optimizer"], groups["rng"])


COMPARE_MARK = ".vgg-compare"  # in a `vgg compare` --out: the backends' runs there are the command's own


COMPARE_FILES = ("report.md", "curves.png", "results.json")


def claim_compare_folder(out: Path, names: list[str], resume: bool, overwrite: bool) -> None:
    """Before a compare writes into ``out``: refuse to replace what it did not write, then mark the folder its own.

    A backend's folder holding a run, or a report file, in a folder no compare has written (no mark, and no
    compare's results.json from before the mark existed) is a user's: it is replaced only with ``overwrite``.
    ``resume`` continues such a run where it has a checkpoint, and replaces nothing else of the user's. A compare
    that is not resumed also removes the report of the one before, so that one failing partway leaves no report
    that describes other runs.
    """

    own = (out / COMPARE_MARK).is_file() or _compare_results(out / "results.json")
    resumed = [n for n in names if resume and checkpoint_file(out / n).is_file()]
    if not (own or overwrite):
        theirs = [
            out / n
            for n in names
            if n not in resumed
            and (checkpoint_file(out / n).exists() or any((out / n / f).exists() for f in RUN_FILES))
        ]
        theirs += [out / f for f in COMPARE_FILES if (out / f).exists()]
        if theirs:
            raise ConfigError(
                f"{theirs[0]} holds files vgg compare did not write; replace them with {arg('overwrite', True)}, or "
                f"choose another {arg('out')}"
            )
    if own or overwrite or not resumed:
        mark_compare_folder(out)
    # else the user's runs it continues become its own only once it has finished them (_compare marks it then):
    # one it fails to continue stays the user's, which a later compare replaces only with --overwrite
    if not resume:
        for name in COMPARE_FILES:
            (out / name).unlink(missing_ok=True)


def mark_compare_folder(out: Path) -> None:
    """Mark ``out`` as a compare's: its backends' runs and report files may be replaced by the next one."""

    atomic_write(out / COMPARE_MARK, lambda f: f.write(b"written by vgg compare: its runs here may be replaced\n"))


def _compare_results(path: Path) -> bool:
    """Whether ``path`` is the results.json of a compare (one from before compares marked their folders)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # RecursionError: arrays nested past Python's limit
        return False
    return (
        isinstance(record, dict)
        and set(record) == {"runs", "test_acc_spread"}
        and isinstance(record["runs"], list)
        and all(isinstance(r, dict) and {"framework", "config", "history"} <= set(r) for r in record["runs"])
    )
