"""The book's ``train_ch6`` in tf.keras: the step and the state adapters that ``common.training.fit`` drives.

A custom loop around one ``tf.function`` step per call (no ``compile``/``fit``), so the loop, the
progress bar and the history are the same as in every other backend.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from common import training
from common.data import check_batch
from common.distributed import WorkerLost, loss_scale, restored_digest, shard
from common.errors import ConfigError, InputError
from common.processes import collective_timeout
from common.recipe import ADAM

from .data import on_device
from .model import Device, Net, _named_layers, from_config
from .weights import export_weights, import_weights


def try_gpu(i: int = 0) -> Device:
    """The i-th GPU if TensorFlow sees one, else the CPU (a device string for ``tf.device``)."""
    i = training.gpu_index(i)
    return f"/GPU:{i}" if len(tf.config.list_physical_devices("GPU")) > i else "/CPU:0"


def get_device(device: Device | str | None = "auto") -> Device:
    """The ``tf.device`` string of ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (or ``"/GPU:N"``, as is)."""
    if isinstance(device, str) and device.startswith("/"):
        return device
    kind, index = training.parse_device(device)
    gpus = len(tf.config.list_physical_devices("GPU"))
    if kind == "auto":
        return try_gpu()
    if kind == "cuda" and gpus <= index:
        raise training.no_gpu("TensorFlow", index, gpus, "pip install 'tensorflow[and-cuda]'")
    return "/CPU:0" if kind == "cpu" else f"/GPU:{index}"


def _check_batch(net, x, y, check_finite, where):
    """The checks of :func:`common.data.check_batch` on one batch of tensors (NHWC, Keras' layout)."""
    if not tf.is_tensor(x) or not tf.is_tensor(y):
        raise InputError(
            f"{where} is ({type(x).__name__}, {type(y).__name__}); give (images, labels) as "
            f"tensors (tf.convert_to_tensor)"
        )
    if getattr(net, "config", None) is None:  # a network not built by vgg(): nothing to check against
        return
    finite = bool(tf.reduce_all(tf.math.is_finite(x))) if check_finite and x.dtype.is_floating else True
    check_batch(net.config, x.shape, x.dtype.name, y.numpy(), "NHWC", finite, where, framework="tf")


def _correct(logits, y):
    return tf.reduce_sum(tf.cast(tf.argmax(logits, axis=1) == tf.cast(y, tf.int64), tf.float32))  # labels of any dtype


# The evaluation step of each network, traced once (one for XLA, one without): freed with the network.
_EVALUATE: dict[bool, weakref.WeakKeyDictionary] = {jit: weakref.WeakKeyDictionary() for jit in (False, True)}


def jit_compile(compile: bool) -> bool | None:
    """``tf.function``'s ``jit_compile`` for ``compile``: XLA (True), or TensorFlow's default (None)."""
    return True if compile else None


def evaluate_accuracy(
    net: Net, data_iter: Iterable, device: Device | str | None = None, check_finite: bool = True, compile: bool = False
) -> float:
    """Accuracy of ``net`` over ``data_iter`` in evaluation mode (dropout off, batch-norm statistics fixed).

    Every batch is checked against the network first (rank, channels, size, dtype, labels; with
    ``check_finite``, NaN or infinite pixels): a mistake is an :class:`common.errors.InputError`.
    ``compile``: the step through XLA (``jit_compile``).
    """
    cache = _EVALUATE[bool(compile)]
    step = cache.get(net)
    if step is None:  # traced once per network, not at every evaluation (a retrace costs about a second)
        ref = weakref.ref(net)  # the step must not keep its network alive

        def correct_in(x, y):
            live = ref()
            assert live is not None  # reached through the cache's entry of net: its network is alive while it runs
            return _correct(live(x, training=False), y)

        step = cache[net] = tf.function(correct_in, reduce_retracing=True, jit_compile=jit_compile(compile))

    def check(x, y, where):
        _check_batch(net, x, y, check_finite, where)

    def correct(x, y):
        return float(step(x, y))

    with tf.device(get_device(device)):
        return training.accuracy(data_iter, check, correct)


@contextlib.contextmanager
def policy(precision="fp32"):
    """Networks built inside this block get ``precision``'s dtype policy (Keras fixes it per layer when built).

    ``"bf16"`` is Keras' ``mixed_bfloat16`` (bfloat16 compute, float32 variables). The global policy is
    restored on leaving, whatever happens inside.
    """
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(old)


def in_precision(net, precision="fp32"):
    """``net`` itself if its layers already compute in ``precision``, else a twin built for it with its weights.

    Keras fixes a layer's policy when it is built, so a float32 ``net`` trains in bf16 through a twin built
    under :func:`policy`; :class:`Trainer` copies the twin's weights back into ``net`` when training ends.
    """
    want = "mixed_bfloat16" if precision == "bf16" else "float32"
    if all(layer.dtype_policy.name == want for _, layer in _named_layers(net)):
        return net
    if getattr(net, "config", None) is None:
        raise ConfigError(
            f"precision={precision!r} needs a network built by vgg_tf.vgg() or alexnet() (or inside "
            f"vgg_tf.train.policy({precision!r})); this one computes in {net.dtype_policy.name}"
        )
    with policy(precision):
        twin = from_config(net.config)
    return import_weights(twin, export_weights(net))


class Adam(keras.optimizers.Adam):
    """``common.recipe.ADAM``: PyTorch's Adam, epsilon added to the bias-corrected root of the second moment.

    Keras' own adds epsilon (default 1e-7) to the uncorrected root; the moments and the step counter are its
    own variables, so a checkpoint holds what Keras' Adam holds.
    """

    def __init__(self, learning_rate):
        a = ADAM
        super().__init__(learning_rate=learning_rate, beta_1=a["beta1"], beta_2=a["beta2"], epsilon=a["eps"])

    def update_step(self, gradient, variable, learning_rate):
        ops = keras.ops
        gradient = ops.cast(gradient, variable.dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        # The bias corrections in float64, as PyTorch computes them (in Python): 1 - beta2^t in float32 loses
        # five digits to cancellation (beta2 0.999 rounds to 0.99900001), 6.4e-6 of every step's size.
        step = ops.cast(self.iterations + 1, "float64")
        correction1 = 1 - ops.power(ops.convert_to_tensor(self.beta_1, "float64"), step)
        root2 = ops.sqrt(1 - ops.power(ops.convert_to_tensor(self.beta_2, "float64"), step))
        step_size = ops.cast(ops.divide(ops.cast(learning_rate, "float64"), correction1), variable.dtype)
        denominator = ops.add(ops.divide(ops.sqrt(v), ops.cast(root2, variable.dtype)), self.epsilon)
        self.assign_sub(variable, ops.multiply(step_size, ops.divide(m, denominator)))


def _optimizer(net, optimizer, lr):
    if optimizer == "adam":
        return Adam(lr)
    return keras.optimizers.SGD(learning_rate=lr)


def _dropouts(net):
    return [
        (name, layer)
        for name, layer in _named_layers(net)
        if isinstance(layer, keras.layers.Dropout) and layer.rate > 0  # Keras makes no generator for rate 0
    ]


class Trainer(training.Trainer):
    """tf.keras' side of :func:`common.training.fit`."""

    backend = "tf"
    batch_check = staticmethod(_check_batch)
    evaluate_accuracy = staticmethod(evaluate_accuracy)
    export_weights = staticmethod(export_weights)
    import_weights = staticmethod(import_weights)
    on_device = staticmethod(on_device)

    def __init__(self, net, recipe, device, compile=False):
        super().__init__(net, recipe, device, compile)
        self.forward = in_precision(net, recipe.precision)
        rng = np.random.default_rng(recipe.seed)  # dropout masks: Keras draws its seeds when a layer is made
        for _, layer in _dropouts(self.forward):
            layer.seed_generator.state.assign(np.array([rng.integers(2**31), 0], dtype=np.int64))
        self.opt = _optimizer(net, recipe.optimizer, recipe.lr)
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")
        self.step = tf.function(self._step, reduce_retracing=True, jit_compile=jit_compile(compile))

    @property
    def model(self):
        return self.forward  # the twin built for bf16 (in_precision), or net itself

    def start_epoch(self, epoch, lr):
        self.opt.learning_rate.assign(lr)

    def _step(self, x, y):
        net = self.forward
        with tf.GradientTape() as tape:
            # the loss in the parameters' dtype: float32 logits of a bfloat16 twin (mixed_bfloat16), else as computed
            logits = tf.cast(net(x, training=True), net.trainable_variables[0].dtype)
            loss = self.loss_fn(y, logits)  # summed over the batch
            mean = loss / tf.cast(tf.shape(y)[0], loss.dtype)
        grads = tape.gradient(mean, net.trainable_variables)
        self.opt.apply_gradients(zip(grads, net.trainable_variables, strict=True))
        return tf.stack([loss, _correct(logits, y)])

    def train_step(self, x, y):
        with tf.device(self.device):
            return self.step(x, y).numpy().tolist()  # one host sync

    def optimizer_state(self):
        """Every optimizer variable (step count, learning rate, Adam's moments), numbered in Keras' order."""
        return {f"{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(self.opt.variables)}, {}

    def set_optimizer_state(self, arrays, scalars):
        if not self.opt.built:
            self.opt.build(self.forward.trainable_variables)
        expected = {f"{i:04d}": tuple(v.shape) for i, v in enumerate(self.opt.variables)}
        training.check_state(arrays, expected, "optimizer state")
        for i, variable in enumerate(self.opt.variables):
            if variable is self.opt.iterations:
                training.check_counter(arrays[f"{i:04d}"], self.steps_done, "iteration count")
        for i, variable in enumerate(self.opt.variables):
            variable.assign(arrays[f"{i:04d}"])

    def rng_state(self):
        """The state of every dropout layer's seed generator: where its stream of masks stands."""
        return {name: np.asarray(layer.seed_generator.state.numpy()) for name, layer in _dropouts(self.forward)}

    def set_rng_state(self, arrays):
        expected = {name: tuple(layer.seed_generator.state.shape) for name, layer in _dropouts(self.forward)}
        training.check_state(arrays, expected, "random-generator state")
        for name, layer in _dropouts(self.forward):
            layer.seed_generator.state.assign(arrays[name])

    def finish(self):
        if self.forward is not self.net:
            import_weights(self.net, export_weights(self.forward))


train = training.train_function(Trainer, get_device)


_RUN: dict[str, Any] = {}  # the strategy this process joined: a process is one worker of one run


def join_run():
    """Join the run ``TF_CONFIG`` describes: its ``MultiWorkerMirroredStrategy``, made once per process.

    It must be made before TensorFlow runs anything else (it configures the collective ops of the
    process's context): ``vgg train`` calls this before it builds the network or reads a batch.
    """
    if "strategy" not in _RUN:
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=collective_timeout(),
            implementation=tf.distribute.experimental.CommunicationImplementation.RING,
        )
        _RUN["strategy"] = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return _RUN["strategy"]


class DistributedTrainer(Trainer):
    """Data parallel on ``tf.distribute.MultiWorkerMirroredStrategy``: this process is one worker (``TF_CONFIG``).

    The network is rebuilt inside the strategy's scope (mirrored variables) with ``net``'s weights, and so is
    the Keras optimizer; the step runs through ``strategy.run`` on this worker's own slice of every global
    batch (``common.distributed.shard``). Keras 3's optimizer sums the workers' gradients (an all-reduce
    over the ring), so each worker's loss is its summed loss divided by the global batch: the sum is the
    one-process mean gradient (``common.distributed.loss_scale``). The loss and correct predictions of the step
    are summed over the workers.
    ``sync_bn``: batch norm computes its statistics over the global batch (``BatchNormalization`` with
    ``synchronized=True``); without it each worker normalizes its own slice and keeps its own moving
    statistics (rank 0's are saved).
    """

    def __init__(self, net, recipe, device, sync_bn=False):
        self.strategy = join_run()
        self.rank = self.strategy.cluster_resolver.task_id
        self.size = self.strategy.num_replicas_in_sync
        training.Trainer.__init__(self, net, recipe, device)
        with self.strategy.scope():
            with policy(recipe.precision):
                self.forward = import_weights(from_config(net.config), export_weights(net))
            for _, layer in _named_layers(self.forward):
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = sync_bn
            rng = np.random.default_rng([recipe.seed, self.rank] if self.rank else recipe.seed)
            for _, layer in _dropouts(self.forward):
                layer.seed_generator.state.assign(np.array([rng.integers(2**31), 0], dtype=np.int64))
            self.opt = _optimizer(self.forward, recipe.optimizer, recipe.lr)
            self.opt.build(self.forward.trainable_variables)
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")
        self.step = tf.function(self._distributed_step, reduce_retracing=True)

    def set_rng_state(self, arrays):
        super().set_rng_state(arrays)
        if self.rank > 0:  # the checkpoint holds rank 0's generators: this worker draws its own masks again
            rng = np.random.default_rng([self.recipe.seed, self.rank, restored_digest(arrays)])
            for _, layer in _dropouts(self.forward):
                layer.seed_generator.state.assign(np.array([rng.integers(2**31), 0], dtype=np.int64))

    def _replica_step(self, x, y, scale):
        net = self.forward
        with tf.GradientTape() as tape:
            logits = tf.cast(net(x, training=True), net.trainable_variables[0].dtype)  # as in Trainer._step
            loss = self.loss_fn(y, logits)  # summed over this worker's slice
            share = loss * scale  # common.distributed.loss_scale: the optimizer sums them to the global-batch mean
        grads = tape.gradient(share, net.trainable_variables)
        self.opt.apply_gradients(zip(grads, net.trainable_variables, strict=True))
        return tf.stack([loss, _correct(logits, y)])

    def _distributed_step(self, x, y, scale):
        sums = self.strategy.run(self._replica_step, args=(x, y, scale))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None)

    def train_step(self, x, y):
        batch, part = int(y.shape[0]), shard(int(y.shape[0]), self.rank, self.size)
        scale = tf.constant(loss_scale(self.size, batch, self.backend), tf.float32)  # a tensor: one trace per run
        try:
            return self.step(x[part], y[part], scale).numpy().tolist()  # one host sync
        except _LOST as e:
            raise _lost(e) from None


# What a collective raises when another worker stopped: its connection reset, or the wait timed out.
_LOST = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError, tf.errors.AbortedError)


def _lost(error):
    detail = next((line for line in str(error).splitlines() if "aborted by" in line), type(error).__name__)
    return WorkerLost(f"another worker of the run stopped or stalled ({detail.strip()[:200]}); this one stops too")
