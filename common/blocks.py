"""The book's hand-written blocks, framework-free: what every backend's ``blocks.py`` builds and must compute.

*Dive into Deep Learning*, "Layers and Modules" (``MySequential``, ``FixedHiddenMLP``) and "Parameter
Management" (tied parameters). This module holds the parts the three frameworks share: the constant weight of
``FixedHiddenMLP`` (one seeded NumPy draw, so all three hold the same numbers), a float64 reference of what
``FixedHiddenMLP`` computes, and the layer plan of the tied MLP with its canonical names.
"""

from __future__ import annotations

import numpy as np

from .arch import LayerPlan, VGGConfig, positive_int
from .errors import ConfigError, arg
from .recipe import check_seed

MLP_WIDTH = 20  # FixedHiddenMLP's width: the book's input is rand(2, 20)
SECOND_USE = "shared2"  # the tied MLP's second use of ``shared``; a layer of its own only when untied


def fixed_weight(seed: int = 0) -> np.ndarray:
    """FixedHiddenMLP's constant (20, 20) weight: uniform in [0, 1) like the book's ``torch.rand``, seeded."""
    return np.random.default_rng(check_seed(seed)).random((MLP_WIDTH, MLP_WIDTH), dtype=np.float32)


def fixed_hidden_mlp(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray, rand_weight: np.ndarray
) -> tuple[float, dict[str, np.ndarray]]:
    """FixedHiddenMLP's output for ``x`` in float64, and the gradient of its dense layer (both uses summed).

    ``weight`` is canonical (out, in). Forward: ``h = relu(linear(x) @ rand_weight + 1)``, ``y = linear(h)``,
    halve ``y`` while ``|y|.sum() > 1``, return ``y.sum()``. The halvings only scale the output, so the
    gradient flows back through both uses of ``linear`` times the same factor.
    """
    x, w, b, r = (np.asarray(a, np.float64) for a in (x, weight, bias, rand_weight))
    first = x @ w.T + b
    pre = first @ r + 1
    hidden = np.maximum(pre, 0)
    y = hidden @ w.T + b
    scale = 1.0
    while np.abs(y * scale).sum() > 1:
        scale /= 2
    grad_y = np.full_like(y, scale)  # d(sum(scale * y)) / dy
    grad_first = ((grad_y @ w) * (pre > 0)) @ r.T  # back through relu(first @ r + 1)
    return float((y * scale).sum()), {
        "linear.weight": grad_y.T @ hidden + grad_first.T @ x,
        "linear.bias": grad_y.sum(0) + grad_first.sum(0),
    }


def tied_plan(in_features: int, hidden: int, out_features: int, tied: bool) -> list[LayerPlan]:
    """The book's tied MLP: fc1, relu1, shared, relu2, shared again (``shared2``), relu3, fc2.

    Every backend builds the plan's layers, except that when ``tied`` the ``shared2`` entry is ``shared``
    itself (the same layer, or one holding its parameters), so the network has no ``shared2.*`` parameters.
    """
    in_features = positive_int(in_features, "in_features")
    hidden = positive_int(hidden, "hidden")
    out_features = positive_int(out_features, "out_features")
    if not isinstance(tied, bool):
        raise ConfigError(f"{arg('tied')} must be True or False, got {tied!r}")
    return [
        LayerPlan("fc1", "linear", in_width=in_features, out_width=hidden),
        LayerPlan("relu1", "relu"),
        LayerPlan("shared", "linear", in_width=hidden, out_width=hidden),
        LayerPlan("relu2", "relu"),
        LayerPlan(SECOND_USE, "linear", in_width=hidden, out_width=hidden),
        LayerPlan("relu3", "relu"),
        LayerPlan("fc2", "linear", in_width=hidden, out_width=out_features),
    ]


def check_config(config) -> VGGConfig:
    """``hand_vgg``'s argument: a :class:`VGGConfig`, e.g. ``vgg(...).config`` or ``make_config(...)``."""
    if not isinstance(config, VGGConfig):
        raise ConfigError(
            f"hand_vgg takes a VGGConfig (a network's .config, or common.arch.make_config(...)), "
            f"got {type(config).__name__}"
        )
    return config
