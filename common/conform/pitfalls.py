"""The catalogue of pitfalls, and how each is recognised: from the shape trace, by the reference
computation switched at the layer that diverges, or in the initial weights."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..arch import (
    LayerPlan,
)
from .records import TOLERANCE, LayerRow, Param
from .reference import Variant, pooled_side, rel_error, run_layers


class Pitfall(NamedTuple):
    key: str
    says: str  # one sentence with its fix; {layer} is the layer where it shows


PITFALLS = {
    p.key: p
    for p in (
        Pitfall(
            "bn_eps",
            "{layer} uses batch-norm epsilon 1e-3 (Keras' default), the spec 1e-5: build it with eps=1e-5 "
            "(Keras: BatchNormalization(epsilon=1e-5)).",
        ),
        Pitfall(
            "bn_batch_stats",
            "{layer} normalises with the batch's own statistics in evaluation mode, not its running ones: keep "
            "track_running_stats=True and let model.eval() reach it (Keras: call with training=False).",
        ),
        Pitfall(
            "flatten_hwc",
            "{layer} receives the features flattened in H,W,C order, the spec's is C,H,W: flatten before moving "
            "channels last, or permute fc1's input columns (common.weights.from_canonical(w, 'flat', config)).",
        ),
        Pitfall(
            "padding0",
            "{layer} pads its convolution with 0 pixels, the spec with 1 (kernel // 2): use padding=1 "
            "(Keras: padding='same').",
        ),
        Pitfall(
            "ceil_mode",
            "{layer} rounds its pooled size up (ceil_mode=True), the spec rounds down: use ceil_mode=False "
            "(Keras: padding='valid').",
        ),
        Pitfall(
            "no_relu",
            "{layer} is missing: the layer before it feeds the next without a ReLU; add nn.ReLU() there "
            "(Keras: activation='relu').",
        ),
        Pitfall(
            "dropout_eval",
            "{layer} drops units in evaluation mode (two runs on the same images differ): dropout must be off at "
            "evaluation; call model.eval() and do not override it (Keras: training=False).",
        ),
        Pitfall(
            "non_finite",
            "{layer} outputs NaN or infinite values on the probe images, from finite input and finite weights: "
            "look for a division, log or square root there that the spec does not have.",
        ),
        Pitfall(
            "nhwc_input",
            "{layer} reads the N,C,H,W input as if it were N,H,W,C: take the images as N,C,H,W, or reshape "
            "nothing and transpose with x.permute(0, 3, 1, 2) only when they arrive channels-last.",
        ),
        Pitfall(
            "init",
            "the model's own initial weights are {layer}, the recipe's are Xavier-uniform with zero biases: for "
            "training comparisons initialise with nn.init.xavier_uniform_ (Keras: glorot_uniform, Gluon: "
            "mx.init.Xavier(rnd_type='uniform', factor_type='avg', magnitude=3)).",
        ),
    )
}


@dataclass
class Diagnosis:
    pitfall: str  # a key of PITFALLS, or "unknown"
    layer: str  # the canonical layer where it shows ("input" for the input)
    sentence: str
    error: float | None = None  # the relative error of the variant that matched, where one was computed

    @classmethod
    def of(cls, key: str, layer: str, error: float | None = None) -> Diagnosis:
        return cls(key, layer, PITFALLS[key].says.format(layer=layer), error)


def shape_diagnosis(
    plan: list[tuple[str, LayerPlan]], rows: list[LayerRow], start_shape: tuple[int, ...], j: int
) -> Diagnosis | None:
    """Which pitfall gives the model's shape at row ``j``, from the last shape that matched before it."""
    seen = [tuple(r.shape[1:]) if r.shape is not None else None for r in rows]
    i = max((k for k in range(j) if seen[k] == rows[k].spec_shape), default=-1)
    shape = start_shape if i < 0 else rows[i].spec_shape
    want = seen[j]
    for key in ("padding0", "ceil_mode"):
        side = shape[-1] if len(shape) == 3 else None
        culprit = None
        for k in range(i + 1, j + 1):
            name, p = plan[k]
            if side is None:
                break
            if p.kind == "conv":
                pad = 0 if key == "padding0" else p.padding
                side = (side + 2 * pad - p.kernel) // p.stride + 1
                culprit = culprit or (name if key == "padding0" and p.padding else None)
            elif p.kind == "pool":
                before = side
                side = pooled_side(side, p.kernel, p.stride, key == "ceil_mode")
                if key == "ceil_mode" and side != pooled_side(before, p.kernel, p.stride, False):
                    culprit = culprit or name
        if culprit and want is not None and len(want) == 3 and want[1:] == (side, side):
            return Diagnosis.of(key, culprit)
    return None


