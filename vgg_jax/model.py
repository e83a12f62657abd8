"""VGG and AlexNet in JAX with Flax (linen): built from the plan in ``common.arch``, held to ``common.spec``.

The book's JAX edition writes the network as Flax modules: ``nn.Conv``, ``nn.relu``, ``nn.max_pool`` with a 2x2
window and stride 2, in an ``nn.Sequential``, dropout deterministic outside training. A Flax module holds no
numbers; what this package calls a network is a :class:`Model`: the module with its variables (``params``, and
batch norm's ``batch_stats``) and its configuration. It computes in NHWC (Flax's layout, like Keras');
everything that leaves this package is canonical: ``layer_shapes`` reports NCHW, and weights cross in canonical
layouts (where each canonical weight lives in the variables, :func:`_variables`, is here, where the network is
initialised with them; ``vgg_jax.weights`` reads and writes through it).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, TypeAlias

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from common.arch import (
    BN_EPSILON,
    BN_MOMENTUM,
    LRN,
    LayerPlan,
    NetConfig,
    as_config,
    block_plan,
    check_block,
    check_trace_request,
    net_plan,
)
from common.data import check_batch
from common.errors import InputError
from common.report import summary_table
from common.spec import network_functions, spec
from common.weights import check_weights, from_canonical, xavier_init

# The types of the public API, under the same names in every backend: the network and the device. The network is
# a :class:`Model` (the Flax module with its variables), except ``vgg_block``'s bare Flax module, which holds no
# numbers: no one type says both.
Net: TypeAlias = Any
Device: TypeAlias = jax.Device

_XAVIER = nn.initializers.xavier_uniform()  # the recipe's (Glorot): Flax's default for Dense is LeCun-normal


def local_response_norm(x, size=LRN.size, alpha=LRN.alpha, beta=LRN.beta, k=LRN.k):
    """Local response normalisation across channels (the last axis), in the canonical (PyTorch's) convention:
    ``x / (k + alpha / size * sum(x^2 over size channels)) ** beta``, the window zero-padded at the ends."""
    channels = x.shape[-1]
    squares = jnp.pad(jnp.square(x), [(0, 0)] * (x.ndim - 1) + [(size // 2, (size - 1) // 2)])
    window = sum(squares[..., i : i + channels] for i in range(size))
    return x / (k + alpha / size * window) ** beta


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool(x, size: int = 2):
    """The book's ``nn.max_pool(x, window_shape=(size, size), strides=(size, size))``, with the gradient XLA's own
    would give, computed faster.

    XLA differentiates a max pool with ``select_and_scatter``, which on a CPU took 440 ms of a 1.15 s training
    step at ``vgg bench``'s defaults (2026-12-07). Where the windows do not overlap (stride = window, VGG's
    2x2/2), each input gets the gradient of at most one window, so the same gradient is an elementwise mask:
    each window's gradient goes to its first maximum in row-major order (``select_and_scatter``'s choice, and
    PyTorch's), rows and columns past the last whole window get none. The gradients are bit-identical
    (``tests/test_models.py``).
    """
    return nn.max_pool(x, window_shape=(size, size), strides=(size, size))


def _max_pool_forward(x, size):
    y = max_pool(x, size)
    return y, (x, y)


def _max_pool_backward(size, saved, dy):
    x, y = saved
    n, h, w, c = y.shape
    windows = x[:, : h * size, : w * size].reshape(n, h, size, w, size, c)
    peak = y[:, :, None, :, None, :]
    taken = jnp.zeros_like(peak, dtype=bool)  # a maximum found earlier in the window
    route = []
    for i, j in itertools.product(range(size), range(size)):
        here = (windows[:, :, i : i + 1, :, j : j + 1] == peak) & ~taken
        route.append(here)
        taken = taken | here
    first = jnp.concatenate(
        [jnp.concatenate(route[i * size : (i + 1) * size], axis=4) for i in range(size)], axis=2
    )  # (n, h, size, w, size, c): True at each window's first maximum
    dx = jnp.where(first, dy[:, :, None, :, None, :], 0).astype(x.dtype).reshape(n, h * size, w * size, c)
    return (jnp.pad(dx, ((0, 0), (0, x.shape[1] - h * size), (0, x.shape[2] - w * size), (0, 0))),)


max_pool.defvjp(_max_pool_forward, _max_pool_backward)


def flatten(x):
    """The book's ``lambda x: x.reshape((x.shape[0], -1))``: NHWC features in H, W, C order."""
    return x.reshape((x.shape[0], -1))


