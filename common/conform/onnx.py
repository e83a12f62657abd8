"""The ONNX adapter, a sibling of each backend's ``vgg_*/conform.py``: the graph, its initializers and its
intermediate values, run by ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..arch import (
    NetConfig,
)
from ..errors import InputError, WeightsError
from ..interchange import declared_bytes, model_tensors, read_onnx, require
from ..spec import format_bytes
from ..weights import from_canonical, no_file
from .records import STATISTICS, Event, Param, Trace, failure

_ONNX_KINDS = {
    "Conv": "conv",
    "BatchNormalization": "bn",
    "Relu": "relu",
    "LRN": "lrn",
    "MaxPool": "pool",
    "Flatten": "flatten",
    "Gemm": "linear",
    "MatMul": "linear",
    "Dropout": "dropout",
}


# The layers whose constant inputs are the network a user's model describes (Add: a MatMul's bias).
_LAYERS = ("Conv", "Gemm", "MatMul", "BatchNormalization", "Add")


def _check_layer_bytes(model, path: Path) -> None:
    """A user's model (no metadata of this project's) declares no more tensor bytes than twice the weights of its
    layers and 1 MiB: checked on the declared shapes, before any external data is read (:func:`read_onnx`)."""
    onnx = require("onnx", "reading .onnx models")
    tensors = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:  # a Constant node's value, as an initializer's
        value = next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)
        if node.op_type == "Constant" and value is not None and node.output:
            tensors.setdefault(node.output[0], value)

    def constant(name: str) -> str:
        for _ in range(len(producer) + 1):  # through Identity nodes; a loop of them ends it
            node = producer.get(name)
            if name in tensors or node is None or node.op_type != "Identity" or not node.input:
                break
            name = node.input[0]
        return name

    weights = {constant(i) for n in model.graph.node if n.op_type in _LAYERS for i in n.input} & tensors.keys()
    layers = sum(declared_bytes(onnx, tensors[name]) for name in weights)
    declared = sum(declared_bytes(onnx, t) for t in model_tensors(model.graph))
    if declared > 2 * layers + 2**20:
        raise WeightsError(
            f"{path} declares {format_bytes(declared)} of tensors, where the weights of its layers "
            f"({', '.join(_LAYERS)}) hold {format_bytes(layers)}; a VGG's tensors are its layers' weights: save the "
            f"model without the others"
        )


class OnnxGraph:
    """A user's ONNX model: the graph (weights replaceable), where each weight sits, and sessions to run it."""

    def __init__(self, path: Path):
        onnx = require("onnx", "reading .onnx models")
        if not path.is_file():
            raise InputError(no_file(path, "model file"))
        self.model = read_onnx(path, check=lambda model: _check_layer_bytes(model, path))
        try:
            onnx.checker.check_model(self.model)
        except (ValueError, RuntimeError, onnx.checker.ValidationError) as e:
            raise WeightsError(f"{path} fails ONNX's checker ({failure(e)}); it is damaged") from None
        self.path = path
        self.notes: list[str] = []
        graph = self.model.graph
        self.inits = {i.name: i for i in graph.initializer}
        inputs = [i for i in graph.input if i.name not in self.inits]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise InputError(
                f"{path} has {len(inputs)} inputs and {len(graph.output)} outputs; a classifier has one of each"
            )
        self.input = inputs[0].name
        self.dims = [d.dim_param or d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.flat_hwc = self._flattens_hwc()
        self.unshared = self._unshare_constants()
        self.added = self._add_zero_biases()
        self.params = self._params()

    def _const(self, name: str):
        if name in self.inits:
            return name
        node = self.producer.get(name)  # a weight passed through Identity (or a Transpose of one, for MatMul)
        if node is not None and node.op_type == "Identity" and node.input[0] in self.inits:
            return node.input[0]
        return None

    def _unshare_constants(self) -> int:
        """Give each layer its own copy of a weight that several layers share where it is one constant value:
        exporters store equal tensors once (PyTorch's keeps one all-zero tensor for every zero bias, reached
        through Identity nodes), while every layer of the network has weights of its own. A shared tensor of
        varied values (weights a port really ties) stays shared, and the check then finds the layers differ. The
        copies take no more bytes than the model's own tensors (and 1 MiB): past that, a tensor stays shared."""
        from onnx import numpy_helper  # deferred: the optional ONNX install

        seen: set[str] = set()
        copies = 0
        room = sum(i.ByteSize() for i in self.model.graph.initializer) + 2**20  # copies at most double the model
        for node in self.model.graph.node:
            if node.op_type not in _LAYERS:
                continue
            for k, name in enumerate(node.input):
                const = self._const(name) if k > 0 or node.op_type == "Add" else None
                if const is None:
                    continue
                if const not in seen:
                    seen.add(const)
                    continue
                if self.inits[const].ByteSize() > room:  # a file's few bytes may not make many copies: left shared
                    continue
                array = numpy_helper.to_array(self.inits[const])
                if array.size and not (array == array.flat[0]).all():
                    continue
                room -= array.nbytes
                copy = f"{const}.copy{copies}"
                self.model.graph.initializer.append(numpy_helper.from_array(array.copy(), copy))
                self.inits[copy] = self.model.graph.initializer[-1]
                node.input[k] = copy
                copies += 1
        return copies

    def _add_zero_biases(self) -> int:
        """Give every Conv and Gemm without a bias input an explicit zero bias (an initializer of its own): exporters
        drop biases that are zero (PyTorch's ``RemoveOptionalBiasFromConv``), and the canonical weights have one."""
        from onnx import helper, numpy_helper  # deferred: the optional ONNX install

        added = 0
        for node in self.model.graph.node:
            if node.op_type not in ("Conv", "Gemm") or len(node.input) > 2 or len(node.input) < 2:
                continue
            weight = self._const(node.input[1])
            if weight is None:
                continue
            dims = list(self.inits[weight].dims)
            trans_b = any(a.name == "transB" and helper.get_attribute_value(a) for a in node.attribute)
            width = dims[0] if node.op_type == "Conv" or trans_b else dims[1]
            name = f"{weight}.zero_bias"
            init = numpy_helper.from_array(np.zeros(width, np.float32), name)
            self.model.graph.initializer.append(init)
            self.inits[name] = self.model.graph.initializer[-1]
            node.input.append(name)
            added += 1
        return added

    def _params(self) -> list[tuple[str, str, str]]:
        """(initializer, role, layout) of every weight in node order: conv, bn (weight bias running_mean
        running_var), dense (``dense``: (in, out); ``canonical``: (out, in))."""
        from onnx import helper  # deferred: the optional ONNX install

        out = []
        for node in self.model.graph.node:
            ins = [self._const(i) for i in node.input]
            if node.op_type == "Conv" and ins[1:2] and ins[1]:
                out += [(ins[1], "weight", "canonical")] + (
                    [(ins[2], "bias", "canonical")] if len(ins) > 2 and ins[2] else []
                )
            elif node.op_type == "BatchNormalization" and all(ins[1:5]):
                out += [
                    (n, role, "canonical") for n, role in zip(ins[1:5], ("weight", "bias", *STATISTICS), strict=True)
                ]
            elif node.op_type == "Gemm" and ins[1]:
                attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
                out.append((ins[1], "weight", "canonical" if attrs.get("transB", 0) else "dense"))
                if len(ins) > 2 and ins[2]:
                    out.append((ins[2], "bias", "canonical"))
            elif node.op_type == "MatMul" and ins[1]:
                out.append((ins[1], "weight", "dense"))
                add = [c for c in self.consumers.get(node.output[0], []) if c.op_type == "Add"]
                bias = [self._const(i) for i in add[0].input if i != node.output[0]] if add else []
                if bias and bias[0]:
                    out.append((bias[0], "bias", "canonical"))
        return out

    def _flattens_hwc(self) -> bool:
        """True where the first dense layer's features pass a channels-last Transpose on their way from a map."""
        for node in self.model.graph.node:
            if node.op_type in ("Flatten", "Reshape"):
                source = self.producer.get(node.input[0])
                if source is not None and source.op_type == "Transpose":
                    perm = next((list(a.ints) for a in source.attribute if a.name == "perm"), [])
                    return perm == [0, 2, 3, 1]
                return False
        return False

    def layout(self) -> str:
        if (
            len(self.dims) == 4
            and isinstance(self.dims[3], int)
            and self.dims[3] in (1, 3)
            and self.dims[1] != self.dims[3]
        ):
            return "NHWC" if self.dims[1] == self.dims[2] else "NCHW"
        return "NCHW"


def _onnx_array(init) -> np.ndarray:
    from onnx import numpy_helper  # deferred: the optional ONNX install

    return numpy_helper.to_array(init)


def open_model(source):
    """An ONNX file, read and checked (what ``vgg_*.conform.open_model`` is for the frameworks)."""
    graph = OnnxGraph(Path(source))
    if graph.unshared:
        graph.notes.append(
            f"{graph.unshared} weights the graph stored once for several layers (equal constants, as exporters "
            f"store them) were given a copy per layer"
        )
    if graph.added:
        graph.notes.append(
            f"{graph.added} biases absent from the graph (zero, dropped by the exporter) were added as zeros"
        )
    return graph


def model_parameters(graph: OnnxGraph) -> list[Param]:
    out = []
    for name, role, layout in graph.params:
        shape = tuple(int(d) for d in graph.inits[name].dims)
        shape = shape[::-1] if layout == "dense" else shape
        out.append(Param(name, shape, role not in STATISTICS, None))
    return out


def declared_input(graph: OnnxGraph) -> tuple[int, int, int] | None:
    dims = graph.dims
    if len(dims) != 4 or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
        return None
    c, h, w = (dims[3], dims[1], dims[2]) if graph.layout() == "NHWC" else (dims[1], dims[2], dims[3])
    return (int(c), int(h), int(w)) if h == w else None


def input_layout(graph: OnnxGraph) -> str | None:
    return graph.layout()


def has_lrn(graph: OnnxGraph) -> bool:
    return any(n.op_type == "LRN" for n in graph.model.graph.node)


def load_parameters(graph: OnnxGraph, arrays: dict[str, np.ndarray], config: NetConfig) -> list[str]:
    """Replace the weights by canonical arrays (user name -> array); returns notes on how they were laid out."""
    from onnx import numpy_helper  # deferred: the optional ONNX install

    notes, first_dense = list(graph.notes), True
    for name, role, layout in graph.params:
        array = arrays[name]
        if layout == "dense" and role == "weight":
            array = from_canonical(array, "flat" if first_dense and graph.flat_hwc else "dense", config)
            if first_dense and graph.flat_hwc:
                notes.append("the graph flattens in H,W,C order (channels last): fc1 was loaded with its rows permuted")
            first_dense = False
        elif layout == "canonical" and role == "weight" and array.ndim == 2:
            first_dense = False
        old = graph.inits[name]
        new = numpy_helper.from_array(np.ascontiguousarray(array.astype(np.float32)), name)
        old.CopyFrom(new)
    return notes


def trace_model(graph: OnnxGraph, x: np.ndarray) -> Trace:
    """Run with every node's output added as a graph output (an in-memory copy): the logits and the layer events."""

    onnx = require("onnx", "reading .onnx models")
    ort = require("onnxruntime", "running .onnx models")
    model = onnx.ModelProto()
    model.CopyFrom(graph.model)
    final = model.graph.output[0].name
    wanted, events_of = [], []
    for node in model.graph.node:
        kind = _ONNX_KINDS.get(node.op_type)
        if kind is None or not node.output:
            continue
        out = node.output[0]
        if node.op_type == "MatMul":  # its bias is the Add after it
            add = [c for c in graph.consumers.get(out, []) if c.op_type == "Add"]
            out = add[0].output[0] if add else out
        if node.op_type == "Dropout" and len(node.output) > 1:
            out = node.output[0]
        wanted.append(out)
        events_of.append((node.name or out, kind, out))
    known = {o.name for o in model.graph.output}
    for name in dict.fromkeys(wanted):
        if name not in known:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every node's output
    fixed = graph.dims[0] if graph.dims and isinstance(graph.dims[0], int) and graph.dims[0] > 0 else len(x)
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        runs = []
        for start in range(0, len(x), fixed):  # a graph exported for a fixed batch runs the images in such batches
            chunk = x[start : start + fixed]
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - len(chunk), axis=0)])
            runs.append([v[: len(chunk)] for v in session.run(names, {graph.input: np.ascontiguousarray(padded)})])
        values = {n: np.concatenate([r[i] for r in runs]) for i, n in enumerate(names)}
    except Exception as e:  # onnxruntime's own error types are not exported
        return Trace(None, [], failure(e))
    events = [Event(name, kind, values[out], tuple(values[out].shape)) for name, kind, out in events_of]
    return Trace(values[final], events, None)
