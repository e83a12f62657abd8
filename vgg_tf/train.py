"""The book's ``train_ch6`` in tf.keras: SGD (or Adam), softmax cross-entropy, per-epoch history, checkpoints.

A custom loop around one ``tf.function`` step per call (no ``compile``/``fit``), so the loop, the
progress bar and the history are the same as in every other backend.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import tensorflow as tf

from common.checkpoint import load_checkpoint, make_recipe, prepare_checkpoint, save_checkpoint
from common.errors import ConfigError, InputError, WeightsError
from common.training import (
    Epoch,
    History,
    Meter,
    Progress,
    check_batch,
    check_loss,
    check_precision,
    check_train_args,
    data_epoch,
    epoch_lr,
    resume_point,
)

from .model import _named_layers, from_config
from .weights import export_weights, import_weights


def try_gpu(i=0):
    """The i-th GPU if TensorFlow sees one, else the CPU (a device string for ``tf.device``)."""
    return f"/GPU:{i}" if len(tf.config.list_physical_devices("GPU")) > i else "/CPU:0"


def _correct(logits, y):
    return tf.reduce_sum(tf.cast(tf.argmax(logits, axis=1, output_type=y.dtype) == y, tf.float32))


def _check_batch(net, x, y, check_finite, where):
    """The checks of :func:`common.training.check_batch` on one batch of tensors (NHWC, Keras' layout)."""
    if not tf.is_tensor(x) or not tf.is_tensor(y):
        raise InputError(
            f"{where} is ({type(x).__name__}, {type(y).__name__}); give (images, labels) as "
            f"tensors (tf.convert_to_tensor)"
        )
    if getattr(net, "config", None) is None:  # a network not built by vgg(): nothing to check against
        return
    finite = bool(tf.reduce_all(tf.math.is_finite(x))) if check_finite and x.dtype.is_floating else True
    check_batch(net.config, x.shape, x.dtype.name, y.numpy(), "NHWC", finite, where)


def evaluate_accuracy(net, data_iter, device=None, check_finite=True):
    """Accuracy of ``net`` over ``data_iter`` in evaluation mode (dropout off, batch-norm statistics fixed).

    Every batch is checked against the network first (rank, channels, size, dtype, labels; with
    ``check_finite``, NaN or infinite pixels): a mistake is an :class:`common.errors.InputError`.
    """
    device = device or try_gpu()
    step = tf.function(lambda x, y: _correct(net(x, training=False), y), reduce_retracing=True)
    meter = Meter()
    with tf.device(device):
        for i, (x, y) in enumerate(data_iter, start=1):
            _check_batch(net, x, y, check_finite, f"evaluation batch {i}")
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


def _dropouts(net):
    return [
        (name, layer)
        for name, layer in _named_layers(net)
        if isinstance(layer, keras.layers.Dropout) and layer.rate > 0
    ]


def _optimizer_state(net, opt) -> dict[str, np.ndarray]:
    """Every optimizer variable (step count, learning rate, Adam's moments), numbered in Keras' order."""
    return {f"{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(opt.variables)}


def _set_optimizer_state(net, opt, arrays: dict[str, np.ndarray]) -> None:
    if not opt.built:
        opt.build(net.trainable_variables)
    if len(arrays) != len(opt.variables):
        raise WeightsError(
            f"the checkpoint holds {len(arrays)} optimizer variables, this optimizer has "
            f"{len(opt.variables)}; resume with the optimizer it was saved with"
        )
    for i, variable in enumerate(opt.variables):
        variable.assign(arrays[f"{i:04d}"])


def _rng_state(net) -> dict[str, np.ndarray]:
    """The state of every dropout layer's seed generator: where its stream of masks stands."""
    return {name: np.asarray(layer.seed_generator.state.numpy()) for name, layer in _dropouts(net)}


def _set_rng_state(net, arrays: dict[str, np.ndarray]) -> None:
    for name, layer in _dropouts(net):
        layer.seed_generator.state.assign(arrays[name])


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


def _in_precision(net, precision):
    """``net`` itself if its layers already compute in ``precision``, else a twin built for it with its weights."""
    want = "mixed_bfloat16" if precision == "bf16" else "float32"
    if all(layer.dtype_policy.name == want for _, layer in _named_layers(net)):
        return net
    if getattr(net, "config", None) is None:
        raise ConfigError(
            f"precision={precision!r} needs a network built by vgg_tf.vgg() or alexnet() (or inside "
            f"vgg_tf.train.policy({precision!r})); this one computes in "
            f"{net.dtype_policy.name}"
        )
    with policy(precision):
        twin = from_config(net.config)
    return import_weights(twin, export_weights(net))


def _resume(net, opt, resume_from, recipe, train_iter, verbose):
    """Weights, optimizer state, random state and history of a checkpoint; the first epoch still to train."""
    ckpt = load_checkpoint(resume_from, "tf", net.config, recipe)
    import_weights(net, ckpt.weights)
    _set_optimizer_state(net, opt, ckpt.optimizer)
    _set_rng_state(net, ckpt.rng)
    history = ckpt.history
    if verbose:
        print(f"[tf] resuming from {ckpt.path} after epoch {ckpt.epoch} of {recipe['num_epochs']}", flush=True)
    return history, resume_point(history, ckpt.state.get("data_epoch"), train_iter)


def _save(path, net, opt, recipe, epoch, history, train_iter):
    save_checkpoint(
        path,
        "tf",
        net.config,
        recipe,
        epoch,
        history,
        export_weights(net),
        _optimizer_state(net, opt),
        _rng_state(net),
        {"data_epoch": data_epoch(train_iter)},
    )


def train(
    net,
    train_iter,
    test_iter,
    num_epochs,
    lr=0.05,
    optimizer="sgd",
    device=None,
    seed=0,
    verbose=True,
    lr_schedule="constant",
    checkpoint=None,
    resume_from=None,
    check_finite=True,
    precision="fp32",
):
    """Train ``net`` in place; return a :class:`common.training.History` (loss, accuracies, speed per epoch).

    ``lr_schedule``: ``"constant"`` (the book's) or ``"cosine"`` (annealed per epoch, see common.training).
    ``checkpoint``: a folder (or ``.npz`` path) where a checkpoint is written atomically after every epoch;
    ``resume_from``: a checkpoint to continue from (same configuration and recipe; no batch is repeated or
    skipped). ``check_finite``: refuse batches with NaN or infinite pixels.
    ``precision``: ``"fp32"``, or ``"bf16"``: Keras' ``mixed_bfloat16`` policy (bfloat16 compute, float32
    variables). Keras fixes a layer's policy when it is built, so a float32 ``net`` is trained through a twin
    built under that policy, whose weights are copied back into ``net`` when training ends or stops.
    """
    num_epochs, lr, optimizer = check_train_args(num_epochs, lr, optimizer, lr_schedule)
    precision = check_precision(precision)
    recipe = make_recipe(lr, lr_schedule, optimizer, seed, num_epochs, train_iter, test_iter, precision)
    checkpoint = None if checkpoint is None else prepare_checkpoint(checkpoint)
    device = device or try_gpu()
    work = _in_precision(net, precision)
    try:
        return _train(
            work,
            train_iter,
            test_iter,
            num_epochs,
            lr,
            optimizer,
            device,
            seed,
            verbose,
            lr_schedule,
            checkpoint,
            resume_from,
            check_finite,
            recipe,
        )
    finally:
        if work is not net:
            import_weights(net, export_weights(work))


def _train(
    net,
    train_iter,
    test_iter,
    num_epochs,
    lr,
    optimizer,
    device,
    seed,
    verbose,
    lr_schedule,
    checkpoint,
    resume_from,
    check_finite,
    recipe,
):
    """The loop of :func:`train`, on a network already in the run's precision."""
    _seed_dropout(net, seed)  # dropout masks
    opt = _optimizer(net, optimizer, lr)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")

    @tf.function(reduce_retracing=True)
    def step_fn(x, y):
        with tf.GradientTape() as tape:
            logits = tf.cast(net(x, training=True), tf.float32)  # bfloat16 under mixed_bfloat16
            loss = loss_fn(y, logits)
            mean = loss / tf.cast(tf.shape(y)[0], loss.dtype)
        grads = tape.gradient(mean, net.trainable_variables)
        opt.apply_gradients(zip(grads, net.trainable_variables, strict=True))
        return tf.stack([loss, _correct(logits, y)])  # one tensor: one host sync per step

    history, first = History("tf", device), 1
    if resume_from is not None:
        history, first = _resume(net, opt, resume_from, recipe, train_iter, verbose)
    with tf.device(device):
        for epoch in range(first, num_epochs + 1):
            rate = epoch_lr(lr, lr_schedule, epoch, num_epochs)
            opt.learning_rate.assign(rate)
            meter, bar = Meter(), Progress(len(train_iter), f"[tf] epoch {epoch}", enabled=None if verbose else False)
            for step, (x, y) in enumerate(train_iter, start=1):
                _check_batch(net, x, y, check_finite, f"training batch {step} of epoch {epoch}")
                loss_sum, correct = step_fn(x, y).numpy().tolist()
                check_loss(loss_sum, epoch, step, rate)
                meter.add(loss_sum, correct, int(y.shape[0]))
                bar.update(loss=meter.mean_loss)
            bar.close()
            seconds = meter.seconds
            history.add(
                Epoch(
                    epoch,
                    meter.mean_loss,
                    meter.accuracy,
                    evaluate_accuracy(net, test_iter, device),
                    meter.n / seconds,
                    seconds,
                ),
                verbose,
            )
            if checkpoint is not None:
                _save(checkpoint, net, opt, recipe, epoch, history, train_iter)
    return history