class Function(nn.Module):
    """A layer without parameters (``nn.relu``, ``nn.max_pool``, a reshape) as a module, under its plan name: the
    same function the book puts in its ``nn.Sequential``, named so that a trace can tell the layers apart."""

    fn: Callable

    def __call__(self, x, training=False):
        return self.fn(x)


def _layer(p: LayerPlan, training: bool | None = False, dtype: Any = jnp.float32):
    """The Flax layer for one planned layer, named as in the plan.

    ``training=None`` leaves dropout and batch norm to be told at call time (:func:`run`).
    """
    deterministic = None if training is None else not training
    if p.kind == "conv":
        pad = ((p.padding, p.padding), (p.padding, p.padding))
        return nn.Conv(
            p.out_width, (p.kernel, p.kernel), strides=(p.stride, p.stride), padding=pad,
            kernel_init=_XAVIER, bias_init=nn.initializers.zeros, dtype=dtype, name=p.name,
        )  # fmt: skip
    if p.kind == "bn":  # Flax's momentum weighs the old running statistic, as Keras'
        return nn.BatchNorm(
            use_running_average=deterministic, momentum=1 - BN_MOMENTUM, epsilon=BN_EPSILON, dtype=dtype, name=p.name
        )
    if p.kind == "relu":
        return Function(nn.relu, name=p.name)
    if p.kind == "lrn":
        return Function(local_response_norm, name=p.name)
    if p.kind == "pool":
        if p.kernel == p.stride:  # VGG's windows, side by side: the same pool with a faster gradient
            return Function(partial(max_pool, size=p.kernel), name=p.name)
        pool = partial(nn.max_pool, window_shape=(p.kernel, p.kernel), strides=(p.stride, p.stride))
        return Function(pool, name=p.name)  # AlexNet's overlapping 3x3/2 windows
    if p.kind == "flatten":
        return Function(flatten, name=p.name)
    if p.kind == "linear":
        return nn.Dense(p.out_width, kernel_init=_XAVIER, bias_init=nn.initializers.zeros, dtype=dtype, name=p.name)
    if p.kind == "dropout":
        return nn.Dropout(p.rate, deterministic=deterministic, name=p.name)
    raise AssertionError(f"no Flax layer for {p.kind!r}")


def run(layer, x, training: bool):
    """Apply a layer made with ``training=None``, telling dropout and batch norm which mode this is."""
    if isinstance(layer, nn.Dropout):
        return layer(x, deterministic=not training)
    if isinstance(layer, nn.BatchNorm):
        return layer(x, use_running_average=not training)
    if isinstance(layer, nn.Module) and not isinstance(layer, (nn.Conv, nn.Dense)):
        return layer(x, training)
    return layer(x)


class Block(nn.Module):
    """One block of the plan: its layers in the book's ``nn.Sequential``, named ``conv1``, ``relu1``, ...

    ``mask``: the examples of the batch that count (a boolean per example); batch norm takes its statistics over
    those alone (the padding of a data-parallel worker's slice counts for nothing: ``vgg_jax.train``).
    """

    plan: tuple
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, training=False, mask=None):
        layers = [_layer(p, training, self.dtype) for p in self.plan]
        if mask is None:
            return nn.Sequential(layers)(x)
        for layer in layers:  # the same layers, batch norm told which examples count
            if isinstance(layer, nn.BatchNorm):
                x = layer(x, mask=mask.reshape((-1,) + (1,) * (x.ndim - 1)))
            else:
                x = layer(x)
        return x


def vgg_block(num_convs: int, in_channels: int, out_channels: int, batch_norm: bool = False) -> Net:
    """The book's VGG block: ``num_convs`` 3x3 convolutions (padding 1) with ReLU, then a 2x2 max-pool.

    A Flax ``nn.Sequential`` (in evaluation mode); its variables come from its ``init``.
    """
    plan = block_plan(check_block(num_convs, in_channels, out_channels, batch_norm), in_channels, batch_norm)
    return nn.Sequential([_layer(p) for p in plan])


