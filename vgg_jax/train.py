"""The book's ``train_ch6`` in JAX: a ``jax.jit``-compiled step and the state adapters ``common.training.fit`` drives.

The step is a pure function of the parameters, batch norm's statistics, optax's state, the batch and a PRNG key:
forward (Flax's ``apply``), the loss, ``jax.grad``, optax's update. Dropout draws its masks from an explicit key
derived from the seed and split once per step, so a run is reproducible, and the key is saved with the optimizer
state in a checkpoint, so a resumed run continues bit for bit.
"""

from __future__ import annotations

import contextlib
import math
import os
import weakref
from collections.abc import Iterable
from functools import partial
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
from jax.errors import JaxRuntimeError
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from common import training
from common.data import check_batch
from common.distributed import HOST, Watchdog, WorkerLost, loss_scale, shard, worker_env
from common.errors import ConfigError, InputError
from common.processes import collective_timeout
from common.recipe import ADAM

from .data import on_device
from .model import Device, Model, Net, apply
from .weights import export_weights, import_weights


def _gpus() -> list:
    try:
        return jax.local_devices(backend="gpu")
    except RuntimeError:  # no GPU backend in this jaxlib
        return []


def _cpu() -> Device:
    """This process's CPU (in a data-parallel run ``jax.devices()`` lists every process's: the first is worker 0's)."""
    return jax.local_devices(backend="cpu")[0]


def try_gpu(i: int = 0) -> Device:
    """The i-th GPU if JAX sees one, else the CPU (a ``jax.Device``)."""
    i = training.gpu_index(i)
    gpus = _gpus()
    return gpus[i] if len(gpus) > i else _cpu()


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
    return _cpu() if kind == "cpu" else gpus[index]


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


def _correct(logits, y, weight=None):
    right = (jnp.argmax(logits, axis=1) == y.astype(jnp.int32)).astype(jnp.float32)  # labels of any dtype
    return jnp.sum(right if weight is None else right * weight)


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


def _correction(beta: float, count):
    """1 - beta^count to the precision of its dtype (PyTorch computes it in Python's float64): optax's
    ``1 - beta**count`` in float32 loses five digits to cancellation (0.999 rounds to 0.99900001), 6.4e-6 of
    every step's size."""
    return -jnp.expm1(count * jnp.log1p(-(1.0 - beta)))


def scale_by_adam() -> optax.GradientTransformation:
    """``common.recipe.ADAM``'s direction, ``m_hat / (sqrt(v_hat) + eps)``: ``optax.scale_by_adam`` (its state,
    its moments and its form: eps added after the bias correction) with the corrections of :func:`_correction`."""
    a = ADAM
    inner = optax.scale_by_adam(b1=a["beta1"], b2=a["beta2"], eps=a["eps"])

    def update(grads, state, params=None):
        count = optax.safe_increment(state.count)
        mu = optax.tree.update_moment(grads, state.mu, a["beta1"], 1)
        nu = optax.tree.update_moment_per_elem_norm(grads, state.nu, a["beta2"], 2)
        c1, c2 = _correction(a["beta1"], count), _correction(a["beta2"], count)
        updates = jax.tree.map(
            lambda m, v: (m / c1.astype(m.dtype)) / (jnp.sqrt(v / c2.astype(v.dtype)) + a["eps"]), mu, nu
        )
        return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(inner.init, update)


# What an Adam checkpoint held before scale_by_adam: optax.adam inside inject_hyperparams kept the constants as
# hyperparameters, leaves 0001-0004 of its state (b1, b2, eps, eps_root), in float32 between the update count and
# the rate.
_ADAMS_CONSTANTS = np.array([ADAM["beta1"], ADAM["beta2"], ADAM["eps"], 0.0], np.float32)


def _without_adams_constants(arrays: dict, count: int) -> dict:
    """An Adam checkpoint's optimizer state as this version numbers it: one written before :func:`scale_by_adam`
    (``count`` + 4 leaves, 0001-0004 the recipe's constants) without those four leaves; any other as it is."""
    names = [f"{i:04d}" for i in range(count + 4)]
    if sorted(arrays) != names:
        return arrays
    constants = [np.asarray(arrays[n]) for n in names[1:5]]
    if any(c.shape != () or c.dtype.kind != "f" for c in constants):
        return arrays
    if not np.array_equal(np.array(constants, np.float32), _ADAMS_CONSTANTS):
        return arrays
    return {f"{i:04d}": arrays[n] for i, n in enumerate(names[:1] + names[5:])}


