"""The book's ``train_ch6`` in JAX: a ``jax.jit``-compiled step and the state adapters ``common.training.fit`` drives.

The step is a pure function of the parameters, batch norm's statistics, optax's state, the batch and a PRNG key:
forward (Flax's ``apply``), the loss, ``jax.grad``, optax's update. Dropout draws its masks from an explicit key
derived from the seed and split once per step, so a run is reproducible, and the key is saved with the optimizer
state in a checkpoint, so a resumed run continues bit for bit.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from common import training
from common.data import check_batch
from common.errors import ConfigError, InputError
from common.recipe import ADAM

from .data import on_device
from .model import Device, Model, Net, apply
from .weights import export_weights, import_weights


def _gpus() -> list:
    try:
        return jax.devices("gpu")
    except RuntimeError:  # no GPU backend in this jaxlib
        return []


def try_gpu(i: int = 0) -> Device:
    """The i-th GPU if JAX sees one, else the CPU (a ``jax.Device``)."""
    i = training.gpu_index(i)
    gpus = _gpus()
    return gpus[i] if len(gpus) > i else jax.devices("cpu")[0]


def get_device(device: Device | str | None = "auto") -> Device:
    """The ``jax.Device`` of ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (or a ``jax.Device``, as is)."""
    if isinstance(device, jax.Device):
        return device
    kind, index = training.parse_device(device)
    gpus = _gpus()
    if kind == "auto":
        return try_gpu()
    if kind == "cuda" and len(gpus) <= index:
        raise training.no_gpu("JAX", index, len(gpus), "pip install 'jax[cuda12]'")
    return jax.devices("cpu")[0] if kind == "cpu" else gpus[index]


def _check_batch(net, x, y, check_finite, where):
    """The checks of :func:`common.training.check_batch` on one batch of arrays (NHWC, Flax's layout)."""
    if not isinstance(x, (jax.Array, np.ndarray)) or not isinstance(y, (jax.Array, np.ndarray)):
        raise InputError(
            f"{where} is ({type(x).__name__}, {type(y).__name__}); give (images, labels) as arrays (jnp.asarray)"
        )
    if getattr(net, "config", None) is None:  # a network not built by vgg(): nothing to check against
        return
    floating = jnp.issubdtype(x.dtype, jnp.floating)
    finite = bool(jnp.isfinite(x).all()) if check_finite and floating else True
    check_batch(net.config, x.shape, np.dtype(x.dtype).name, np.asarray(y), "NHWC", finite, where, framework="jax")


def _correct(logits, y):
    return jnp.sum(jnp.argmax(logits, axis=1) == y.astype(jnp.int32)).astype(jnp.float32)  # labels of any dtype


# The evaluation step of each module, compiled once: freed with the network.
_EVALUATE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def evaluate_accuracy(
    net: Net, data_iter: Iterable, device: Device | str | None = None, check_finite: bool = True, compile: bool = False
) -> float:
    """Accuracy of ``net`` over ``data_iter`` in evaluation mode (dropout off, batch-norm statistics fixed).

    Every batch is checked against the network first (rank, channels, size, dtype, labels; with
    ``check_finite``, NaN or infinite pixels): a mistake is an :class:`common.errors.InputError`.
    ``compile``: taken and changes nothing (every step here is compiled by ``jax.jit`` already).
    """
    step = _EVALUATE.get(net)
    if step is None:
        module = net.module
        step = _EVALUATE[net] = jax.jit(lambda v, x, y: _correct(module.apply(v, x, training=False), y))
    device = get_device(device)

    def check(x, y, where):
        _check_batch(net, x, y, check_finite, where)

    def correct(x, y):
        return step(net.variables, jax.device_put(x, device), jax.device_put(y, device))

    return training.accuracy(data_iter, check, correct)


def policy(precision="fp32"):
    """Networks built inside this block are ready for ``precision`` (JAX needs nothing: the module computing in
    bfloat16 is made per run, :func:`in_precision`)."""
    return contextlib.nullcontext()


def in_precision(net, precision="fp32"):
    """The Flax module that computes ``net`` in ``precision``: bf16 is the same layers with ``dtype=bfloat16``
    (convolutions, products and batch norm's output in bfloat16; the parameters stay float32, Flax's
    ``param_dtype``), fp32 the module itself. The variables are the same either way."""
    if not isinstance(net, Model) or net.config is None:
        raise ConfigError(f"precision={precision!r} needs a network built by vgg_jax.vgg() or alexnet()")
    return net.module.clone(dtype=jnp.bfloat16) if precision == "bf16" else net.module


def _optimizer(net, optimizer, lr):
    """optax's SGD or Adam, its rate a hyperparameter of its state (``net`` unused: an optax transformation meets
    the parameters in its ``init``). optax's Adam is PyTorch's form (eps added after the bias correction), so
    with ``common.recipe.ADAM``'s numbers it is the recipe's Adam."""
    if optimizer == "adam":
        a = ADAM
        return optax.inject_hyperparams(optax.adam)(learning_rate=lr, b1=a["beta1"], b2=a["beta2"], eps=a["eps"])
    return optax.inject_hyperparams(optax.sgd)(learning_rate=lr)


def _step(module, tx, params, others, opt_state, key, x, y):
    """One step of the recipe: (new params, statistics, optax state, key, [summed loss, correct])."""
    key, dropout = jax.random.split(key)

    def loss(params):
        logits, variables = apply(module, {"params": params, **others}, x, training=True, rng=dropout)
        logits = logits.astype(jnp.float32)  # bfloat16 under bf16
        total = optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()
        return total / y.shape[0], (total, _correct(logits, y), variables)

    grads, (total, correct, variables) = jax.grad(loss, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    others = {k: v for k, v in variables.items() if k != "params"}
    return params, others, opt_state, key, jnp.stack([total, correct])


class Trainer(training.Trainer):
    """JAX's side of :func:`common.training.fit`."""

    backend = "jax"
    batch_check = staticmethod(_check_batch)
    evaluate_accuracy = staticmethod(evaluate_accuracy)
    export_weights = staticmethod(export_weights)
    import_weights = staticmethod(import_weights)
    on_device = staticmethod(on_device)
    read_every = 8  # steps whose sums stay on the device before one host read

    def __init__(self, net, recipe, device, compile=False):
        super().__init__(net, recipe, device, compile)  # compile: taken; the step is compiled by jax.jit already
        self.module = in_precision(net, recipe.precision)
        self.tx = _optimizer(net, recipe.optimizer, recipe.lr)
        # Everything the step takes is placed on its device (here and in train_step): arrays left uncommitted would
        # make the second step, whose inputs are the first one's committed outputs, compile the step again.
        self.opt_state = jax.device_put(self.tx.init(net.variables["params"]), self.device)
        self.key = jax.device_put(jax.random.PRNGKey(recipe.seed), self.device)  # dropout's masks: split per step
        self.step = jax.jit(partial(_step, self.module, self.tx))

    def start_epoch(self, epoch, lr):
        self.opt_state.hyperparams["learning_rate"] = jax.device_put(jnp.asarray(lr, jnp.float32), self.device)

    def train_step(self, x, y):
        variables = jax.device_put(self.net.variables, self.device)  # a no-op after the first step
        others = {k: v for k, v in variables.items() if k != "params"}
        x, y = jax.device_put(x, self.device), jax.device_put(jnp.asarray(y, jnp.int32), self.device)
        params, others, self.opt_state, self.key, sums = self.step(
            variables["params"], others, self.opt_state, self.key, x, y
        )
        self.net.variables = {"params": params, **others}
        return sums

    def to_host(self, sums):
        return np.asarray(jnp.stack(sums), dtype=np.float64).reshape(len(sums), 2)

    def optimizer_state(self):
        """Every leaf of optax's state (step count, learning rate, Adam's moments), numbered in its tree's order."""
        return {f"{i:04d}": np.asarray(leaf) for i, leaf in enumerate(jax.tree_util.tree_leaves(self.opt_state))}, {}

    def set_optimizer_state(self, arrays, scalars):
        leaves, tree = jax.tree_util.tree_flatten(self.opt_state)
        expected = {f"{i:04d}": tuple(leaf.shape) for i, leaf in enumerate(leaves)}
        training.check_state(arrays, expected, "optimizer state")
        for i, leaf in enumerate(leaves):
            if leaf.shape == () and jnp.issubdtype(leaf.dtype, jnp.integer):  # optax's count of updates (Adam's)
                training.check_counter(arrays[f"{i:04d}"], self.steps_done, f"update count {i:04d}")
        restored = [jnp.asarray(arrays[f"{i:04d}"], leaf.dtype) for i, leaf in enumerate(leaves)]
        self.opt_state = jax.device_put(jax.tree_util.tree_unflatten(tree, restored), self.device)

    def rng_state(self):
        """The PRNG key dropout's next masks are drawn from."""
        return {"dropout": np.asarray(self.key)}

    def set_rng_state(self, arrays):
        training.check_state(arrays, {"dropout": tuple(self.key.shape)}, "random-generator state")
        self.key = jax.device_put(jnp.asarray(arrays["dropout"], self.key.dtype), self.device)


train = training.train_function(Trainer, get_device)
