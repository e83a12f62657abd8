"""What a run leaves behind: one record per epoch, the book's per-epoch line, JSON both ways."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass
class Epoch:
    epoch: int
    loss: float
    train_acc: float
    test_acc: float
    examples_per_sec: float
    seconds: float
    # the run's wall time when this epoch ended (evaluation and checkpoints included); None in older records
    wall_seconds: float | None = None

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
    data: dict | None = None  # the data the run trained on: folder and checksums (common.data)
    wall_seconds: float = 0.0  # the training loop's wall time (evaluation, checkpoints), over all of a resumed run
    compiles: int = 0  # graphs the framework's compiler built (``compile=True``; PyTorch's torch.compile)
    compile_seconds: float = 0.0  # the wall time of the steps and evaluations that compiled them

    def add(self, epoch: Epoch) -> None:
        self.epochs.append(epoch)

    def resumed_on(self, device: str, epoch: int) -> None:
        """A resumed run's part from ``epoch`` on runs on ``device``: named where the last part ran elsewhere
        (``"cuda:0 then cpu from epoch 3"``), so that the record says where each epoch ran."""
        last = self.device.rsplit(" then ", 1)[-1].split(" from epoch ", 1)[0]
        if device != last:
            self.device = f"{self.device} then {device} from epoch {epoch}"

    def to_dict(self) -> dict:
        return {
            "backend": self.backend,
            "device": self.device,
            "data": self.data,
            "epochs": [asdict(e) for e in self.epochs],
            "wall_seconds": self.wall_seconds,
            "compiles": self.compiles,
            "compile_seconds": self.compile_seconds,
        }

    @classmethod
    def from_dict(cls, d: dict) -> History:
        """The history of a :meth:`to_dict` record; a ValueError (or KeyError, TypeError) where the record holds
        what no run writes: epochs out of order, a value that is no finite number."""
        # a run saved before wall_seconds was recorded counts from the part resumed next
        history = cls(
            d["backend"], d["device"], [Epoch(**e) for e in d["epochs"]], d.get("data"), d.get("wall_seconds", 0.0)
        )
        history.compiles, history.compile_seconds = d.get("compiles", 0), d.get("compile_seconds", 0.0)
        for number, e in enumerate(history.epochs, start=1):
            values = (e.loss, e.train_acc, e.test_acc, e.examples_per_sec, e.seconds)
            if e.epoch != number or type(e.epoch) is not int or not all(map(_finite, values)):
                raise ValueError(f"its record of epoch {number} is {asdict(e)}")
        names = (history.backend, history.device)
        if not _finite(history.wall_seconds) or not all(isinstance(name, str) for name in names):
            raise ValueError(f"backend, device and wall_seconds are {(*names, history.wall_seconds)!r}")
        if type(history.compiles) is not int or history.compiles < 0 or not _finite(history.compile_seconds):
            raise ValueError(f"compiles and compile_seconds are {(history.compiles, history.compile_seconds)!r}")
        return history

    @property
    def last(self) -> Epoch | None:
        return self.epochs[-1] if self.epochs else None


def _finite(value) -> bool:
    """A finite int or float (not a bool): what every number of a run's record is."""
    return type(value) in (int, float) and math.isfinite(value)