def _adam(learning_rate):
    return optax.chain(scale_by_adam(), optax.scale_by_learning_rate(learning_rate))


def _optimizer(net, optimizer, lr):
    """optax's SGD, or ``common.recipe.ADAM`` (:func:`scale_by_adam`), its rate a hyperparameter of its state
    (``net`` unused: an optax transformation meets the parameters in its ``init``)."""
    return optax.inject_hyperparams(_adam if optimizer == "adam" else optax.sgd)(learning_rate=lr)


def _step(module, tx, params, others, opt_state, key, x, y, weight=None, scale=None, mask=None):
    """One step of the recipe: (new params, statistics, optax state, key, [summed loss, correct]).

    ``weight`` (1 or 0 per example) and ``scale`` (:class:`DistributedTrainer`): the loss is the weighted sum times
    ``scale``, where the plain step takes the mean; ``mask``: the examples batch norm takes its statistics over.
    """
    key, dropout = jax.random.split(key)

    def loss(params):
        logits, variables = apply(module, {"params": params, **others}, x, training=True, rng=dropout, mask=mask)
        logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))  # float32 under bf16
        each = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        if weight is None:
            total = each.sum()
            return total / y.shape[0], (total, _correct(logits, y), variables)
        total = (each * weight).sum()
        return total * scale, (total, _correct(logits, y, weight), variables)

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
        rate = self.opt_state.hyperparams["learning_rate"]  # kept in its dtype: a new one would compile the step again
        self.opt_state.hyperparams["learning_rate"] = jax.device_put(jnp.asarray(lr, rate.dtype), self.device)

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
        if self.recipe.optimizer == "adam":
            arrays = _without_adams_constants(arrays, len(leaves))
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


_RUN: dict[str, Any] = {}  # the mesh of the run this process joined: a process is one worker of one run


def join_run():
    """Join the run the environment describes: ``jax.distributed``, once per process, before JAX computes anything;
    the run's global mesh (every process's device, in process order, on one axis ``batch``).

    ``JAX_COORDINATOR_ADDRESS`` (process 0's ``HOST:PORT``; JAX's own variable, as is ``JAX_COORDINATOR_BIND_ADDRESS``,
    where process 0's coordinator listens), ``VGG_JAX_NUM_PROCESSES`` and ``VGG_JAX_PROCESS_ID`` are what ``vgg train
    --workers N`` sets. The CPUs' collectives are gloo's, bound to 127.0.0.1 where the coordinator is there (a
    local run), else where the machine's name points. A process waits at most
    ``common.processes.collective_timeout()`` seconds for the others to join.
    """
    if "mesh" not in _RUN:
        worker = worker_env("jax")
        if worker is None or worker.rank is None:
            raise ConfigError("join_run() joins the run VGG_JAX_NUM_PROCESSES (> 1) describes; it is not set")
        address = os.environ["JAX_COORDINATOR_ADDRESS"]
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        if address.rpartition(":")[0] == HOST:
            _gloo_on(HOST)
        try:
            jax.distributed.initialize(
                address,
                worker.size,
                worker.rank,
                cluster_detection_method="deactivate",  # the variables above say it all: no cluster's guessed
                initialization_timeout=math.ceil(collective_timeout()),
            )
        except JaxRuntimeError as e:
            raise _lost(e) from None
        devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
        _RUN["mesh"] = Mesh(np.array(devices), ("batch",))
    return _RUN["mesh"]


def _gloo_on(host: str) -> None:
    """Have JAX's CPU client bind gloo's connections to ``host``: the client JAX makes for a run with gloo, given
    gloo made here (jaxlib 0.6 binds it where the machine's name points, and no setting says otherwise)."""
    from jax._src import distributed, xla_bridge
    from jaxlib import xla_client

    def cpu_client():
        gloo = xla_client._xla.make_gloo_tcp_collectives(distributed.global_state.client, hostname=host)
        return xla_bridge.make_cpu_client(collectives=gloo)

    jax.extend.backend.register_backend_factory("cpu", cpu_client, priority=0, fail_quietly=False)


