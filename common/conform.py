"""``vgg conform``: hold anyone's VGG or AlexNet port to the spec, and say where it first goes wrong.

The checks, framework-free (each framework's part is its ``vgg_*/conform.py``; ONNX's is here, run by ONNX
Runtime):

1. **Structure.** The configuration is given or inferred from the parameter shapes. The trainable parameters
   are matched to the canonical names (:meth:`common.spec.Spec.param_shapes`) by order and shape, batch-norm
   statistics the same way; the layer-by-layer output shapes, traced with the framework's hooks (intermediate
   outputs in ONNX), are aligned with the spec's layers by kind and compared in NCHW.
2. **Numerics.** Seeded canonical weights (:func:`probe_weights`: Xavier's, with biases and batch norm moved off
   zero and identity so that neither can hide a mistake) are loaded into the model and into a reference backend
   (PyTorch by default); the logits on real Fashion-MNIST test images must agree to a relative 1e-4 (of the
   largest logit). Where they do not, every traced layer is compared and the first that diverges is named.
3. **Diagnosis.** At that layer the known pitfalls are tried as switches of a NumPy reference computation
   (:class:`Variant`, :func:`run_layers`), started from the model's own activation before the layer: the one
   whose output matches the model's is the diagnosis, one sentence with its fix. Shape pitfalls (padding,
   ``ceil_mode``) are diagnosed from the shape trace the same way; dropout at evaluation by running twice.

Channels-last models (Keras, or an ONNX graph with an N,H,W,C input) are handled, not faulted: the images are
given channels-last and the first dense layer's weights are loaded with its rows permuted (what ``vgg_tf`` does).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .arch import (
    ALEXNET_FEATURES,
    ALEXNET_MIN_SIZE,
    BN_EPSILON,
    CONFIGS,
    LRN,
    MAX_INT,
    WIDTHS,
    AlexNetConfig,
    LayerPlan,
    NetConfig,
    make_any_config,
    net_plan,
)
from .errors import ConfigError, InputError, VGGError, WeightsError, arg
from .spec import available_memory, check_layer_sizes, format_bytes, memory_needed, spec
from .weights import from_canonical, no_file, reason, xavier_init

TOLERANCE = 1e-4  # relative to the largest reference value: the logits, and every traced layer
KINDS = ("conv", "bn", "relu", "lrn", "pool", "flatten", "linear", "dropout")
STATISTICS = ("running_mean", "running_var")
REPORT_FILES = ("conformance.md", "conformance.json")


# --- what an adapter gives: parameters, layer events ------------------------------------------------------------


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
    from .distributed import USER_CODE

    return not isinstance(error, (KeyboardInterrupt, GeneratorExit)) or os.environ.get(USER_CODE) is not None


def failure(error: BaseException) -> str:
    """A framework's exception in one line: its type and the informative line of its message (not an embedded
    traceback, as MXNet's begin), at most 300 characters of it."""
    said = reason(error)
    cut = len(type(error).__name__) + 2 + 300
    return said if len(said) <= cut else said[:cut]


# --- the probe weights --------------------------------------------------------------------------------------------


def probe_weights(config: NetConfig, seed: int = 0, calibration: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The canonical weights every check loads: :func:`common.weights.xavier_init`'s, then (seeded) biases in
    [-0.1, 0.1] and batch norm off identity (gamma in [0.5, 1.5], beta in [-0.2, 0.2]), so that a swapped or
    ignored vector changes the numbers.

    With ``calibration`` images (NCHW, others than those compared), each batch norm's running statistics are
    theirs (times a seeded factor in [0.8, 1.25] for the variance), and the convolution before it is rescaled per
    channel so that its running variance is 2e-3: the network computes the same function, but epsilon (1e-5
    against 1e-3) and batch against running statistics now change a batch norm's output by 10% or more.
    """
    weights = xavier_init(config, seed)
    rng = np.random.default_rng([seed, 1])
    bn = {layer.name for layer in spec(config).layers if layer.kind == "bn"}
    for name, array in weights.items():
        layer, suffix = name.rsplit(".", 1)
        if layer in bn and suffix in ("weight", "bias"):
            low, high = (0.5, 1.5) if suffix == "weight" else (-0.2, 0.2)
            weights[name] = rng.uniform(low, high, array.shape).astype(np.float32)
        elif suffix == "bias":
            weights[name] = rng.uniform(-0.1, 0.1, array.shape).astype(np.float32)
    if calibration is None or not bn:
        return weights
    plan = plan_layers(config)
    x = np.asarray(calibration, np.float32)
    for k, (name, p) in enumerate(plan):
        if p.kind == "bn":
            conv = plan[k - 1][0]
            var = x.var(axis=(0, 2, 3)) * rng.uniform(0.8, 1.25, x.shape[1])
            scale = np.sqrt(2e-3 / np.maximum(var, 1e-12)).astype(np.float32)
            weights[f"{conv}.weight"] *= scale[:, None, None, None]
            weights[f"{conv}.bias"] *= scale
            x = x * scale[None, :, None, None]
            weights[f"{name}.running_mean"] = x.mean(axis=(0, 2, 3)).astype(np.float32)
            weights[f"{name}.running_var"] = (var * scale**2).astype(np.float32)
        x = run_layers([(name, p)], weights, x)
    return weights


def probe_images(config: NetConfig, count: int, data_dir=None, start: int = 0) -> np.ndarray:
    """``count`` real Fashion-MNIST test images from ``start``, NCHW float32 in [0, 1] at the network's size; for
    more than one channel the grey channel is repeated."""
    from .data import load_fashion_mnist, resize_images

    data = load_fashion_mnist(data_dir)
    images = resize_images(data.test_images[start : start + count].astype(np.float32) / 255, config.input_size)
    x = np.ascontiguousarray(images[:, None], dtype=np.float32)
    return np.ascontiguousarray(np.repeat(x, config.in_channels, axis=1))


# --- the NumPy reference computation, with the pitfalls as switches ---------------------------------------------


@dataclass(frozen=True)
class Variant:
    """Switches of the reference computation: the canonical network has every one at its default."""

    eps: float = BN_EPSILON  # batch-norm epsilon
    batch_stats: bool = False  # batch norm normalises with the batch's statistics, not the running ones
    flatten_hwc: bool = False  # the features are flattened in H,W,C order
    padding: int | None = None  # every convolution pads this much (None: the spec's)
    ceil_mode: bool = False  # pools round their output size up
    no_relu: tuple[str, ...] = ()  # these ReLUs are left out
    nhwc_input: bool = False  # the N,C,H,W input is read as if it were N,H,W,C


def plan_layers(config: NetConfig) -> list[tuple[str, LayerPlan]]:
    """(canonical name, planned layer) of every layer, in the order of :func:`common.spec.spec`'s layers."""
    out = []
    for group, plan in net_plan(config):
        for p in plan if isinstance(plan, list) else [plan]:
            out.append((f"{group}.{p.name}" if isinstance(plan, list) else group, p))
    return out


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, padding: int) -> np.ndarray:
    k = w.shape[2]
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    if x.shape[2] < k or x.shape[3] < k:
        raise ValueError(f"a {k}x{k} convolution does not fit a {x.shape[2]}x{x.shape[3]} map")
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[  # type: ignore[call-overload]
        :, :, ::stride, ::stride
    ]
    out = np.tensordot(windows, w, axes=([1, 4, 5], [1, 2, 3]))  # N, Ho, Wo, O
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2)) + b[None, :, None, None]