class VGG(nn.Module):
    """VGG or AlexNet as a Flax module: the blocks and head layers of ``config``'s plan, by their canonical names.

    ``__call__(x, training=False, trace=False, mask=None)``: NHWC images -> logits (float32); ``trace``: the output
    of each top-level layer, in order, instead; ``mask``: the examples batch norm takes its statistics over
    (:class:`Block`; None: all).
    """

    config: Any
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, training=False, trace=False, mask=None):
        x, outputs = x.astype(self.dtype), []
        for name, p in net_plan(self.config):
            layer = Block(tuple(p), self.dtype, name=name) if isinstance(p, list) else _layer(p, training, self.dtype)
            x = layer(x, training, mask) if isinstance(layer, Block) else layer(x)
            outputs.append(x)
        return outputs if trace else x.astype(jnp.promote_types(self.dtype, jnp.float32))


def rng_streams(rng):
    return {} if rng is None else {"dropout": rng}


def apply(module, variables, x, training=False, rng=None, mask=None):
    """``module`` on ``x``: (output, variables with batch norm's running statistics updated in training).

    ``mask``: in training, the examples batch norm takes its statistics over (a :class:`VGG` only; None: all).
    """
    if not training:
        return module.apply(variables, x, training=False), variables
    more = {} if mask is None else {"mask": mask}
    out, updates = module.apply(variables, x, training=True, rngs=rng_streams(rng), mutable=["batch_stats"], **more)
    return out, {**variables, **updates}


class Model:
    """A Flax module with its variables (and, for VGG and AlexNet, its configuration): a network of this package.

    Calling it checks the input against the configuration first (rank, channels, size, dtype; NHWC), so a
    mistake is one :class:`common.errors.InputError` that says what to change, not a shape error deep inside.
    ``net(x, training=True, rng=key)`` runs in training mode (dropout drawn from ``key``) and keeps the batch
    statistics it updates.
    """

    def __init__(self, module, variables, config=None, name=None):
        self.module, self.variables, self.config, self.name = module, dict(variables), config, name

    def __call__(self, x, training=False, rng=None):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise InputError(f"the input is a {type(x).__name__}; give a NumPy or JAX array (NHWC)")
        if self.config is not None:
            check_batch(self.config, x.shape, np.dtype(x.dtype).name, layout="NHWC", where="the input", framework="jax")
        if training and rng is None:
            rng = jax.random.PRNGKey(0)
        if not self.variables:  # layers sized by their first input, as in the book's lazy initialisation
            self.variables = dict(initialise(self.module, *x.shape, dtype=x.dtype))
        out, self.variables = apply(self.module, self.variables, jnp.asarray(x), training, rng)
        return out

    def __repr__(self):
        what = self.config.describe() if self.config is not None else type(self.module).__name__
        return f"{type(self).__name__}({what})"


_KEYS = itertools.count()  # each network built in this process draws its initial weights from its own key


def initialise(module, *shape, dtype=jnp.float32):
    """``module``'s variables for an input of ``shape`` (Flax's ``init``, compiled: run op by op it compiles every
    op on its own), drawn from the process's next key."""
    key = jax.random.PRNGKey(next(_KEYS))
    return jax.jit(module.init)({"params": key, "dropout": key}, jnp.zeros(shape, dtype))


# Flax's batch-norm variables under their canonical (PyTorch) names: (canonical, collection, Flax name)
_BN = (
    ("weight", "params", "scale"),
    ("bias", "params", "bias"),
    ("running_mean", "batch_stats", "mean"),
    ("running_var", "batch_stats", "var"),
)


def _order(module, keys):
    """``keys`` (a level of the variables) in the order the module uses them: JAX keeps a dict's keys sorted."""
    names = getattr(module, "names", None)  # a hand-made Sequential's layers, in order
    if names is None:
        return list(keys)
    return [n for n in dict.fromkeys(names) if n in keys]


def _sublayer(module, name):
    if getattr(module, "names", None) is None:
        return None
    return dict(zip(module.names, module.layers, strict=True))[name]


def _variables(net):
    """Canonical name -> (path in ``net.variables``, layout) in the network's order; the layout says how to convert.

    ``conv``: HWIO kernel; ``dense``: (in, out) kernel; ``flat``: the (in, out) kernel of the first dense layer of
    VGG and AlexNet, whose inputs arrive from the NHWC features in H,W,C order; ``None``: a vector.
    """
    found: dict[str, tuple[tuple[str, ...], str | None]] = {}

    def walk(params, path, module):
        for key in _order(module, params):
            sub, name, where = params[key], ".".join((*path, key)), (*path, key)
            if "kernel" in sub:
                layout = "conv" if len(sub["kernel"].shape) == 4 else "dense"
                found[f"{name}.weight"] = (("params", *where, "kernel"), layout)
                found[f"{name}.bias"] = (("params", *where, "bias"), None)
            elif "scale" in sub:
                for canonical, collection, flax_name in _BN:
                    found[f"{name}.{canonical}"] = ((collection, *where, flax_name), None)
            else:
                walk(sub, where, _sublayer(module, key))

    walk(net.variables.get("params", {}), (), net.module)
    if net.config is None:
        return found
    order = list(spec(net.config).param_shapes())  # canonical order; the first dense layer reads the NHWC features
    first_dense = next(n for n in order if n.endswith(".weight") and found[n][1] == "dense")
    found[first_dense] = (found[first_dense][0], "flat")
    return {n: found[n] for n in order}