def _global(tree, sharding, shape=None):
    """This process's arrays as the run's global arrays: replicated (each process holds the same values), or its
    slice of the batch axis (``sharding`` splits it; ``shape``: the global batch's)."""
    return jax.tree_util.tree_map(lambda a: jax.make_array_from_process_local_data(sharding, a, shape), tree)


def _local(tree):
    """This process's copy of replicated global arrays: what evaluation, a checkpoint and the next step read."""
    return jax.tree_util.tree_map(lambda a: a.addressable_data(0), tree)


class DistributedTrainer(Trainer):
    """Data parallel on ``jax.distributed``: this process is one worker of a run the environment describes.

    One ``jax.jit`` step over the run's global mesh (one device per process, :func:`join_run`): the parameters,
    batch norm's statistics, optax's state and the dropout key replicated, the global batch sharded over the
    processes, each worker giving its own slice of it (``common.distributed.shard``) to
    ``jax.make_array_from_process_local_data``. XLA partitions the step and puts in the all-reduces itself: the
    gradient sums each worker's part of the global-batch loss (its summed loss times ``1 / batch``,
    ``common.distributed.loss_scale``), batch norm's statistics are the global batch's (``sync_bn`` is taken and
    changes nothing), and dropout draws its masks for the global batch from the one key, so each slice has its
    own and a resumed run goes on with the saved key in every worker. Where a batch does not split evenly, each
    slice is padded to the longest with examples of weight 0, which batch norm leaves out too.
    """

    def __init__(self, net, recipe, device, sync_bn=False):
        mesh = join_run()
        self.rank, self.size = jax.process_index(), jax.process_count()
        self.watchdog = Watchdog()  # a stalled worker leaves the others in a gloo collective for good: this ends it
        super().__init__(net, recipe, device)
        self.replicated, self.split = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("batch"))
        self.step = jax.jit(partial(_step, self.module, self.tx), out_shardings=self.replicated)

    def train_step(self, x, y):
        batch, part = len(y), shard(len(y), self.rank, self.size)
        rows = -(-batch // self.size) * jax.local_device_count()  # the longest slice, over this process's devices
        x, y = jax.device_put(x[part], self.device), jax.device_put(jnp.asarray(y[part], jnp.int32), self.device)
        pad, counts = rows - len(y), np.arange(rows) < len(y)
        if pad:
            x, y = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)), jnp.pad(y, (0, pad))
        batches = [_global(a, self.split, (rows * self.size, *a.shape[1:])) for a in (x, y, counts.astype(np.float32))]
        if rows * self.size != batch:  # padded somewhere (the same program in every process): batch norm is told
            batches.append(_global(counts, self.split, (rows * self.size,)))
        variables = self.net.variables
        others = {k: v for k, v in variables.items() if k != "params"}
        state = _global((variables["params"], others, self.opt_state, self.key), self.replicated)
        scale = _global(np.float32(loss_scale(self.size, batch, self.backend)), self.replicated)
        with _collective():
            out = self.step(*state, *batches[:3], scale, *batches[3:])
        params, others, self.opt_state, self.key, sums = _local(out)
        self.net.variables = {"params": params, **others}
        return sums

    def to_host(self, sums):
        with self.watchdog.waiting(), _collective():  # where this worker waits for the others' steps
            return super().to_host(sums)


# What a collective or JAX's coordination says where another worker stopped: its connection closed, or the wait
# for it to join timed out.
_LOST = ("gloo", "connection", "peer", "deadline", "unavailable", "timed out", "coordination", "barrier")


@contextlib.contextmanager
def _collective():
    """Turn a collective that failed because another worker stopped into one :class:`WorkerLost` line."""
    try:
        yield
    except (JaxRuntimeError, ValueError) as e:  # jaxlib's error, or the ValueError it becomes on a host read
        if not any(word in str(e).lower() for word in _LOST):
            raise  # a mistake of this worker's own: its traceback says where
        raise _lost(e) from None


def _lost(error):
    detail = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return WorkerLost(f"another worker of the run stopped or stalled ({detail[:200]}); this one stops too")