def pooled_side(side: int, kernel: int, stride: int, ceil_mode: bool) -> int:
    """The side after a max-pool without padding, PyTorch's rule (with ``ceil_mode``, a last window that starts
    inside the map counts)."""
    if not ceil_mode:
        return (side - kernel) // stride + 1
    out = -(-(side - kernel) // stride) + 1
    return out - 1 if (out - 1) * stride >= side else out


def _pool(x: np.ndarray, kernel: int, stride: int, ceil_mode: bool) -> np.ndarray:
    side = pooled_side(x.shape[2], kernel, stride, ceil_mode)
    grow = max(0, (side - 1) * stride + kernel - x.shape[2])
    if grow:
        x = np.pad(x, ((0, 0), (0, 0), (0, grow), (0, grow)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(x, (kernel, kernel), axis=(2, 3))[  # type: ignore[call-overload]
        :, :, ::stride, ::stride
    ]
    return windows[:, :, :side, :side].max(axis=(4, 5))


def _lrn(x: np.ndarray) -> np.ndarray:
    """Local response normalisation across channels, PyTorch's convention (zeros padded around the window)."""
    size = LRN.size
    square = np.pad(x * x, ((0, 0), (size // 2, (size - 1) // 2), (0, 0), (0, 0)))
    total = sum(square[:, i : i + x.shape[1]] for i in range(size))
    return x / (LRN.k + LRN.alpha / size * total) ** LRN.beta


def run_layers(
    layers: Sequence[tuple[str, LayerPlan]],
    weights: dict[str, np.ndarray],
    x: np.ndarray,
    variant: Variant = Variant(),
    first: bool = False,
) -> np.ndarray:
    """The output of ``layers`` (a stretch of :func:`plan_layers`) on ``x`` with the canonical ``weights``, in
    float32 NumPy, evaluation mode, the ``variant``'s switches on; ``first``: ``x`` is the network's input."""
    x = np.asarray(x, np.float32)
    if first and variant.nhwc_input:
        n, c, h, w = x.shape
        x = x.reshape(n, h, w, c).transpose(0, 3, 1, 2)
    for name, p in layers:
        if p.kind == "conv":
            padding = p.padding if variant.padding is None else variant.padding
            x = _conv(x, weights[f"{name}.weight"], weights[f"{name}.bias"], p.stride, padding)
        elif p.kind == "bn":
            if variant.batch_stats:
                mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
            else:
                mean, var = weights[f"{name}.running_mean"], weights[f"{name}.running_var"]
            scale = weights[f"{name}.weight"] / np.sqrt(var + variant.eps)
            x = (x - mean[None, :, None, None]) * scale[None, :, None, None] + weights[f"{name}.bias"][
                None, :, None, None
            ]
        elif p.kind == "relu":
            x = x if name in variant.no_relu else np.maximum(x, 0)
        elif p.kind == "lrn":
            x = _lrn(x)
        elif p.kind == "pool":
            x = _pool(x, p.kernel, p.stride, variant.ceil_mode)
        elif p.kind == "flatten":
            x = (x.transpose(0, 2, 3, 1) if variant.flatten_hwc else x).reshape(len(x), -1)
        elif p.kind == "linear":
            x = x @ weights[f"{name}.weight"].T + weights[f"{name}.bias"]
        x = x.astype(np.float32, copy=False)  # dropout: off at evaluation
    return x


def rel_error(got: np.ndarray | None, want: np.ndarray | None) -> float:
    """Largest absolute difference over the largest reference magnitude; infinite where shapes differ."""
    if got is None or want is None or got.shape != want.shape:
        return math.inf
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    diff = float(np.max(np.abs(got.astype(np.float64) - want))) if want.size else 0.0
    return diff / (scale or 1.0) if math.isfinite(diff) else math.inf


# --- the pitfalls ---------------------------------------------------------------------------------------------


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


# --- aligning a trace with the spec's layers --------------------------------------------------------------------


def align(kinds: Sequence[str], events: Sequence[Event]) -> dict[int, int]:
    """Spec layer index -> event index: the longest common subsequence of the two kind sequences (events of no
    known kind are skipped). A layer the model computes without a module of its own (a functional ReLU) or
    leaves out is unmatched; a module the spec does not have is skipped."""
    ev = [(j, e.kind) for j, e in enumerate(events) if e.kind in KINDS]
    n, m = len(kinds), len(ev)
    best = np.zeros((n + 1, m + 1), np.int32)
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            best[i, j] = best[i + 1, j + 1] + 1 if kinds[i] == ev[j][1] else max(best[i + 1, j], best[i, j + 1])
    out, i, j = {}, 0, 0
    while i < n and j < m:
        if kinds[i] == ev[j][1] and best[i, j] == best[i + 1, j + 1] + 1:
            out[i] = ev[j][0]
            i, j = i + 1, j + 1
        elif best[i + 1, j] >= best[i, j + 1]:
            i += 1
        else:
            j += 1
    return out


# --- inferring the configuration --------------------------------------------------------------------------------

GIVEN = ("arch", "in_channels", "num_classes", "input_size", "ratio", "fc_hidden", "batch_norm")


def _vgg_arch(kernels: list[int], widths: list[int], lrn: bool) -> tuple[str, int] | None:
    """(configuration name, ratio) whose convolutions are these, or None."""
    found = []
    for name, paper in CONFIGS.items():
        flat = [k for block in paper.kernels for k in block]
        full = [w for w, block in zip(WIDTHS, paper.kernels, strict=True) for _ in block]
        if flat != kernels or widths[0] == 0 or full[0] % widths[0]:
            continue
        ratio = full[0] // widths[0]
        if [w // ratio for w in full] == widths:
            found.append((name, ratio))
    if not found:
        return None
    named = [f for f in found if CONFIGS[f[0]].lrn == lrn] or found
    return named[0]


def _input_size(final: int, candidates: range, side_of: Callable[[int], int]) -> int | None:
    sizes = [s for s in candidates if side_of(s) == final]
    return (224 if 224 in sizes else sizes[0]) if sizes else None


def infer_config(
    params: list[Param], given: dict[str, Any], declared: tuple[int, int, int] | None, has_lrn: bool, what: str
) -> tuple[NetConfig, list[str]]:
    """The configuration the given options and the model's parameter shapes describe, and sentences saying what
    was inferred. ``declared`` is the model's own (channels, height, width) input where it states one."""
    trainable = [p.shape for p in params if p.trainable and p.shape is not None]
    convs = [s for s in trainable if len(s) == 4]
    dense = [s for s in trainable if len(s) == 2]
    vectors = [s for s in trainable if len(s) == 1]
    inferred: dict[str, Any] = {}
    notes: list[str] = []
    if not convs or not dense:
        if "arch" not in given:
            raise ConfigError(
                f"{what} has {len(convs)} convolution and {len(dense)} dense weights: it is not a VGG or AlexNet "
                f"(they have both); if it is one, say which with {arg('arch')}"
            )
    else:
        inferred["in_channels"] = convs[0][1]
        inferred["num_classes"] = dense[-1][0]
        if declared and declared[0] != convs[0][1]:
            raise ConfigError(
                f"{what} declares {declared[0]}-channel input but its first convolution takes {convs[0][1]}"
            )
        if convs[0][2] == ALEXNET_FEATURES[0].kernel:
            inferred["arch"] = "alexnet"
            final = math.isqrt(dense[0][1] // convs[-1][0])
            if final * final * convs[-1][0] == dense[0][1]:
                inferred["input_size"] = _input_size(
                    final, range(ALEXNET_MIN_SIZE, 1025), lambda s: AlexNetConfig(1, 10, s, 0.5).final_size
                )
        else:
            kernels, widths = [s[2] for s in convs], [s[0] for s in convs]
            named = _vgg_arch(kernels, widths, has_lrn)
            if named:
                inferred["arch"], inferred["ratio"] = named
            elif "arch" not in given:
                raise ConfigError(
                    f"{what} is no VGG of Table 1 at any ratio, nor AlexNet: its {len(convs)} convolutions are "
                    f"{', '.join(f'{w} wide {k}x{k}' for w, k in zip(widths[:8], kernels[:8], strict=True))}"
                    f"{', ...' if len(convs) > 8 else ''}; if it is a VGG of your own, give {arg('arch')} as "
                    f"(num_convs, out_channels) pairs"
                )
            inferred["fc_hidden"] = dense[0][0]
            if len(vectors) == 3 * len(convs) + len(dense):
                inferred["batch_norm"] = True
            elif len(vectors) == len(convs) + len(dense):
                inferred["batch_norm"] = False
            blocks = len(CONFIGS[named[0]].kernels) if named else None
            final = math.isqrt(dense[0][1] // widths[-1]) if widths[-1] else 0
            if blocks and final and final * final * widths[-1] == dense[0][1]:
                step = 2**blocks
                inferred["input_size"] = 224 if 224 // step == final else final * step
    if declared:
        if not all(0 < d <= MAX_INT for d in declared) and not {"in_channels", "input_size"} <= set(given):
            raise ConfigError(
                f"{what} declares a {'x'.join(map(str, declared))} input, more than the frameworks index; give "
                f"{arg('in_channels')} and {arg('input_size')} it was built for"
            )
        inferred["input_size"] = declared[1]
        inferred.setdefault("in_channels", declared[0])
    needed = ("arch", "in_channels", "num_classes", "input_size")
    missing = [k for k in needed if k not in given and inferred.get(k) is None]
    if "arch" not in given and inferred.get("arch") != "alexnet" and "batch_norm" not in inferred:
        missing.append("batch_norm")
    if missing:
        found = ", ".join(f"{len(s)}-D {s}" for s in trainable[:6])
        raise ConfigError(
            f"cannot tell the configuration of {what} from its parameters ({len(trainable)}: {found}, ...): "
            f"pass {', '.join(arg(m) for m in missing)}"
        )
    chosen = {**inferred, **given}
    arch = chosen["arch"]
    for key in GIVEN:
        if key in given or key not in inferred or (arch == "alexnet" and key in ("ratio", "fc_hidden", "batch_norm")):
            continue
        how = {
            "input_size": "from the model's declared input"
            if declared
            else "from fc1's input features (the exact multiple)",
            "arch": "from the convolutions' kernels and widths",
            "ratio": "from the convolutions' widths",
            "batch_norm": "from the vectors between convolutions",
        }.get(key, "from the parameter shapes")
        notes.append(f"{key}={chosen[key]!r} inferred {how}")
    if arch == "alexnet":
        config = make_any_config("alexnet", chosen["in_channels"], chosen["num_classes"], chosen["input_size"])
    else:
        config = make_any_config(
            arch,
            chosen["in_channels"],
            chosen["num_classes"],
            chosen["input_size"],
            chosen.get("ratio"),
            chosen.get("fc_hidden"),
            0.5,
            chosen.get("batch_norm"),
        )
    return config, notes


def _check_room(config: NetConfig, images: int, what: str) -> None:
    """Refuse, before any array is made, a check this machine cannot hold: the probe images run through the
    network with every layer's output kept (a model that declares a huge input, say)."""
    check_layer_sizes(config)
    available = available_memory()
    needed = memory_needed(config, images)
    if available is not None and needed > available:
        raise ConfigError(
            f"checking {what} as {config.describe()} needs at least {format_bytes(needed)} of memory for "
            f"{images} probe images and every layer's output, but {format_bytes(available)} is available; give "
            f"{arg('input_size')} the size it was built for, or fewer {arg('images')}"
        )


# --- matching parameters by order and shape ----------------------------------------------------------------------


@dataclass
class ParamRow:
    canonical: str | None
    spec_shape: tuple[int, ...] | None
    name: str | None
    shape: tuple[int, ...] | None

    @property
    def ok(self) -> bool:
        return self.canonical is not None and self.name is not None and self.spec_shape == self.shape


def match_params(params: list[Param], config: NetConfig) -> tuple[list[ParamRow], dict[str, str] | None, list[str]]:
    """Rows pairing the spec's parameters with the model's: trainable ones by order and shape, then batch-norm
    statistics (by the layer of their weight where the model says which, else by order); user name -> canonical
    name when they all pair up (else None); and the batch-norm layers that keep no running statistics at all."""
    shapes = spec(config).param_shapes()
    rows: list[ParamRow] = []
    want = [(n, s) for n, s in shapes.items() if not n.endswith(STATISTICS)]
    have = [p for p in params if p.trainable]
    for i in range(max(len(want), len(have))):
        c, s = want[i] if i < len(want) else (None, None)
        q = have[i] if i < len(have) else None
        rows.append(ParamRow(c, s, q.name if q else None, q.shape if q else None))
    trained = {r.name: r.canonical for r in rows if r.ok and r.name and r.canonical}
    stats = [p for p in params if not p.trainable]
    want_stats = [(n, s) for n, s in shapes.items() if n.endswith(STATISTICS)]
    if stats and all(p.owner in trained and p.stat in STATISTICS for p in stats):
        by_canonical = {f"{trained[str(p.owner)].rsplit('.', 1)[0]}.{p.stat}": p for p in stats}
        for c, s in want_stats:
            q = by_canonical.pop(c, None)
            rows.append(ParamRow(c, s, q.name if q else None, q.shape if q else None))
        rows += [ParamRow(None, None, q.name, q.shape) for q in by_canonical.values()]
    else:
        for i in range(max(len(want_stats), len(stats))):
            c, s = want_stats[i] if i < len(want_stats) else (None, None)
            q = stats[i] if i < len(stats) else None
            rows.append(ParamRow(c, s, q.name if q else None, q.shape if q else None))
    # a batch norm without statistics (track_running_stats=False) loads the rest: the numbers will tell
    missing = [r for r in rows if not r.ok and r.name is None and r.canonical and r.canonical.endswith(STATISTICS)]
    bare = sorted(
        {r.canonical.rsplit(".", 1)[0] for r in missing if r.canonical},
        key=lambda layer: list(shapes).index(f"{layer}.running_mean"),
    )
    if all(r.ok for r in rows if r not in missing):
        return rows, {r.name: r.canonical for r in rows if r.ok and r.name and r.canonical}, bare
    return rows, None, []


# --- the report -------------------------------------------------------------------------------------------------


@dataclass
class LayerRow:
    canonical: str
    kind: str
    spec_shape: tuple[int, ...]
    name: str | None = None  # the user's layer (None: not seen)
    shape: tuple[int, ...] | None = None
    error: float | None = None  # relative error against the reference, where compared


@dataclass
class Report:
    model: str
    framework: str
    config: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    inferred: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    params_spec: int = 0
    params_model: int = 0
    params: list[ParamRow] = field(default_factory=list)
    layers: list[LayerRow] = field(default_factory=list)
    first_param_mismatch: str | None = None
    first_shape_mismatch: str | None = None
    run_error: str | None = None
    reference: str = ""
    images: int = 0
    logits_error: float | None = None
    first_divergence: str | None = None
    deterministic: bool | None = None
    diagnoses: list[Diagnosis] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def structure_ok(self) -> bool:
        return (
            self.first_param_mismatch is None
            and self.first_shape_mismatch is None
            and self.run_error is None
            and self.params_model == self.params_spec
        )

    @property
    def numerics_ok(self) -> bool:
        return self.logits_error is not None and self.logits_error <= TOLERANCE and self.deterministic is not False

    @property
    def conforms(self) -> bool:
        return self.structure_ok and self.numerics_ok and not any(d.pitfall != "init" for d in self.diagnoses)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(conforms=self.conforms, structure_ok=self.structure_ok, numerics_ok=self.numerics_ok)
        d["tolerance"] = TOLERANCE
        for row in d["layers"]:
            if row["error"] is not None and not math.isfinite(row["error"]):
                row["error"] = None
        if d["logits_error"] is not None and not math.isfinite(d["logits_error"]):
            d["logits_error"] = None
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=list)

    def to_markdown(self) -> str:
        verdict = "conforms" if self.conforms else "does NOT conform"
        out = [
            f"# Conformance of {self.model}",
            "",
            f"**{verdict}** to {self.description} ({self.framework}; checked in {self.seconds:.1f} s).",
            "",
        ]
        if self.diagnoses:
            out += ["## Diagnosis", ""] + [f"- {d.sentence}" for d in self.diagnoses] + [""]
        if self.inferred or self.notes:
            out += ["## Configuration", ""] + [f"- {n}" for n in self.inferred + self.notes] + [""]
        out += [
            "## Structure",
            "",
            f"- trainable parameters: {self.params_model:,} (spec {self.params_spec:,})",
            "- parameters by order and shape: "
            + (f"first mismatch at {self.first_param_mismatch}" if self.first_param_mismatch else "all match"),
            "- output shapes: "
            + (f"first mismatch at {self.first_shape_mismatch}" if self.first_shape_mismatch else "all match"),
        ]
        if self.run_error:
            out.append(f"- the model raised {self.run_error}")
        out += ["", "| canonical | spec shape | model's parameter | shape | |", "|---|---|---|---|---|"]
        for r in self.params:
            mark = "ok" if r.ok else "**differs**"
            out.append(
                f"| {r.canonical or '-'} | {_shape(r.spec_shape)} | {r.name or '-'} | {_shape(r.shape)} | {mark} |"
            )
        out += ["", "## Layers", ""]
        if self.logits_error is None:
            out.append("Numerics not compared: " + ("the structure differs." if not self.structure_ok else "no run."))
        else:
            within = "within" if self.logits_error <= TOLERANCE else "**outside**"
            out.append(
                f"Logits on {self.images} real Fashion-MNIST test images against {self.reference}, the same "
                f"weights: relative error {self.logits_error:.2e}, {within} {TOLERANCE:g}."
                + (f" First diverging layer: **{self.first_divergence}**." if self.first_divergence else "")
                + (" Two runs on the same images differ." if self.deterministic is False else "")
            )
        out += [
            "",
            "| canonical | kind | spec shape (NCHW) | model's layer | shape | rel. error |",
            "|---|---|---|---|---|---|",
        ]
        for row in self.layers:
            err = "" if row.error is None else ("inf" if not math.isfinite(row.error) else f"{row.error:.1e}")
            out.append(
                f"| {row.canonical} | {row.kind} | {_shape(row.spec_shape)} | {row.name or '-'} | {_shape(row.shape)} "
                f"| {err} |"
            )
        return "\n".join(out) + "\n"

    def summary(self) -> str:
        """Two or three lines for the terminal."""
        verdict = "conforms" if self.conforms else "does NOT conform"
        line = f"{self.model}: {verdict} to {self.description}"
        if self.logits_error is not None:
            line += f" (logits vs {self.reference}: {self.logits_error:.1e})"
        return "\n".join([line, *(f"  - {d.sentence}" for d in self.diagnoses)])


def _shape(shape) -> str:
    return "-" if shape is None else "×".join(map(str, shape))


def write_report(report: Report, folder: str | os.PathLike) -> list[Path]:
    """``conformance.md`` and ``conformance.json`` in ``folder`` (created)."""
    from .weights import atomic_write

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file; give a folder for the report ({arg('out')})")
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / REPORT_FILES[0], folder / REPORT_FILES[1]]
    atomic_write(paths[0], lambda f: f.write(report.to_markdown().encode()))
    atomic_write(paths[1], lambda f: f.write(report.to_json().encode()))
    return paths


# --- the adapters: which framework holds the model ----------------------------------------------------------------


def _adapter(name: str):
    """The ``conform`` module of backend ``name`` (``torch``, ``tf``, ``mxnet``), or this module's ONNX part."""
    if name == "onnx":
        return sys.modules[__name__]
    from .backends import BACKENDS, require

    require(name)
    return importlib.import_module(f"{BACKENDS[name].package}.conform")


_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def framework_of(model) -> str:
    """Which adapter reads ``model``: a path (``*.onnx``, ``*.keras``, ``*-symbol.json``), ``module:factory``
    (PyTorch), or a network object of one of the three frameworks."""
    if isinstance(model, (str, os.PathLike)):
        text = str(model)
        if text.endswith(".onnx"):
            return "onnx"
        if text.endswith(".keras"):
            return "tf"
        if text.endswith(("-symbol.json", ".params")):
            return "mxnet"
        if _FACTORY.match(text) and not Path(text).exists():
            return "torch"
        raise ConfigError(
            f"cannot tell what {text} is: give an ONNX file (*.onnx), a Keras model (*.keras), an MXNet Gluon "
            f"export (*-symbol.json beside its *.params) or a PyTorch factory as module.path:function"
        )
    roots = {c.__module__.split(".")[0] for c in type(model).__mro__}
    for root, name in (("torch", "torch"), ("keras", "tf"), ("tensorflow", "tf"), ("mxnet", "mxnet")):
        if root in roots:
            return name
    raise ConfigError(
        f"a {type(model).__name__} is no model this can check: give a torch.nn.Module, a keras.Model, an MXNet "
        f"Gluon block, or a path"
    )


# --- ONNX: the graph, its initializers and its intermediate values -------------------------------------------------

_ONNX_KINDS = {
    "Conv": "conv",
    "BatchNormalization": "bn",
    "Relu": "relu",
    "LRN": "lrn",
    "MaxPool": "pool",
    "Flatten": "flatten",
    "Gemm": "linear",
    "MatMul": "linear",
    "Dropout": "dropout",
}


class OnnxGraph:
    """A user's ONNX model: the graph (weights replaceable), where each weight sits, and sessions to run it."""

    def __init__(self, path: Path):
        from .interchange import read_onnx, require

        onnx = require("onnx", "reading .onnx models")
        if not path.is_file():
            raise InputError(no_file(path, "model file"))
        self.model = read_onnx(path)
        try:
            onnx.checker.check_model(self.model)
        except (ValueError, RuntimeError, onnx.checker.ValidationError) as e:
            raise WeightsError(f"{path} fails ONNX's checker ({failure(e)}); it is damaged") from None
        self.path = path
        self.notes: list[str] = []
        graph = self.model.graph
        self.inits = {i.name: i for i in graph.initializer}
        inputs = [i for i in graph.input if i.name not in self.inits]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise InputError(
                f"{path} has {len(inputs)} inputs and {len(graph.output)} outputs; a classifier has one of each"
            )
        self.input = inputs[0].name
        self.dims = [d.dim_param or d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.flat_hwc = self._flattens_hwc()
        self.unshared = self._unshare_constants()
        self.added = self._add_zero_biases()
        self.params = self._params()

    def _const(self, name: str):
        if name in self.inits:
            return name
        node = self.producer.get(name)  # a weight passed through Identity (or a Transpose of one, for MatMul)
        if node is not None and node.op_type == "Identity" and node.input[0] in self.inits:
            return node.input[0]
        return None

    def _unshare_constants(self) -> int:
        """Give each layer its own copy of a weight that several layers share where it is one constant value:
        exporters store equal tensors once (PyTorch's keeps one all-zero tensor for every zero bias, reached
        through Identity nodes), while every layer of the network has weights of its own. A shared tensor of
        varied values (weights a port really ties) stays shared, and the check then finds the layers differ."""
        from onnx import numpy_helper

        seen: set[str] = set()
        copies = 0
        for node in self.model.graph.node:
            if node.op_type not in ("Conv", "BatchNormalization", "Gemm", "MatMul", "Add"):
                continue
            for k, name in enumerate(node.input):
                const = self._const(name) if k > 0 or node.op_type == "Add" else None
                if const is None:
                    continue
                if const not in seen:
                    seen.add(const)
                    continue
                array = numpy_helper.to_array(self.inits[const])
                if array.size and not (array == array.flat[0]).all():
                    continue
                copy = f"{const}.copy{copies}"
                self.model.graph.initializer.append(numpy_helper.from_array(array.copy(), copy))
                self.inits[copy] = self.model.graph.initializer[-1]
                node.input[k] = copy
                copies += 1
        return copies

    def _add_zero_biases(self) -> int:
        """Give every Conv and Gemm without a bias input an explicit zero bias (an initializer of its own): exporters
        drop biases that are zero (PyTorch's ``RemoveOptionalBiasFromConv``), and the canonical weights have one."""
        from onnx import helper, numpy_helper

        added = 0
        for node in self.model.graph.node:
            if node.op_type not in ("Conv", "Gemm") or len(node.input) > 2 or len(node.input) < 2:
                continue
            weight = self._const(node.input[1])
            if weight is None:
                continue
            dims = list(self.inits[weight].dims)
            trans_b = any(a.name == "transB" and helper.get_attribute_value(a) for a in node.attribute)
            width = dims[0] if node.op_type == "Conv" or trans_b else dims[1]
            name = f"{weight}.zero_bias"
            init = numpy_helper.from_array(np.zeros(width, np.float32), name)
            self.model.graph.initializer.append(init)
            self.inits[name] = self.model.graph.initializer[-1]
            node.input.append(name)
            added += 1
        return added

    def _params(self) -> list[tuple[str, str, str]]:
        """(initializer, role, layout) of every weight in node order: conv, bn (weight bias running_mean
        running_var), dense (``dense``: (in, out); ``canonical``: (out, in))."""
        from onnx import helper

        out = []
        for node in self.model.graph.node:
            ins = [self._const(i) for i in node.input]
            if node.op_type == "Conv" and ins[1:2] and ins[1]:
                out += [(ins[1], "weight", "canonical")] + (
                    [(ins[2], "bias", "canonical")] if len(ins) > 2 and ins[2] else []
                )
            elif node.op_type == "BatchNormalization" and all(ins[1:5]):
                out += [
                    (n, role, "canonical") for n, role in zip(ins[1:5], ("weight", "bias", *STATISTICS), strict=True)
                ]
            elif node.op_type == "Gemm" and ins[1]:
                attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
                out.append((ins[1], "weight", "canonical" if attrs.get("transB", 0) else "dense"))
                if len(ins) > 2 and ins[2]:
                    out.append((ins[2], "bias", "canonical"))
            elif node.op_type == "MatMul" and ins[1]:
                out.append((ins[1], "weight", "dense"))
                add = [c for c in self.consumers.get(node.output[0], []) if c.op_type == "Add"]
                bias = [self._const(i) for i in add[0].input if i != node.output[0]] if add else []
                if bias and bias[0]:
                    out.append((bias[0], "bias", "canonical"))
        return out

    def _flattens_hwc(self) -> bool:
        """True where the first dense layer's features pass a channels-last Transpose on their way from a map."""
        for node in self.model.graph.node:
            if node.op_type in ("Flatten", "Reshape"):
                source = self.producer.get(node.input[0])
                if source is not None and source.op_type == "Transpose":
                    perm = next((list(a.ints) for a in source.attribute if a.name == "perm"), [])
                    return perm == [0, 2, 3, 1]
                return False
        return False

    def layout(self) -> str:
        if (
            len(self.dims) == 4
            and isinstance(self.dims[3], int)
            and self.dims[3] in (1, 3)
            and self.dims[1] != self.dims[3]
        ):
            return "NHWC" if self.dims[1] == self.dims[2] else "NCHW"
        return "NCHW"


def _onnx_array(init) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(init)


def open_model(source):
    """An ONNX file, read and checked (what ``vgg_*.conform.open_model`` is for the frameworks)."""
    graph = OnnxGraph(Path(source))
    if graph.unshared:
        graph.notes.append(
            f"{graph.unshared} weights the graph stored once for several layers (equal constants, as exporters "
            f"store them) were given a copy per layer"
        )
    if graph.added:
        graph.notes.append(
            f"{graph.added} biases absent from the graph (zero, dropped by the exporter) were added as zeros"
        )
    return graph


def model_parameters(graph: OnnxGraph) -> list[Param]:
    out = []
    for name, role, layout in graph.params:
        shape = tuple(int(d) for d in graph.inits[name].dims)
        shape = shape[::-1] if layout == "dense" else shape
        out.append(Param(name, shape, role not in STATISTICS, None))
    return out


def declared_input(graph: OnnxGraph) -> tuple[int, int, int] | None:
    dims = graph.dims
    if len(dims) != 4 or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
        return None
    c, h, w = (dims[3], dims[1], dims[2]) if graph.layout() == "NHWC" else (dims[1], dims[2], dims[3])
    return (int(c), int(h), int(w)) if h == w else None


def input_layout(graph: OnnxGraph) -> str | None:
    return graph.layout()


def has_lrn(graph: OnnxGraph) -> bool:
    return any(n.op_type == "LRN" for n in graph.model.graph.node)


def load_parameters(graph: OnnxGraph, arrays: dict[str, np.ndarray], config: NetConfig) -> list[str]:
    """Replace the weights by canonical arrays (user name -> array); returns notes on how they were laid out."""
    from onnx import numpy_helper

    notes, first_dense = list(graph.notes), True
    for name, role, layout in graph.params:
        array = arrays[name]
        if layout == "dense" and role == "weight":
            array = from_canonical(array, "flat" if first_dense and graph.flat_hwc else "dense", config)
            if first_dense and graph.flat_hwc:
                notes.append("the graph flattens in H,W,C order (channels last): fc1 was loaded with its rows permuted")
            first_dense = False
        elif layout == "canonical" and role == "weight" and array.ndim == 2:
            first_dense = False
        old = graph.inits[name]
        new = numpy_helper.from_array(np.ascontiguousarray(array.astype(np.float32)), name)
        old.CopyFrom(new)
    return notes


def trace_model(graph: OnnxGraph, x: np.ndarray) -> Trace:
    """Run with every node's output added as a graph output (an in-memory copy): the logits and the layer events."""
    from .interchange import require

    onnx = require("onnx", "reading .onnx models")
    ort = require("onnxruntime", "running .onnx models")
    model = onnx.ModelProto()
    model.CopyFrom(graph.model)
    final = model.graph.output[0].name
    wanted, events_of = [], []
    for node in model.graph.node:
        kind = _ONNX_KINDS.get(node.op_type)
        if kind is None or not node.output:
            continue
        out = node.output[0]
        if node.op_type == "MatMul":  # its bias is the Add after it
            add = [c for c in graph.consumers.get(out, []) if c.op_type == "Add"]
            out = add[0].output[0] if add else out
        if node.op_type == "Dropout" and len(node.output) > 1:
            out = node.output[0]
        wanted.append(out)
        events_of.append((node.name or out, kind, out))
    known = {o.name for o in model.graph.output}
    for name in dict.fromkeys(wanted):
        if name not in known:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every node's output
    fixed = graph.dims[0] if graph.dims and isinstance(graph.dims[0], int) and graph.dims[0] > 0 else len(x)
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        runs = []
        for start in range(0, len(x), fixed):  # a graph exported for a fixed batch runs the images in such batches
            chunk = x[start : start + fixed]
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - len(chunk), axis=0)])
            runs.append([v[: len(chunk)] for v in session.run(names, {graph.input: np.ascontiguousarray(padded)})])
        values = {n: np.concatenate([r[i] for r in runs]) for i, n in enumerate(names)}
    except Exception as e:  # onnxruntime's own error types are not exported
        return Trace(None, [], failure(e))
    events = [Event(name, kind, values[out], tuple(values[out].shape)) for name, kind, out in events_of]
    return Trace(values[final], events, None)


# --- the check ---------------------------------------------------------------------------------------------------


def _given(config: NetConfig | None, options: dict[str, Any]) -> dict[str, Any]:
    if config is not None:
        if options:
            raise ConfigError("give either a configuration or its arguments, not both")
        d = config.to_dict()
        if isinstance(config, AlexNetConfig):
            return {k: d[k] for k in ("arch", "in_channels", "num_classes", "input_size")}
        return {**config.vgg_kwargs()}
    unknown = [k for k in options if k not in GIVEN]
    if unknown:
        raise ConfigError(f"conform takes {', '.join(GIVEN)}; not {', '.join(unknown)}")
    return {k: v for k, v in options.items() if v is not None}


def _trace_any(adapter, model, x_nchw: np.ndarray, layout: str | None) -> tuple[Trace, str]:
    """Run the model on the images in its layout; an unknown layout is tried NCHW, then channels-last."""
    if layout != "NHWC":
        trace = adapter.trace_model(model, x_nchw)
        if trace.error is None or layout == "NCHW" or trace.events:
            return trace, "NCHW"
        other = adapter.trace_model(model, np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1)))
        return (other, "NHWC") if other.error is None else (trace, "NCHW")
    return adapter.trace_model(model, np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))), "NHWC"


def _shape_diagnosis(
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


def _numeric_diagnosis(
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


def _same(a: np.ndarray | None, b: np.ndarray) -> bool:
    return a is not None and bool(np.array_equal(a, b, equal_nan=True))


def _init_diagnosis(params: list[Param]) -> Diagnosis | None:
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


def conform(
    model,
    config: NetConfig | None = None,
    *,
    reference: str = "torch",
    seed: int = 0,
    images: int = 4,
    data_dir=None,
    **options,
) -> Report:
    """Check a user's VGG or AlexNet against the spec and a reference backend; see the module's docstring.

    ``model``: a path (``*.onnx``, ``*.keras``, ``*-symbol.json``), a PyTorch factory ``module.path:function``,
    or a network object; ``config`` or the configuration's arguments (``arch``, ``in_channels``, ``num_classes``,
    ``input_size``, ``ratio``, ``fc_hidden``, ``batch_norm``), the rest inferred from the parameter shapes.
    ``reference``: the backend that runs the same weights. Returns the :class:`Report`; bad input raises.
    """
    import time

    from .backends import BACKENDS, get_backend

    started = time.perf_counter()
    if reference not in BACKENDS:
        raise ConfigError(f"unknown reference {reference!r}; choose from {', '.join(BACKENDS)}")
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ConfigError(f"{arg('images')} must be a positive whole number, got {images!r}")
    given = _given(config, options)
    name = framework_of(model)
    adapter = _adapter(name)
    what = str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__
    native = adapter.open_model(model)
    params = adapter.model_parameters(native)
    notes: list[str] = []
    if any(p.shape is None for p in params):  # lazy layers: one run on the given (or the book's) input sets them
        c, s = given.get("in_channels", 1), given.get("input_size", 224)
        adapter.trace_model(native, np.zeros((1, c, s, s), np.float32))
        params = adapter.model_parameters(native)
        notes.append(f"lazy layers were materialised by one run on a 1x{c}x{s}x{s} input")
        if any(p.shape is None for p in params):
            raise ConfigError(
                f"{what} keeps lazy parameters after a run on 1x{c}x{s}x{s} input: pass "
                f"{arg('in_channels')} and {arg('input_size')}"
            )
    config, inferred = infer_config(params, given, adapter.declared_input(native), adapter.has_lrn(native), what)
    _check_room(config, images, what)
    sp = spec(config)
    plan = plan_layers(config)
    report = Report(
        model=what,
        framework={"onnx": "ONNX Runtime", **{k: b.label for k, b in BACKENDS.items()}}[name],
        config=config.to_dict(),
        description=config.describe(),
        inferred=inferred,
        notes=notes,
        params_spec=sp.params,
        params_model=sum(int(np.prod(p.shape)) for p in params if p.trainable and p.shape),
        reference=BACKENDS[reference].label,
    )
    rows, mapping, bare = match_params(params, config)
    report.params = rows
    report.first_param_mismatch = next(
        (
            f"{r.canonical or '(none)'} (spec {_shape(r.spec_shape)}, model's {r.name or '(none)'} {_shape(r.shape)})"
            for r in rows
            if not r.ok
        ),
        None,
    )
    if bare:  # batch norms without running statistics
        report.diagnoses.append(Diagnosis.of("bn_batch_stats", bare[0]))
    x = probe_images(config, images, data_dir)
    weights = probe_weights(config, seed, probe_images(config, 4, data_dir, start=images))
    report.images = len(x)
    if mapping is not None:
        notes += adapter.load_parameters(native, {n: weights[c] for n, c in mapping.items()}, config) or []
    trace, layout = _trace_any(adapter, native, x, adapter.input_layout(native))
    if layout == "NHWC":
        notes.append("the model takes channels-last (N,H,W,C) images: it was given them so")
    report.run_error = trace.error
    if trace.error:
        last = trace.events[-1].name if trace.events else None
        report.run_error = f"{trace.error}" + (f" (after its layer {last})" if last else " (before any layer)")
    # the shape trace, aligned with the spec
    kinds = [layer.kind for layer in sp.layers]
    matched = align(kinds, trace.events)
    outputs: dict[int, np.ndarray] = {}
    for k, layer in enumerate(sp.layers):
        row = LayerRow(layer.name, layer.kind, layer.shape)
        if k in matched:
            event = trace.events[matched[k]]
            row.name, row.shape = event.name, event.shape
            if event.output is not None:
                outputs[k] = event.output
        report.layers.append(row)
    start_shape = (config.in_channels, config.input_size, config.input_size)
    bad_shape = next(
        (k for k, r in enumerate(report.layers) if r.shape is not None and tuple(r.shape[1:]) != r.spec_shape), None
    )
    if bad_shape is not None:
        bad = report.layers[bad_shape]
        report.first_shape_mismatch = (
            f"{bad.canonical} (spec {_shape(bad.spec_shape)}, model's {bad.name} {_shape((bad.shape or ())[1:])})"
        )
        found = _shape_diagnosis(plan, report.layers, start_shape, bad_shape)
        if found:
            report.diagnoses.append(found)
    elif trace.error and trace.events:  # it raised where its shapes still agreed: name the next layer
        after = max(matched, default=-1) + 1
        report.first_shape_mismatch = f"{sp.layers[after].name if after < len(sp.layers) else 'the output'} (raised)"
    if mapping is None or trace.error or bad_shape is not None:
        report.seconds = time.perf_counter() - started
        return report
    # numerics: the same weights in the reference backend
    ref_adapter = _adapter(reference)
    b = get_backend(reference)
    ref_net = b.import_weights(b.from_config(config), weights)
    ref_trace, _ = _trace_any(ref_adapter, ref_adapter.open_model(ref_net), x, "NHWC" if reference == "tf" else "NCHW")
    if ref_trace.error or ref_trace.logits is None:
        raise VGGError(f"the reference {BACKENDS[reference].label} failed on the same input: {ref_trace.error}")
    ref_matched = align(kinds, ref_trace.events)
    reference_out = {k: ref_trace.events[e].output for k, e in ref_matched.items()}
    report.logits_error = rel_error(np.asarray(trace.logits), np.asarray(ref_trace.logits))
    for k, row in enumerate(report.layers):
        if k in outputs and reference_out.get(k) is not None:
            row.error = rel_error(outputs[k], reference_out[k])
    again, _ = _trace_any(adapter, native, x, layout)
    report.deterministic = again.error is None and _same(np.asarray(again.logits), np.asarray(trace.logits))
    broken = next((k for k in sorted(outputs) if not np.isfinite(outputs[k]).all()), None)
    finite = broken is None and bool(np.isfinite(np.asarray(trace.logits)).all())
    if not finite:  # named where it starts: the first layer of any kind, the model's own name where the spec has none
        spec_of = {e: k for k, e in matched.items()}
        first = next(
            (e for e, ev in enumerate(trace.events) if ev.output is not None and not np.isfinite(ev.output).all()), None
        )
        report.first_divergence = sp.layers[broken].name if broken is not None else "the logits"
        where = (
            "logits"
            if first is None
            else (sp.layers[spec_of[first]].name if first in spec_of else f"the model's {trace.events[first].name}")
        )
        report.diagnoses.append(Diagnosis.of("non_finite", where))
    elif not report.deterministic:
        changed: int | None = None
        if len(again.events) == len(trace.events):
            changed = next((k for k in sorted(outputs) if not _same(again.events[matched[k]].output, outputs[k])), None)
        random = sp.layers[changed].name if changed is not None else None
        dropout = next((n for n, p in plan[: (changed or len(plan) - 1) + 1][::-1] if p.kind == "dropout"), None)
        report.diagnoses.append(Diagnosis.of("dropout_eval", dropout or random or "a layer"))
        report.first_divergence = random
    if report.logits_error > TOLERANCE and report.deterministic and finite:
        j = next((k for k, r in enumerate(report.layers) if r.error is not None and r.error > TOLERANCE), None)
        if j is not None:
            report.first_divergence = report.layers[j].canonical
            found = _numeric_diagnosis(plan, report.layers, outputs, weights, x, j)
            if found is not None and found.pitfall == "no_relu":  # untraced, but it is the layer that differs
                report.first_divergence = found.layer
            report.diagnoses.append(
                found
                or Diagnosis(
                    "unknown",
                    report.layers[j].canonical,
                    f"{report.layers[j].canonical} differs from the spec (relative error {report.layers[j].error:.1e}) "
                    f"and no known pitfall explains it: compare that layer's code with the spec's",
                )
            )
        else:
            report.first_divergence = "the logits"
            report.diagnoses.append(
                Diagnosis(
                    "unknown",
                    "logits",
                    "every traced layer agrees but the logits do not: look at what the "
                    "model computes after its last traced layer",
                )
            )
    init = _init_diagnosis(params)
    if init:
        report.diagnoses.append(init)
    report.diagnoses = list({(d.pitfall, d.layer): d for d in report.diagnoses}.values())
    report.seconds = time.perf_counter() - started
    return report
