"""ONNX export through the JAX ecosystem's route: ``jax2tf`` turns the network into a TensorFlow function, and
``tf2onnx`` (Keras' exporter) writes that function as ONNX. JAX has no exporter of its own."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import jax
import numpy as np

from common.interchange import INPUT, OPSET, OUTPUT, check_export_args, finish_onnx, quiet_exporter, require
from common.weights import atomic_write

from .model import Net

EXPORTER = "jax2tf (TensorFlow ops: native_serialization=False, enable_xla=False) then tf2onnx"


def _require_exporter() -> None:
    """The route needs TensorFlow and tf2onnx: one line saying what to install if either is missing."""
    require("tensorflow", "JAX's ONNX export (jax2tf)")
    require("tf2onnx", "JAX's ONNX export")


def export_onnx(net: Net, path: str | os.PathLike, batch: int | None = None) -> Path:
    """Write ``net`` as an ONNX model: NCHW ``images`` in [0, 1] -> ``logits``, a dynamic batch axis or ``batch``.

    The network takes NHWC, so what is exported is a function around it that takes NCHW ``images`` and
    transposes them first; evaluation mode; the configuration is in the metadata; the file is checked with
    ONNX's checker and written atomically. Returns the path.
    """
    path, batch = check_export_args(path, batch, net.config)
    _require_exporter()
    import tensorflow as tf  # deferred: TensorFlow, a framework the ONNX route alone needs
    import tf2onnx  # deferred: the ONNX route's optional converter
    from jax.experimental import jax2tf  # deferred: it imports TensorFlow

    c, s = net.config.in_channels, net.config.input_size
    module, variables = net.module, jax.tree_util.tree_map(np.asarray, net.variables)

    def logits(images):
        return module.apply(variables, images.transpose(0, 2, 3, 1), training=False)

    # TensorFlow's own ops: tf2onnx reads neither native serialization's XlaCallModule op nor the Xla* ops
    # (XlaReduceWindow for the max-pool) that jax2tf writes where enable_xla is on
    shapes = None if batch else ["(b, ...)"]
    with warnings.catch_warnings():  # deprecated since July 2024, and still the route tf2onnx can read
        warnings.simplefilter("ignore", DeprecationWarning)
        converted = jax2tf.convert(logits, native_serialization=False, enable_xla=False, polymorphic_shapes=shapes)
    signature = [tf.TensorSpec((batch, c, s, s), tf.float32, name=INPUT)]
    function = tf.function(lambda images: tf.identity(converted(images), name=OUTPUT), autograph=False)

    def write(tmp):
        with quiet_exporter("tf2onnx"):
            tf2onnx.convert.from_function(function, input_signature=signature, opset=OPSET, output_path=tmp)
        finish_onnx(tmp, net.config, "jax", jax.__version__, EXPORTER, batch)

    return atomic_write(path, write, by_name=True)
