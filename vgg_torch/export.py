"""ONNX export with PyTorch's own exporter: ``torch.onnx.export`` (the ``torch.export``-based one, ``dynamo=True``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from common.files import atomic_write
from common.interchange import INPUT, OPSET, OUTPUT, check_export_args, finish_onnx, quiet_exporter, require

from .model import Net

EXPORTER = "torch.onnx.export (dynamo=True)"


class _Logits(torch.nn.Module):
    """The network's layers without its input check, which reads the batch size and would fix it in the graph."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, images):
        return torch.nn.Sequential.forward(self.net, images)


def _require_exporter() -> None:
    """PyTorch's exporter translates through onnxscript: one line saying what to install if it is missing."""
    require("onnxscript", "PyTorch's ONNX exporter")


def export_onnx(net: Net, path: str | os.PathLike, batch: int | None = None) -> Path:
    """Write ``net`` as an ONNX model: NCHW ``images`` in [0, 1] -> ``logits``, a dynamic batch axis or ``batch``.

    Evaluation mode (dropout off, batch-norm running statistics); the configuration is in the metadata; the file
    is checked with ONNX's checker and written atomically. Returns the path.
    """
    path, batch = check_export_args(path, batch, net.config)
    _require_exporter()
    c, s = net.config.in_channels, net.config.input_size
    example = torch.zeros(batch or 2, c, s, s)  # 2, not 1: torch.export would take a batch of 1 as a constant
    dynamic = None if batch else ({0: torch.export.Dim("batch")},)
    training = net.training
    net.eval()

    def write(tmp):
        with quiet_exporter("torch.onnx"):
            torch.onnx.export(
                _Logits(net),
                (example,),
                tmp,
                input_names=[INPUT],
                output_names=[OUTPUT],
                opset_version=OPSET,
                dynamo=True,
                dynamic_shapes=dynamic,
                external_data=False,
            )
        finish_onnx(tmp, net.config, "torch", torch.__version__, EXPORTER, batch)

    try:
        return atomic_write(path, write, by_name=True)
    finally:
        net.train(training)
