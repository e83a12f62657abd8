"""ONNX export with Keras' own exporter: ``model.export(path, format="onnx")`` (tf2onnx on TensorFlow)."""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from common.files import atomic_write
from common.interchange import INPUT, OPSET, OUTPUT, check_export_args, finish_onnx, quiet_exporter, require

from .model import Net

EXPORTER = "keras Model.export(format='onnx') via tf2onnx"


def _require_exporter() -> None:
    """Keras exports through tf2onnx on TensorFlow: one line saying what to install if it is missing."""
    require("tf2onnx", "Keras' ONNX exporter")


def export_onnx(net: Net, path: str | os.PathLike, batch: int | None = None) -> Path:
    """Write ``net`` as an ONNX model: NCHW ``images`` in [0, 1] -> ``logits``, a dynamic batch axis or ``batch``.

    The network takes NHWC, so what is exported is a model around it that takes NCHW ``images`` and transposes
    them first; evaluation mode; the configuration is in the metadata; the file is checked with ONNX's checker
    and written atomically. Returns the path.
    """
    path, batch = check_export_args(path, batch, net.config)
    _require_exporter()
    c, s = net.config.in_channels, net.config.input_size
    images = keras.Input((c, s, s), batch_size=batch, name=INPUT)
    logits = keras.layers.Identity(name=OUTPUT)(net(keras.layers.Permute((2, 3, 1))(images)))
    model = keras.Model(images, logits, name=f"{net.name}_nchw")
    model(np.zeros((batch or 1, c, s, s), np.float32), training=False)  # Keras exports only a model it has called

    def write(tmp):
        with quiet_exporter("tf2onnx"):
            model.export(tmp, format="onnx", opset_version=OPSET, verbose=False)
        finish_onnx(tmp, net.config, "tf", tf.__version__, EXPORTER, batch)

    return atomic_write(path, write, by_name=True)
