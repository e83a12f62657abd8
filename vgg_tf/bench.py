"""Speed in tf.keras: the book's plain training step beside the project's, and the machine's matmul peak.

``path="book"`` is what the book's ``train_ch6`` runs through ``model.fit``: one ``tf.function`` step,
NHWC, no XLA. ``path="project"`` is what ``vgg_tf.train`` runs, and it is the same graph: the lever
Keras offers, XLA (``jit_compile=True``), measured 0.65x the speed for training and 0.71x for inference
on a 2-core CPU (ratio 4, 96 px, batch 128), so it stays off. ``precision="bf16"`` runs under Keras' ``mixed_bfloat16``
policy (bfloat16 compute, fp32 weights); the network must be built under that policy (see ``policy``).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from common.bench import best_seconds

from .train import policy  # noqa: F401  (part of every backend's bench interface)

PATHS = ("book", "project")


def matmul_gflops(precision="fp32", n=2048, repeats=5):
    """GFLOP/s of an ``n`` x ``n`` matrix product (the best of ``repeats``); None where unsupported."""
    dtype = {"fp32": tf.float32, "bf16": tf.bfloat16}[precision]
    a = tf.cast(tf.random.uniform((n, n)), dtype)
    b = tf.cast(tf.random.uniform((n, n)), dtype)
    try:
        return 2 * n**3 / best_seconds(lambda: tf.linalg.matmul(a, b).numpy(), repeats) / 1e9
    except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError):
        return None


def train_step(net, path="book", precision="fp32", lr=0.05):
    """A function ``step(x, y) -> loss`` doing one SGD step of the book's recipe on ``net``, on the given path."""
    opt = keras.optimizers.SGD(learning_rate=lr)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=False)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, tf.cast(net(x, training=True), tf.float32))
        grads = tape.gradient(loss, net.trainable_variables)
        opt.apply_gradients(zip(grads, net.trainable_variables, strict=True))
        return loss

    return lambda x, y: float(step(x, y))


def infer_step(net, path="book", precision="fp32"):
    """A function ``step(x) -> logits`` of evaluation-mode inference on the given path."""
    step = tf.function(lambda x: tf.cast(net(x, training=False), tf.float32), jit_compile=False)
    return lambda x: step(x).numpy()
