"""The analytic table every backend is held to, computed from a configuration alone.

For each layer: its canonical name, its NCHW output shape, trainable parameters, non-trainable
buffers (batch-norm running statistics), multiply-accumulates per example, and the side of its
receptive field in input pixels (three stacked 3x3 convolutions see 7x7).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .arch import (
    ALEXNET_MIN_SIZE,
    CONFIGS,
    MAX_INT,
    AlexNetConfig,
    LayerPlan,
    NetConfig,
    VGGConfig,
    as_config,
    make_alexnet_config,
    make_config,
    net_plan,
    side_after,
)
from .errors import ConfigError, arg


@dataclass(frozen=True)
class Layer:
    name: str  # canonical, e.g. "block1.conv1" or "fc1"
    kind: str  # conv, bn, relu, lrn, pool, flatten, linear, dropout
    # the top-level layer it belongs to: "block1", ..., "flatten", "fc1", ... (AlexNet: its own names)
    group: str
    shape: tuple[int, ...]  # output shape of one example, NCHW without N
    params: int
    buffers: int
    macs: int
    rf: int | None  # receptive field side in input pixels; None once flattened (all of it)
    param_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (suffix, canonical shape)


@dataclass(frozen=True)
class Spec:
    config: NetConfig
    layers: tuple[Layer, ...]

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def buffers(self) -> int:
        return sum(layer.buffers for layer in self.layers)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one forward pass of one example."""
        return sum(layer.macs for layer in self.layers)

    @property
    def train_flops(self) -> int:
        """FLOPs of one forward and backward pass of one example (backward ~ 2x forward)."""
        return 6 * self.macs

    def groups(self) -> list[str]:
        """Top-level layer names, in order: block1..blockN, flatten, fc1, relu1, ..., fc3."""
        out: list[str] = []
        for layer in self.layers:
            if not out or out[-1] != layer.group:
                out.append(layer.group)
        return out

    def trace(self, batch: int = 1) -> list[tuple[str, tuple[int, ...]]]:
        """The book's output-shape trace: (top-level layer, NCHW output shape) for each top-level layer."""
        last = {layer.group: layer for layer in self.layers}
        return [(g, (batch, *last[g].shape)) for g in self.groups()]

    def group_rows(self) -> list[dict]:
        """One row per top-level layer: output shape, parameters, buffers, MACs, receptive field."""
        rows = []
        for g in self.groups():
            members = [layer for layer in self.layers if layer.group == g]
            rows.append(
                {
                    "name": g,
                    "shape": members[-1].shape,
                    "params": sum(m.params for m in members),
                    "buffers": sum(m.buffers for m in members),
                    "macs": sum(m.macs for m in members),
                    "rf": members[-1].rf,
                }
            )
        return rows

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Canonical parameter name -> canonical shape, in the network's order (batch-norm statistics included)."""
        return {f"{layer.name}.{suffix}": shape for layer in self.layers for suffix, shape in layer.param_shapes}


def _spec_layer(
    p: LayerPlan, full_name: str, group: str, shape: tuple[int, ...], rf: int, jump: int
) -> tuple[Layer, tuple[int, ...], int, int]:
    """One planned layer -> its spec row, and the (shape, receptive field, jump) after it.

    The receptive field is carried on through the head, but a row reports it only while the features are
    still a map (a shape of three sides): after ``flatten`` every unit sees the whole input.
    """
    if p.kind == "conv":
        k, side = p.kernel, side_after(shape[1], "conv", p.kernel, p.stride, p.padding)
        shape = (p.out_width, side, side)
        rf, jump = rf + (k - 1) * jump, jump * p.stride
        n = p.out_width * p.in_width * k * k
        return (
            Layer(
                full_name,
                "conv",
                group,
                shape,
                n + p.out_width,
                0,
                n * shape[1] * shape[2],
                rf,
                (("weight", (p.out_width, p.in_width, k, k)), ("bias", (p.out_width,))),
            ),
            shape,
            rf,
            jump,
        )
    if p.kind == "bn":
        c = (p.in_width,)
        return (
            Layer(
                full_name,
                "bn",
                group,
                shape,
                2 * p.in_width,
                2 * p.in_width,
                0,
                _reported(rf, shape),
                (("weight", c), ("bias", c), ("running_mean", c), ("running_var", c)),
            ),
            shape,
            rf,
            jump,
        )
    if p.kind == "pool":
        side = side_after(shape[1], "pool", p.kernel, p.stride, p.padding)
        rf, jump = rf + (p.kernel - 1) * jump, jump * p.stride
        shape = (shape[0], side, side)
    elif p.kind == "flatten":
        shape = (int(np.prod(shape)),)
    elif p.kind == "linear":
        n = p.out_width * p.in_width
        shape = (p.out_width,)
        return (
            Layer(
                full_name,
                "linear",
                group,
                shape,
                n + p.out_width,
                0,
                n,
                None,
                (("weight", (p.out_width, p.in_width)), ("bias", (p.out_width,))),
            ),
            shape,
            rf,
            jump,
        )
    return Layer(full_name, p.kind, group, shape, 0, 0, 0, _reported(rf, shape)), shape, rf, jump