_VARIANTS: tuple[tuple[str, Callable[[list[tuple[str, LayerPlan]]], list[tuple[str, Variant]]]], ...] = (
    ("bn_eps", lambda seg: [("", Variant(eps=1e-3))] if any(p.kind == "bn" for _, p in seg) else []),
    ("bn_batch_stats", lambda seg: [("", Variant(batch_stats=True))] if any(p.kind == "bn" for _, p in seg) else []),
    ("flatten_hwc", lambda seg: [("", Variant(flatten_hwc=True))] if any(p.kind == "flatten" for _, p in seg) else []),
    ("no_relu", lambda seg: [(n, Variant(no_relu=(n,))) for n, p in seg if p.kind == "relu"]),
    ("ceil_mode", lambda seg: [("", Variant(ceil_mode=True))] if any(p.kind == "pool" for _, p in seg) else []),
    ("padding0", lambda seg: [("", Variant(padding=0))] if any(p.kind == "conv" for _, p in seg) else []),
)


def numeric_diagnosis(
    plan: list[tuple[str, LayerPlan]],
    rows: list[LayerRow],
    outputs: dict[int, np.ndarray],
    weights: dict[str, np.ndarray],
    x: np.ndarray,
    j: int,
) -> Diagnosis | None:
    """Which pitfall turns the model's own activation before layer ``j`` into its output at ``j``."""
    i = max((k for k in range(j) if k in outputs and (rows[k].error or 0) <= TOLERANCE), default=-1)
    start = x if i < 0 else outputs[i]
    segment = plan[i + 1 : j + 1]
    target = outputs[j]
    baseline = rel_error(run_layers(segment, weights, start, first=i < 0), target)
    candidates = list(_VARIANTS)
    if i < 0 and x.shape[1] > 1:
        candidates.append(("nhwc_input", lambda seg: [("", Variant(nhwc_input=True))]))
    best: tuple[float, str, str] | None = None
    for key, make in candidates:
        for where, variant in make(segment):
            try:
                err = rel_error(run_layers(segment, weights, start, variant, first=i < 0), target)
            except ValueError:
                continue
            if best is None or err < best[0]:
                best = (err, key, where)
    if best is None or best[0] > 10 * TOLERANCE or best[0] > baseline / 10:
        return None
    err, key, where = best
    if key == "no_relu":
        return Diagnosis.of(key, where, err)
    if key == "nhwc_input":
        return Diagnosis.of(key, plan[j][0] if j >= 0 else "input", err)
    layer = next(
        (
            n
            for n, p in segment
            if p.kind
            == {
                "bn_eps": "bn",
                "bn_batch_stats": "bn",
                "flatten_hwc": "flatten",
                "ceil_mode": "pool",
                "padding0": "conv",
            }[key]
        ),
        plan[j][0],
    )
    if key == "flatten_hwc":
        layer = next((n for n, p in plan if p.kind == "linear"), layer)
    return Diagnosis.of(key, layer, err)


def same_values(a: np.ndarray | None, b: np.ndarray) -> bool:
    return a is not None and bool(np.array_equal(a, b, equal_nan=True))


def init_diagnosis(params: list[Param]) -> Diagnosis | None:
    """Which scheme the model's own initial weights look like, where that is not the recipe's Xavier-uniform."""
    looks = set()
    for p in params:
        if not p.trainable or p.shape is None or len(p.shape) not in (2, 4) or not p.largest:
            continue
        receptive = int(np.prod(p.shape[2:]))
        fan_in, fan_out = p.shape[1] * receptive, p.shape[0] * receptive
        for scheme, bound in (
            ("Xavier-uniform", math.sqrt(6 / (fan_in + fan_out))),
            ("PyTorch's default (Kaiming-uniform, a=sqrt(5))", 1 / math.sqrt(fan_in)),
            ("Gluon's default uniform(-0.07, 0.07)", 0.07),
        ):
            if 0.85 * bound <= p.largest <= 1.0001 * bound:
                looks.add(scheme)
                break
        else:
            looks.add("other")
    if not looks or looks == {"Xavier-uniform"}:
        return None
    named = sorted(looks - {"other", "Xavier-uniform"})
    return Diagnosis.of("init", named[0] if len(named) == 1 and "other" not in looks else "not Xavier-uniform")
