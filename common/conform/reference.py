"""The NumPy reference computation of the spec's layers, with the pitfalls as switches, and the probe inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..arch import (
    BN_EPSILON,
    LRN,
    LayerPlan,
    NetConfig,
    net_plan,
)
from ..data import load_fashion_mnist, resize_images
from ..spec import spec
from ..weights import xavier_init


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

    data = load_fashion_mnist(data_dir)
    images = resize_images(data.test_images[start : start + count].astype(np.float32) / 255, config.input_size)
    x = np.ascontiguousarray(images[:, None], dtype=np.float32)
    return np.ascontiguousarray(np.repeat(x, config.in_channels, axis=1))


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
    return [
        (f"{group}.{p.name}" if isinstance(plan, list) else group, p)
        for group, plan in net_plan(config)
        for p in (plan if isinstance(plan, list) else [plan])
    ]


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
