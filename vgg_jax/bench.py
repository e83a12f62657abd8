"""Speed in JAX: the book's training step beside the project's, and the machine's matmul peak.

``path="book"`` is the step of the book's JAX edition (``d2l.Trainer.fit_epoch`` with ``d2l.Classifier``): the
loss and its gradient in one ``jax.jit``-compiled function, the optax update applied outside it (Flax's
``TrainState.apply_gradients``, op by op), and the loss read on the host at every step (the book plots it).
``path="project"`` is what ``vgg_jax.train`` runs: forward, gradient and optax update in one compiled step, no
host read per step. ``precision="bf16"`` runs the module with ``dtype=bfloat16`` (float32 parameters).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from common.bench import best_seconds

from .model import apply
from .train import _step, get_device, in_precision, policy  # noqa: F401  (policy: part of every bench interface)

PATHS = ("book", "project")

_PENDING: list = []  # the last value a step left on the device: synchronize() waits for it


def synchronize(device="cpu"):
    """Wait until the device has done all the work queued on it (JAX dispatches asynchronously): every step
    depends on the one before, so waiting for the last one's result waits for all."""
    while _PENDING:
        jax.block_until_ready(_PENDING.pop())


def device_info(device="cpu"):
    """The device's name and the most memory JAX's allocator has held on it (on a GPU; None on a CPU)."""
    device = get_device(device)
    if device.platform != "gpu":
        return {"device": "cpu", "name": None, "peak_memory_mib": None}
    stats = device.memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return {
        "device": str(device),
        "name": device.device_kind,
        "peak_memory_mib": None if peak is None else peak / 2**20,
    }


def matmul_gflops(precision="fp32", n=None, repeats=5, device="cpu"):
    """GFLOP/s of an ``n`` x ``n`` matrix product, compiled by XLA (the best of ``repeats``); None where unsupported.

    ``precision``: ``"fp32"`` (full float32), ``"tf32"`` (float32 in TensorFloat-32, GPUs only) or ``"bf16"``.
    ``n``: 2048 on a CPU, 8192 on a GPU.
    """
    device = get_device(device)
    gpu = device.platform == "gpu"
    if precision == "tf32" and not gpu:
        return None
    n = n or (8192 if gpu else 2048)
    dtype = jnp.bfloat16 if precision == "bf16" else jnp.float32
    rng = np.random.default_rng(0)
    a, b = (jax.device_put(jnp.asarray(rng.random((n, n), np.float32), dtype), device) for _ in range(2))
    exact = jax.lax.Precision.DEFAULT if precision == "tf32" else jax.lax.Precision.HIGHEST
    product = jax.jit(partial(jnp.matmul, precision=exact))
    seconds = best_seconds(lambda: jax.block_until_ready(product(a, b)), repeats)
    return 2 * n**3 / seconds / 1e9


def _loss(module, params, others, x, y, key):
    logits, _ = apply(module, {"params": params, **others}, x, training=True, rng=key)
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y).mean()


def compiles(step) -> tuple[int, float] | None:
    """``jax.jit``'s compilations are not counted here (the project's path is always compiled): None."""
    return None


def train_step(net, path="book", precision="fp32", lr=0.05, device="cpu", compile=False):
    """A function ``step(x, y) -> loss`` doing one SGD step of the book's recipe on ``net``, on the given path
    (``compile``: taken, no change; the project's path is compiled by ``jax.jit`` already).

    The book's step returns the loss as a number (a host sync per step); the project's returns it on the
    device (:func:`synchronize` before reading a clock). ``net``'s variables are the starting point; the steps
    train a copy of them.
    """
    device = get_device(device)
    module = in_precision(net, precision)
    tx = optax.sgd(lr)
    params = jax.device_put(net.variables["params"], device)
    others = jax.device_put({k: v for k, v in net.variables.items() if k != "params"}, device)
    state = {"params": params, "others": others, "opt": tx.init(params), "key": jax.random.PRNGKey(0)}
    if path == "book":
        grad = jax.jit(jax.value_and_grad(partial(_loss, module)))

        def step(x, y):
            state["key"], key = jax.random.split(state["key"])
            loss, grads = grad(state["params"], state["others"], x, y, key)
            updates, state["opt"] = tx.update(grads, state["opt"], state["params"])
            state["params"] = optax.apply_updates(state["params"], updates)
            return float(loss)

        return step
    compiled = jax.jit(partial(_step, module, tx))

    def project(x, y):
        params, state["others"], state["opt"], state["key"], sums = compiled(
            state["params"], state["others"], state["opt"], state["key"], x, jnp.asarray(y, jnp.int32)
        )
        state["params"] = params
        _PENDING[:] = [sums]
        return sums

    return project


def infer_step(net, path="book", precision="fp32", device="cpu", compile=False):
    """A function ``step(x) -> logits`` of evaluation-mode inference on the given path (logits on the host).

    The book's path calls the module's ``apply`` as the book's evaluation does, op by op; the project's
    compiles it.
    """
    device = get_device(device)
    module, variables = in_precision(net, precision), jax.device_put(net.variables, device)

    def forward(variables, x):
        return module.apply(variables, x, training=False)

    # the variables an argument of the compiled step, not constants of it: XLA would fold every weight into
    # the program (a copy of the network in it, and seconds more to compile)
    run = forward if path == "book" else jax.jit(forward)

    def step(x):
        return np.asarray(run(variables, x), dtype=np.float32)

    return step
