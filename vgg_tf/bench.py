"""Speed in tf.keras: the book's plain training step beside the project's, and the machine's matmul peak.

``path="book"`` is what the book's ``train_ch6`` runs through ``model.fit``: one ``tf.function`` step,
NHWC, no XLA. ``path="project"`` is what ``vgg_tf.train`` runs, and it is the same graph: the lever
Keras offers, XLA (``jit_compile=True``), measured 0.65x the speed for training and 0.71x for inference
on a 2-core CPU (ratio 4, 96 px, batch 128; 0.48x and 0.53x again on 2026-12-07), so it stays off; ``compile``
(``--compile``) turns it on for the project's path. ``precision="bf16"`` runs under Keras' ``mixed_bfloat16``
policy (bfloat16 compute, fp32 weights); the network must be built under that policy (see ``policy``).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from common.bench import best_seconds

from .train import get_device, policy  # noqa: F401  (policy: part of every backend's bench interface)

PATHS = ("book", "project")


def synchronize(device="cpu"):
    """Wait until ``device`` has done the work queued on it: nothing to wait for, each step returns numbers."""


def device_info(device="cpu"):
    """The device's name and the most memory TensorFlow's allocator has held on it since the last call."""
    device = get_device(device)
    if not device.startswith("/GPU"):
        return {"device": "cpu", "name": None, "peak_memory_mib": None}
    gpu = tf.config.list_physical_devices("GPU")[int(device.rsplit(":", 1)[1])]
    name = tf.config.experimental.get_device_details(gpu).get("device_name")
    peak = tf.config.experimental.get_memory_info(device.lstrip("/"))["peak"] / 2**20
    tf.config.experimental.reset_memory_stats(device.lstrip("/"))
    return {"device": device, "name": name, "peak_memory_mib": peak}


def matmul_gflops(precision="fp32", n=None, repeats=5, device="cpu"):
    """GFLOP/s of an ``n`` x ``n`` matrix product (the best of ``repeats``); None where unsupported.

    ``precision``: ``"fp32"``, ``"tf32"`` (GPUs only) or ``"bf16"``; ``n``: 2048 on a CPU, 8192 on a GPU.
    """
    device = get_device(device)
    gpu = device.startswith("/GPU")
    if precision == "tf32" and not gpu:
        return None
    n = n or (8192 if gpu else 2048)
    dtype = tf.bfloat16 if precision == "bf16" else tf.float32
    before = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(precision == "tf32")
    try:
        with tf.device(device):
            a = tf.cast(tf.random.uniform((n, n)), dtype)
            b = tf.cast(tf.random.uniform((n, n)), dtype)
            return 2 * n**3 / best_seconds(lambda: tf.linalg.matmul(a, b).numpy(), repeats) / 1e9
    except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError):
        return None
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(before)


def compiles(step) -> tuple[int, float] | None:
    """Compilations are not counted in tf.keras (XLA compiles each traced shape): None."""
    return None


def train_step(net, path="book", precision="fp32", lr=0.05, device="cpu", compile=False):
    """A function ``step(x, y) -> loss`` doing one SGD step of the book's recipe on ``net``, on the given path;
    ``compile``: the project's step through XLA (``jit_compile``)."""
    device = get_device(device)
    opt = keras.optimizers.SGD(learning_rate=lr)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=bool(compile and path == "project"))
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, tf.cast(net(x, training=True), tf.float32))
        grads = tape.gradient(loss, net.trainable_variables)
        opt.apply_gradients(zip(grads, net.trainable_variables, strict=True))
        return loss

    def placed(x, y):
        with tf.device(device):
            return float(step(x, y))

    return placed


def infer_step(net, path="book", precision="fp32", device="cpu", compile=False):
    """A function ``step(x) -> logits`` of evaluation-mode inference on the given path (``compile``: XLA)."""
    device = get_device(device)
    jit = bool(compile and path == "project")
    step = tf.function(lambda x: tf.cast(net(x, training=False), tf.float32), jit_compile=jit)

    def placed(x):
        with tf.device(device):
            return step(x).numpy()

    return placed
