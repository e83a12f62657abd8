"""``vgg conform`` in MXNet Gluon: a user's Gluon export (``*-symbol.json`` beside its ``*.params``), loaded with
``gluon.SymbolBlock.imports`` and traced through the symbol's internal outputs.

The same functions in every backend's ``conform.py`` (the core is :mod:`common.conform`): ``open_model``,
``model_parameters``, ``declared_input``, ``input_layout``, ``has_lrn``, ``load_parameters``, ``trace_model``.
A Gluon block given as an object is exported (hybridized) to a temporary folder first and read back the same way.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import mxnet as mx
import numpy as np

from common.conform import Event, Param, Trace, failure
from common.errors import InputError, WeightsError

_OPS = {
    "Convolution": "conv",
    "BatchNorm": "bn",
    "relu": "relu",
    "LRN": "lrn",
    "Flatten": "flatten",
    "FullyConnected": "linear",
    "Dropout": "dropout",
}
_BN_INPUTS = ("gamma", "beta", "running_mean", "running_var")  # BatchNorm's inputs after the data, in order


class GluonModel:
    """A Gluon export: the block, its symbol's nodes (the JSON graph) and its one input's name."""

    def __init__(self, block: mx.gluon.SymbolBlock, symbol: mx.sym.Symbol, nodes: list[dict], data: str):
        self.block, self.symbol, self.nodes, self.data = block, symbol, nodes, data


def _files(source) -> tuple[Path, Path]:
    """(symbol file, parameter file): ``prefix-symbol.json`` and the newest ``prefix-NNNN.params`` beside it."""
    path = Path(source)
    if path.name.endswith("-symbol.json"):
        prefix = path.name[: -len("-symbol.json")]
        found = sorted(path.parent.glob(f"{prefix}-*.params"))
        if not found:
            raise InputError(f"{path} has no {prefix}-NNNN.params beside it; give the folder Gluon's export wrote")
        return path, found[-1]
    prefix = path.name.rsplit("-", 1)[0]
    return path.parent / f"{prefix}-symbol.json", path


def open_model(source) -> GluonModel:
    """A Gluon export read with ``SymbolBlock.imports``; a Gluon block is exported (hybridized) and read back."""
    if isinstance(source, mx.gluon.Block):
        with tempfile.TemporaryDirectory(prefix="vgg-conform-") as folder:  # read whole, then removed
            source.hybridize()
            shape = getattr(getattr(source, "config", None), "input_size", 32)
            channels = getattr(getattr(source, "config", None), "in_channels", 1)
            source(mx.nd.zeros((1, channels, shape, shape)))
            source.export(str(Path(folder) / "model"))
            return open_model(Path(folder) / "model-symbol.json")
    symbol_file, params_file = _files(source)
    for f in (symbol_file, params_file):
        if not f.is_file():
            raise InputError(f"{f} does not exist; a Gluon export is a *-symbol.json and its *-NNNN.params")
    try:
        nodes = json.loads(symbol_file.read_text())["nodes"]
        symbol = mx.sym.load(str(symbol_file))
        saved = {k.split(":", 1)[-1] for k in mx.nd.load(str(params_file))}
        inputs = [n for n in symbol.list_inputs() if n not in saved]
        if len(inputs) != 1:
            raise InputError(f"{symbol_file} takes {len(inputs)} inputs ({', '.join(inputs)}); a classifier takes one")
        with warnings.catch_warnings():  # "cannot decide type for data": the input's type is set when it runs
            warnings.simplefilter("ignore")
            block = mx.gluon.SymbolBlock.imports(str(symbol_file), inputs, str(params_file))
    except InputError:
        raise
    except (mx.base.MXNetError, ValueError, KeyError, TypeError, RecursionError, UnicodeDecodeError) as e:
        raise WeightsError(f"{symbol_file} is not a Gluon export MXNet can read ({failure(e)})") from None
    return GluonModel(block, symbol, nodes, inputs[0])


def _roles(model: GluonModel) -> dict[str, tuple[str | None, str | None]]:
    """Parameter name -> (statistic, owner): batch-norm statistics and the gamma of the same layer."""
    out: dict[str, tuple[str | None, str | None]] = {}
    for node in model.nodes:
        if node["op"] == "BatchNorm":
            names = [model.nodes[i[0]]["name"] for i in node["inputs"][1:5]]
            for name, role in zip(names, _BN_INPUTS, strict=False):
                out[name] = (role if role.startswith("running") else None, names[0])
    return out


def model_parameters(model: GluonModel) -> list[Param]:
    """Arguments in the symbol's order, then auxiliary states (batch-norm statistics); Gluon's layouts are the
    canonical ones (conv OIHW, dense (out, in))."""
    params = model.block.collect_params()
    roles = _roles(model)
    out = []
    for name in model.symbol.list_arguments():
        if name == model.data or name not in params:
            continue
        value = params[name].data().asnumpy()
        out.append(Param(name, tuple(value.shape), True, float(np.max(np.abs(value))) if value.size else None))
    for name in model.symbol.list_auxiliary_states():
        if name in params:
            stat, owner = roles.get(name, (None, None))
            out.append(Param(name, tuple(params[name].data().shape), False, None, stat, owner))
    return out


def declared_input(model: GluonModel) -> tuple[int, int, int] | None:
    """A symbol states no input shape."""
    return None


def input_layout(model: GluonModel) -> str | None:
    layouts = {n.get("attrs", {}).get("layout") for n in model.nodes if n["op"] == "Convolution"} - {None}
    return "NHWC" if layouts == {"NHWC"} else "NCHW"


def has_lrn(model: GluonModel) -> bool:
    return any(n["op"] == "LRN" for n in model.nodes)


def load_parameters(model: GluonModel, arrays, config) -> list[str]:
    """Set parameters by the user's names from canonical arrays."""
    params = model.block.collect_params()
    for name, array in arrays.items():
        params[name].set_data(mx.nd.array(array, dtype=array.dtype))
    return []


def _kind(node: dict) -> str | None:
    op, attrs = node["op"], node.get("attrs", {})
    if op == "Activation":
        return "relu" if attrs.get("act_type") == "relu" else "other"
    if op == "Pooling":
        return "pool" if attrs.get("pool_type", "max") == "max" and attrs.get("global_pool") != "True" else "other"
    return _OPS.get(op)


def trace_model(model: GluonModel, x: np.ndarray) -> Trace:
    """Run once with every layer's output added (the symbol's internals, sharing the block's parameters)."""
    internals = model.symbol.get_internals()
    names = set(internals.list_outputs())
    picked = [
        (n["name"], kind)
        for n in model.nodes
        if n["op"] != "null" and (kind := _kind(n)) is not None and f"{n['name']}_output" in names
    ]
    outputs = mx.sym.Group([internals[f"{name}_output"] for name, _ in picked] + [model.symbol])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = mx.gluon.SymbolBlock(outputs, mx.sym.var(model.data), params=model.block.collect_params())
        values = [v.asnumpy() for v in traced(mx.nd.array(x))]
    except Exception as e:  # MXNet raises MXNetError and others for a graph that does not fit the input
        return Trace(None, [], failure(e))
    events = [Event(name, kind, v, tuple(v.shape)) for (name, kind), v in zip(picked, values, strict=False)]
    return Trace(values[-1], events, None)