def get(variables, path):
    for key in path:
        variables = variables[key]
    return variables


def put(variables, path, value):
    """Replace one leaf of a nested dict of variables, in place."""
    for key in path[:-1]:
        variables = variables[key]
    variables[path[-1]] = value


def _thawed(variables):
    """The variables as plain nested dicts, each level a new one (so a leaf can be replaced without touching
    another network's variables)."""
    return {k: _thawed(v) if isinstance(v, (dict, flax.core.FrozenDict)) else v for k, v in variables.items()}


def put_weights(net: Net, weights: Mapping[str, np.ndarray]) -> None:
    """Set ``net``'s variables from canonical arrays already checked (``common.weights.check_weights``), each
    converted to its Flax layout."""
    variables, places = _thawed(net.variables), _variables(net)
    for name, array in weights.items():
        path, layout = places[name]
        put(variables, path, jnp.asarray(from_canonical(array, layout, net.config)))
    net.variables = variables


def init_xavier(net: Net) -> None:
    """The recipe's Xavier-uniform weights drawn in NumPy (``common.weights.xavier_init``, no compilation) from
    the process's next seed."""
    put_weights(net, check_weights(net.config, xavier_init(net.config, next(_KEYS)), copy=False))


def _build(config):
    """The network Xavier-initialised: its variables' shapes as ``jax.eval_shape`` finds them, then
    :func:`init_xavier`."""
    net = abstract_network(config)
    init_xavier(net)
    return net


from_config, vgg, alexnet = network_functions(_build)


def abstract_variables(module, config):
    """The variables ``module`` has for ``config``'s input, as ``jax.eval_shape``'s abstract arrays (no memory)."""
    x = jax.ShapeDtypeStruct((1, config.input_size, config.input_size, config.in_channels), jnp.float32)
    key = jax.random.PRNGKey(0)
    return jax.eval_shape(lambda x: module.init({"params": key, "dropout": key}, x), x)


def abstract_network(config: NetConfig) -> Net:
    """The network of ``config`` with its layers and parameter shapes but no parameter memory, for shapes and
    counts only (``vgg summary``): its variables are ``jax.eval_shape``'s abstract arrays."""
    config = as_config(config)
    module = VGG(config)
    return Model(module, abstract_variables(module, config), config)


def layer_shapes(net: Net, input_size: int, in_channels: int = 1, batch: int = 1) -> list[tuple[str, tuple[int, ...]]]:
    """(top-level layer, NCHW output shape) for each block and head layer, traced by ``jax.eval_shape``."""
    size = check_trace_request(net.config, input_size, in_channels, batch)
    x = jax.ShapeDtypeStruct((batch, size, size, in_channels), jnp.float32)
    outputs = jax.eval_shape(lambda v, x: net.module.apply(v, x, trace=True), net.variables, x)
    out = []
    for (name, _), y in zip(net_plan(net.config), outputs, strict=True):
        shape = tuple(int(d) for d in y.shape)
        out.append((name, (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else shape))
    return out


def _size(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def count_params(net: Net) -> int:
    """Trainable parameters (batch norm's running statistics are in ``batch_stats``, not counted)."""
    return _size(net.variables.get("params", {}))


def layer_params(net: Net) -> dict[str, int]:
    """Trainable parameters of each top-level layer (a block or a head layer), by its canonical name."""
    params = net.variables.get("params", {})
    return {name: _size(params.get(name, {})) for name, _ in net_plan(net.config)}


def summary(net: Net, input_size: int, in_channels: int = 1) -> str:
    """A readable table: each layer's output shape, parameters, MACs and receptive field."""
    buffers = _size(net.variables.get("batch_stats", {}))
    return summary_table(
        spec(net.config), layer_shapes(net, input_size, in_channels), layer_params(net), buffers, "JAX (Flax)"
    )
