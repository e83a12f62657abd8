"""The book's ``train_ch6`` in tf.keras: SGD (or Adam), softmax cross-entropy, per-epoch history.

A custom loop around one ``tf.function`` step per call (no ``compile``/``fit``), so the loop, the
progress bar and the history are the same as in every other backend.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from common.training import Epoch, History, Meter, Progress, check_loss, check_train_args

from .model import _named_layers


def try_gpu(i=0):
    """The i-th GPU if TensorFlow sees one, else the CPU (a device string for ``tf.device``)."""
    return f"/GPU:{i}" if len(tf.config.list_physical_devices("GPU")) > i else "/CPU:0"


def _correct(logits, y):
    return tf.reduce_sum(tf.cast(tf.argmax(logits, axis=1, output_type=y.dtype) == y, tf.float32))


def evaluate_accuracy(net, data_iter, device=None):
    """Accuracy of ``net`` over ``data_iter`` in evaluation mode (dropout off, batch-norm statistics fixed)."""
    device = device or try_gpu()
    step = tf.function(lambda x, y: _correct(net(x, training=False), y), reduce_retracing=True)
    meter = Meter()
    with tf.device(device):
        for x, y in data_iter:
            meter.add(0.0, float(step(x, y)), int(y.shape[0]))
    return meter.accuracy


def _optimizer(net, optimizer, lr):
    if optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    return keras.optimizers.SGD(learning_rate=lr)


def _seed_dropout(net, seed):
    """Restart every dropout layer's random stream from ``seed`` (Keras draws its seeds when a layer is made)."""
    rng = np.random.default_rng(seed)
    for _, layer in _named_layers(net):
        if isinstance(layer, keras.layers.Dropout) and layer.rate > 0:  # Keras makes no generator for rate 0
            layer.seed_generator.state.assign(np.array([rng.integers(2**31), 0], dtype=np.int64))


def train(net, train_iter, test_iter, num_epochs, lr=0.05, optimizer="sgd", device=None, seed=0, verbose=True):
    """Train ``net`` in place; return a :class:`common.training.History` (loss, accuracies, speed per epoch)."""
    num_epochs, lr, optimizer = check_train_args(num_epochs, lr, optimizer)
    device = device or try_gpu()
    _seed_dropout(net, seed)  # dropout masks
    opt = _optimizer(net, optimizer, lr)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")

    @tf.function(reduce_retracing=True)
    def step_fn(x, y):
        with tf.GradientTape() as tape:
            logits = net(x, training=True)
            loss = loss_fn(y, logits)
            mean = loss / tf.cast(tf.shape(y)[0], loss.dtype)
        grads = tape.gradient(mean, net.trainable_variables)
        opt.apply_gradients(zip(grads, net.trainable_variables))
        return tf.stack([loss, _correct(logits, y)])  # one tensor: one host sync per step

    history = History("tf", device)
    with tf.device(device):
        for epoch in range(1, num_epochs + 1):
            meter, bar = Meter(), Progress(len(train_iter), f"[tf] epoch {epoch}", enabled=None if verbose else False)
            for step, (x, y) in enumerate(train_iter, start=1):
                loss_sum, correct = step_fn(x, y).numpy().tolist()
                check_loss(loss_sum, epoch, step, lr)
                meter.add(loss_sum, correct, int(y.shape[0]))
                bar.update(loss=meter.mean_loss)
            bar.close()
            seconds = meter.seconds
            history.add(Epoch(epoch, meter.mean_loss, meter.accuracy, evaluate_accuracy(net, test_iter, device),
                              meter.n / seconds, seconds), verbose)
    return history
