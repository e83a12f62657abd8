"""The analytic table every backend is held to, computed from a configuration alone.

For each layer: its canonical name, its NCHW output shape, trainable parameters, non-trainable
buffers (batch-norm running statistics), multiply-accumulates per example, and the side of its
receptive field in input pixels (three stacked 3x3 convolutions see 7x7).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arch import LayerPlan, NetConfig, make_config, net_plan, side_after
from .errors import ConfigError


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
