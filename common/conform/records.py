"""What an adapter gives the check (parameters, layer events, a trace) and the rows of the report."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..distributed import USER_CODE
from ..errors import reason

TOLERANCE = 1e-4  # relative to the largest reference value: the logits, and every traced layer


KINDS = ("conv", "bn", "relu", "lrn", "pool", "flatten", "linear", "dropout")


STATISTICS = ("running_mean", "running_var")


class Param(NamedTuple):
    """One parameter of the user's model: its own name, its shape in canonical layout (conv OIHW, dense (out, in)),
    whether it trains (batch-norm statistics do not), and the largest magnitude it was initialised with."""

    name: str
    shape: tuple[int, ...] | None  # None: a lazy parameter, not materialised yet
    trainable: bool
    largest: float | None = None
    stat: str | None = None  # batch-norm statistics: "running_mean" or "running_var"
    owner: str | None = None  # batch-norm statistics: the name of the same layer's weight (gamma), where known


class Event(NamedTuple):
    """One layer's output seen during a run: the user's layer name, its kind, the output (NCHW for maps; None
    where the framework fused it with the next layer, such as Keras' ``Conv2D(activation="relu")``) and its shape.
    """

    name: str
    kind: str  # one of KINDS, or "other"
    output: np.ndarray | None
    shape: tuple[int, ...]


class Trace(NamedTuple):
    """A run of a model: its logits (None when it raised), the layer events up to there, and the error if any."""

    logits: np.ndarray | None
    events: list[Event]
    error: str | None


def users_own(error: BaseException) -> bool:
    """Whether ``error``, raised out of a user's model code, is reported as that code's (one line): anything it
    raises (a SystemExit, a BaseException of its own), but a KeyboardInterrupt only where the code runs in the
    process `vgg conform` gives it, which no Ctrl-C reaches; elsewhere that is the user stopping the check."""
    return not isinstance(error, (KeyboardInterrupt, GeneratorExit)) or os.environ.get(USER_CODE) is not None


def failure(error: BaseException) -> str:
    """A framework's exception in one line: its type and the informative line of its message (not an embedded
    traceback, as MXNet's begin), at most 300 characters of it."""
    said = reason(error)
    cut = len(type(error).__name__) + 2 + 300
    return said if len(said) <= cut else said[:cut]


@dataclass
class ParamRow:
    canonical: str | None
    spec_shape: tuple[int, ...] | None
    name: str | None
    shape: tuple[int, ...] | None

    @property
    def ok(self) -> bool:
        return self.canonical is not None and self.name is not None and self.spec_shape == self.shape


@dataclass
class LayerRow:
    canonical: str
    kind: str
    spec_shape: tuple[int, ...]
    name: str | None = None  # the user's layer (None: not seen)
    shape: tuple[int, ...] | None = None
    error: float | None = None  # relative error against the reference, where compared
