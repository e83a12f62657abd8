"""JAX (Flax) side of the test adapters (see ``adapters/__init__.py``): NHWC inside, canonical NCHW outside.

A handle is (network, path in its variables, layout): Flax modules hold no numbers, the network's variables do.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from common.weights import from_canonical, to_canonical
from vgg_jax.blocks import children as _children
from vgg_jax.model import _layer, _variables, apply, get, put
from vgg_jax.train import _optimizer

CONTAINER = "Sequential"  # what vgg_block returns


def _nhwc(x_nchw: np.ndarray) -> np.ndarray:
    return np.transpose(x_nchw, (0, 2, 3, 1))


def forward(net, x_nchw: np.ndarray) -> np.ndarray:
    return np.asarray(net(jnp.asarray(_nhwc(x_nchw)), training=False))


def forward_train(net, x_nchw: np.ndarray) -> np.ndarray:
    return np.asarray(net(jnp.asarray(_nhwc(x_nchw)), training=True, rng=jax.random.PRNGKey(0)))


def _grads(net, handles, f):
    """f(output) and the gradient of it with respect to each trainable handle, in canonical layout."""
    params = net.variables["params"]

    def value(params):
        out, _ = apply(net.module, {**net.variables, "params": params}, *f.inputs, **f.kwargs)
        return f(out), out

    (total, out), grads = jax.value_and_grad(value, has_aux=True)(params)
    return (
        total,
        out,
        {
            n: to_canonical(np.asarray(get({"params": grads}, path)), layout, net.config)
            for n, (_, path, layout) in handles.items()
        },
    )


class _Objective:
    def __init__(self, fn, *inputs, **kwargs):
        self.fn, self.inputs, self.kwargs = fn, inputs, kwargs

    def __call__(self, out):
        return self.fn(out)


def loss_and_gradients(net, x_nchw: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    labels = jnp.asarray(y, jnp.int32)
    objective = _Objective(
        lambda logits: optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(),
        jnp.asarray(_nhwc(x_nchw)),
        training=True,
        rng=jax.random.PRNGKey(0),
    )
    total, _, grads = _grads(net, trainable(net), objective)
    return float(total), grads


def trainable(net) -> dict:
    return {n: (net, path, layout) for n, (path, layout) in _variables(net).items() if path[0] == "params"}


def read(handle) -> np.ndarray:
    if not isinstance(handle, tuple):
        return np.array(handle)
    net, path, layout = handle
    return to_canonical(np.array(get(net.variables, path)), layout, net.config)


def write(handle, value: np.ndarray) -> None:
    net, path, layout = handle
    put(net.variables, path, jnp.asarray(from_canonical(value, layout, net.config)))


def children(net) -> list:
    return _children(net)


def dense_use_weights(net) -> list:
    return [
        (net, ("params", name, "kernel"), "dense")
        for name, layer in zip(net.module.names, net.module.layers, strict=True)
        if isinstance(layer, nn.Dense)
    ]


def output_and_gradients(net, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    _, out, grads = _grads(net, trainable(net), _Objective(jnp.sum, jnp.asarray(x)))
    return np.asarray(out), grads


def _array(a: np.ndarray):
    # JAX without x64 would narrow float64 and int64 silently: those stay NumPy arrays, which vgg_jax takes too
    return jnp.asarray(a) if jax.dtypes.canonicalize_dtype(a.dtype) == a.dtype else a


def to_backend(x: np.ndarray, y: np.ndarray):
    return _array(x), _array(y)


def to_numpy(t) -> np.ndarray:
    return np.asarray(t)


def batch_norms(net) -> list[tuple[float, float]]:
    # the batch-norm layers as Flax makes them in a call (its momentum weighs the old running statistic: 1 -
    # momentum is the new batch statistic's weight), seen by a method interceptor on an abstract forward pass
    seen = []

    def intercept(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
            seen.append((context.module.epsilon, 1 - context.module.momentum))
        return next_fun(*args, **kwargs)

    c, s = net.config.in_channels, net.config.input_size
    with nn.intercept_methods(intercept):
        jax.eval_shape(lambda v: net.module.apply(v, jnp.zeros((1, s, s, c))), net.variables)
    return seen


def optimizer_steps(optimizer: str, lr: float, w0: np.ndarray, grads: list[np.ndarray]) -> np.ndarray:
    """A float32 vector ``w0`` after one step of the backend's ``optimizer`` per gradient of ``grads``."""
    w = jnp.asarray(w0.copy())
    tx = _optimizer(None, optimizer, lr)
    state = tx.init(w)
    for g in grads:
        updates, state = tx.update(jnp.asarray(g), state, w)
        w = optax.apply_updates(w, updates)
    return np.array(w)


def float64_steps(config: dict, weights: dict, batches: list, optimizer: str, lr: float) -> dict[str, np.ndarray]:
    """Canonical weights after one step of the backend's ``Trainer`` (the recipe's loss and ``optimizer``) per
    NCHW batch, with the network, its optimizer's state and the batches in float64."""
    from jax.experimental import enable_x64

    import vgg_jax
    from common.recipe import Recipe
    from vgg_jax.train import Trainer

    with enable_x64():  # JAX keeps float64 only inside this
        net = vgg_jax.import_weights(vgg_jax.vgg(**config), weights)
        net.variables = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), net.variables)
        net.module = net.module.clone(dtype=jnp.float64)
        trainer = Trainer(net, Recipe(1, lr, optimizer), jax.devices("cpu")[0])
        trainer.start_epoch(0, lr)
        for x, y in batches:
            trainer.train_step(jnp.asarray(_nhwc(x).astype(np.float64)), jnp.asarray(y))
        return vgg_jax.export_weights(net)


def layer_forward(plan, x_nchw: np.ndarray) -> np.ndarray:
    """The backend's layer for one planned layer (``common.arch.LayerPlan``) alone, on an NCHW batch."""
    layer = _layer(plan)
    x = jnp.asarray(_nhwc(x_nchw))
    variables = layer.init(jax.random.PRNGKey(0), x)
    out = np.asarray(layer.apply(variables, x))
    return np.transpose(out, (0, 3, 1, 2)) if out.ndim == 4 else out