def _reported(rf: int, shape: tuple[int, ...]) -> int | None:
    """The receptive field a spec row shows: None once the features are flattened."""
    return rf if len(shape) == 3 else None


def spec(config: NetConfig | None = None, **kwargs) -> Spec:
    """The analytic table for a configuration of either network (or for VGG's ``make_config(**kwargs)``)."""
    if config is None:
        config = make_config(**kwargs)
    elif kwargs:
        raise ConfigError("give either a VGGConfig or vgg() arguments, not both")
    layers: list[Layer] = []
    shape: tuple[int, ...] = (config.in_channels, config.input_size, config.input_size)
    rf, jump = 1, 1
    for group, plan in net_plan(config):
        for p in plan if isinstance(plan, list) else [plan]:
            name = f"{group}.{p.name}" if isinstance(plan, list) else group
            layer, shape, rf, jump = _spec_layer(p, name, group, shape, rf, jump)
            layers.append(layer)
    return Spec(config, tuple(layers))


# --- memory: what a configuration needs, refused before building where the machine cannot hold it ------------

BYTES_PER_VALUE = 4  # float32 weights, gradients and activations


def memory_needed(config: NetConfig, batch: int | None = None) -> int:
    """Bytes a network of ``config`` needs at least: its parameters and buffers (float32) to build it; with
    ``batch``, to train it: also a gradient per parameter and every layer's output for one batch of that size."""
    s = spec(config)
    values = s.params + s.buffers
    if batch is not None:
        side = config.input_size
        per_example = config.in_channels * side * side + sum(math.prod(layer.shape) for layer in s.layers)
        values += s.params + batch * per_example
    return values * BYTES_PER_VALUE


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (``MemAvailable`` of /proc/meminfo); None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def format_bytes(n: float) -> str:
    """``n`` bytes in the largest binary unit that keeps a whole part: ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _largest_fitting(need, low: int, high: int, available: int) -> int | None:
    """The largest value in [low, high] whose ``need(value)`` fits in ``available`` (need grows with it)."""
    if need(low) > available:
        return None
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if need(mid) <= available else (low, mid - 1)
    return low


def _what_to_lower(config: NetConfig, batch: int | None, available: int) -> str:
    """Advice on the one argument that lowers the need most: the batch, the input size, fc_hidden or the widths."""

    def need(c: NetConfig, b: int | None = batch) -> int:
        return memory_needed(c, b)

    if batch is not None and batch > 1 and need(config, 1) <= available:
        best = _largest_fitting(lambda b: need(config, b), 1, batch - 1, available)
        return f"lower {arg('batch_size')} ({arg('batch_size', best)} fits)"
    smallest = ALEXNET_MIN_SIZE if isinstance(config, AlexNetConfig) else 2 ** len(config.blocks)
    options: dict[str, int] = {"input_size": need(replace(config, input_size=smallest))}
    if isinstance(config, VGGConfig):
        options["fc_hidden"] = need(replace(config, fc_hidden=1))
        thin = tuple(replace(b, out_channels=1) for b in config.blocks)
        options["arch"] = need(replace(config, blocks=thin))
    field = min(options, key=options.__getitem__)  # the first of equals: the input size
    if field == "input_size":
        best = _largest_fitting(lambda v: need(replace(config, input_size=v)), smallest, config.input_size, available)
    elif field == "fc_hidden":
        assert isinstance(config, VGGConfig)
        best = _largest_fitting(lambda v: need(replace(config, fc_hidden=v)), 1, config.fc_hidden, available)
    elif isinstance(config, VGGConfig) and config.arch in CONFIGS:  # a named arch narrows by its ratio
        widest = min(b.out_channels for b in make_config(config.arch).blocks)

        def narrowed(r: int) -> int:  # need falls as the ratio grows: count the ratio down
            return need(make_config(**{**config.vgg_kwargs(), "ratio": widest - r + 1}))

        fit = _largest_fitting(narrowed, 1, widest, available) if config.ratio < widest else None
        ratio = None if fit is None else widest - fit + 1
        return f"narrow the blocks: raise {arg('ratio')}" + ("" if ratio is None else f" ({arg('ratio', ratio)} fits)")
    else:
        return f"narrow the blocks of {arg('arch')}"
    return f"lower {arg(field)}" + ("" if best is None else f" ({arg(field, best)} fits)")


def check_layer_sizes(config: NetConfig) -> None:
    """Refuse a network one of whose layer outputs holds more values per example than the frameworks index
    (:data:`common.arch.MAX_INT`: MXNet's sizes are 32-bit)."""
    side = config.input_size
    sizes = [(config.in_channels * side * side, "the input")]
    sizes += [(math.prod(layer.shape), layer.name) for layer in spec(config).layers]
    largest, name = max(sizes)
    if largest > MAX_INT:
        raise ConfigError(
            f"the network ({config.describe()}) has {largest:,} values per example in {name}, more than the "
            f"{MAX_INT:,} the frameworks can index in one tensor; lower {arg('input_size')}"
        )


def check_memory(config: NetConfig, batch: int | None = None, available: int | None = None) -> None:
    """Refuse, before anything is allocated, a network (``batch``: a training run) this machine cannot hold.

    The need is :func:`memory_needed`, a lower bound; ``available`` defaults to :func:`available_memory`,
    and where that is unknown (no /proc/meminfo) only :func:`check_layer_sizes` is checked.
    """
    available = available_memory() if available is None else available
    needed = 0 if available is None else memory_needed(config, batch)
    if available is None or needed <= available:  # (one too big for memory is first told which value fits)
        check_layer_sizes(config)
        return
    what = (
        "for its parameters"
        if batch is None
        else f"to train (parameters, gradients and the activations of a batch of {batch})"
    )
    raise ConfigError(
        f"the network ({config.describe()}) needs at least {format_bytes(needed)} of memory {what}, but "
        f"{format_bytes(available)} is available; {_what_to_lower(config, batch, available)}"
    )


def network_functions(build: Callable[[NetConfig], Any]) -> tuple[Callable, Callable, Callable]:
    """A backend's public ``from_config``, ``vgg`` and ``alexnet``, one signature each in every backend, made from
    its ``build(config)``: the framework's network of a configuration, Xavier-initialised."""

    def from_config(config: NetConfig | dict[str, Any]) -> Any:
        """The network of a configuration (VGG's or AlexNet's: ``net.config``, a saved one, or its ``to_dict()``
        record), Xavier-initialised."""
        config = as_config(config)
        check_memory(config)  # one that cannot fit in this machine's memory is refused before anything is allocated
        return build(config)

    def vgg(
        arch: str | Sequence[tuple[int, int]] = "vgg11",
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: int = 224,
        ratio: int = 1,
        fc_hidden: int = 4096,
        dropout: float = 0.5,
        batch_norm: bool = False,
    ) -> Any:
        """VGG (Simonyan & Zisserman, 2014) as in *Dive into Deep Learning*; ``arch`` is a name or a conv_arch."""
        config = make_config(arch, in_channels, num_classes, input_size, ratio, fc_hidden, dropout, batch_norm)
        return from_config(config)

    def alexnet(in_channels: int = 1, num_classes: int = 10, input_size: int = 224, dropout: float = 0.5) -> Any:
        """AlexNet (Krizhevsky et al., 2012) as in *Dive into Deep Learning*, the network VGG answers."""
        return from_config(make_alexnet_config(in_channels, num_classes, input_size, dropout))

    return from_config, vgg, alexnet
