"""ONNX export with MXNet's own exporter: ``mx.onnx.export_model`` on the network's symbol and parameters."""

from __future__ import annotations

import os
from pathlib import Path

import mxnet as mx
import numpy as np

from common.errors import BackendUnavailable
from common.files import atomic_write
from common.interchange import INPUT, INSTALL, OUTPUT, check_export_args, finish_onnx, require

from .model import Net

EXPORTER = "mx.onnx.export_model"


def _require_exporter() -> None:
    """MXNet 1.9.1 exports only with an onnx that still has onnx.mapping: one line saying what to install."""
    onnx = require("onnx", "MXNet's ONNX exporter")
    try:
        import onnx.mapping  # deferred (the optional ONNX install): what mx.onnx imports first
    except ImportError:
        raise BackendUnavailable(
            f"MXNet {mx.__version__}'s ONNX exporter imports onnx.mapping, which onnx {onnx.__version__} no longer "
            f"has (removed in 1.19); install onnx 1.18 or older: {INSTALL} (pins onnx==1.18.0)"
        ) from None


def export_onnx(net: Net, path: str | os.PathLike, batch: int | None = None) -> Path:
    """Write ``net`` as an ONNX model: NCHW ``images`` in [0, 1] -> ``logits``, a dynamic batch axis or ``batch``.

    The graph is the network called on a symbol named ``images``, its output named ``logits``; evaluation mode;
    the configuration is in the metadata; the file is checked with ONNX's checker and written atomically.
    MXNet 1.9's exporter declares the newest opset of the installed onnx (it takes no opset). Returns the path.
    """
    path, batch = check_export_args(path, batch, net.config)
    _require_exporter()
    c, s = net.config.in_channels, net.config.input_size
    symbol = mx.sym.identity(net(mx.sym.var(INPUT)), name=OUTPUT)
    params = {name: p.data() for name, p in net.collect_params().items()}

    def write(tmp):
        mx.onnx.export_model(
            symbol,
            params,
            [(batch or 1, c, s, s)],
            [np.float32],
            tmp,
            dynamic=batch is None,
            dynamic_input_shapes=None if batch else [(None, c, s, s)],
        )
        finish_onnx(tmp, net.config, "mxnet", mx.__version__, EXPORTER, batch)

    return atomic_write(path, write, by_name=True)
