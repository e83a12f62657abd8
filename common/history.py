"""What a run leaves behind: one record per epoch, the book's per-epoch line, JSON both ways."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


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
    data: dict | None = None  # the data the run trained on: folder and checksums (common.data)
    wall_seconds: float = 0.0  # the training loop's wall time (evaluation, checkpoints), over all of a resumed run

    def add(self, epoch: Epoch) -> None:
        self.epochs.append(epoch)

    def to_dict(self) -> dict:
        return {
            "backend": self.backend,
            "device": self.device,
            "data": self.data,
            "epochs": [asdict(e) for e in self.epochs],
            "wall_seconds": self.wall_seconds,
        }

    @classmethod
    def from_dict(cls, d: dict) -> History:
        # a run saved before wall_seconds was recorded counts from the part resumed next
        return cls(
            d["backend"], d["device"], [Epoch(**e) for e in d["epochs"]], d.get("data"), d.get("wall_seconds", 0.0)
        )

    @property
    def last(self) -> Epoch | None:
        return self.epochs[-1] if self.epochs else None
