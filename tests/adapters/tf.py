"""tf.keras side of the test adapters (see ``adapters/__init__.py``): NHWC inside, canonical NCHW outside."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from common.weights import from_canonical, to_canonical
from vgg_tf.model import _named_layers
from vgg_tf.weights import _variables

CONTAINER = "Sequential"  # what vgg_block returns


def _nhwc(x_nchw: np.ndarray) -> np.ndarray:
    return np.transpose(x_nchw, (0, 2, 3, 1))


def forward(net, x_nchw: np.ndarray) -> np.ndarray:
    return np.asarray(net(_nhwc(x_nchw), training=False))


def forward_train(net, x_nchw: np.ndarray) -> np.ndarray:
    return np.asarray(net(_nhwc(x_nchw), training=True))


def loss_and_gradients(net, x_nchw: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    variables = {n: v for n, v in _variables(net).items() if v[0].trainable}
    with tf.GradientTape() as tape:
        logits = net(_nhwc(x_nchw), training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
    grads = tape.gradient(loss, [v for v, _ in variables.values()])
    return float(loss), {
        n: to_canonical(np.asarray(g), layout, net.config)
        for (n, (_, layout)), g in zip(variables.items(), grads, strict=True)
    }


# A handle is a variable with its layout (vgg_tf.weights._variables); the chapter's small networks have no
# Flatten, so no layout needs the configuration.


def trainable(net) -> dict:
    return {n: v for n, v in _variables(net).items() if v[0].trainable}


def read(handle) -> np.ndarray:
    variable, layout = handle if isinstance(handle, tuple) else (handle, None)
    return to_canonical(np.array(variable), layout, None)


def write(handle, value: np.ndarray) -> None:
    variable, layout = handle
    variable.assign(from_canonical(value, layout, None))


def children(net) -> list:
    return [(layer.name, layer) for layer in net.layers]


def dense_use_weights(net) -> list:
    return [(layer.kernel, "dense") for layer in net.layers if isinstance(layer, keras.layers.Dense)]


def output_and_gradients(net, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    handles = trainable(net)
    with tf.GradientTape() as tape:
        y = net(x)
        total = tf.reduce_sum(y)
    grads = tape.gradient(total, [v for v, _ in handles.values()])
    return np.asarray(y), {
        n: to_canonical(np.asarray(g), layout, None) for (n, (_, layout)), g in zip(handles.items(), grads, strict=True)
    }


def to_backend(x: np.ndarray, y: np.ndarray):
    return tf.convert_to_tensor(x), tf.convert_to_tensor(y)


def to_numpy(t) -> np.ndarray:
    return t.numpy()


def batch_norms(net) -> list[tuple[float, float]]:
    # Keras' momentum weighs the old moving statistic: 1 - momentum is the new batch statistic's weight
    return [
        (layer.epsilon, 1 - layer.momentum)
        for _, layer in _named_layers(net)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def optimizer_steps(optimizer: str, lr: float, w0: np.ndarray, grads: list[np.ndarray]) -> np.ndarray:
    """A float32 vector ``w0`` after one step of the backend's ``optimizer`` per gradient of ``grads``."""
    from vgg_tf.train import _optimizer

    w = keras.Variable(w0.copy())
    opt = _optimizer(None, optimizer, lr)
    for g in grads:
        opt.apply_gradients([(tf.constant(g), w)])
    return np.array(w)


def float64_steps(config: dict, weights: dict, batches: list, optimizer: str, lr: float) -> dict[str, np.ndarray]:
    """Canonical weights after one step of the backend's ``Trainer`` (the recipe's loss and ``optimizer``) per
    NCHW batch, with the network, its optimizer's state and the batches in float64."""
    import vgg_tf
    from common.recipe import Recipe
    from vgg_tf.train import Trainer

    keras.config.set_dtype_policy("float64")
    try:
        net = vgg_tf.import_weights(vgg_tf.vgg(**config), weights)
    finally:
        keras.config.set_dtype_policy("float32")
    trainer = Trainer(net, Recipe(1, lr, optimizer), "/CPU:0")
    # The step as the Trainer makes it, on the float64 network itself (for "fp32" the Trainer would train a
    # float32 twin) and with the loss in float64 (the Trainer's loss is made under the float32 policy).
    trainer.forward = net
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum", dtype="float64")
    trainer.loss_fn = lambda y, logits: tf.cast(loss(y, logits), tf.float32)  # the step stacks it with a count
    trainer.step = tf.function(trainer._step)
    trainer.start_epoch(0, lr)
    for x, y in batches:
        trainer.train_step(tf.constant(_nhwc(x)), tf.constant(y))  # float32 images, cast by the float64 layers
    return vgg_tf.export_weights(net)


def layer_forward(plan, x_nchw: np.ndarray) -> np.ndarray:
    """The backend's layer for one planned layer (``common.arch.LayerPlan``) alone, on an NCHW batch."""
    from vgg_tf.model import _layer

    return np.transpose(np.asarray(_layer(plan)(_nhwc(x_nchw), training=False)), (0, 3, 1, 2))
