"""The ecosystem's own formats, framework-free: safetensors weights, and ONNX models run by ONNX Runtime.

**safetensors** (``.safetensors``) holds the same canonical tensors as the ``.npz`` of :mod:`common.weights`
(names such as ``block1.conv1.weight``, conv OIHW, dense (out, in), batch-norm statistics included), written
and read with the library's NumPy API. Its header's ``__metadata__`` (strings only) holds the format and its
version, the configuration (``config.to_dict()`` as JSON) and the source framework, so a file is checked
against the network before any tensor is read. ``.npz`` stays the default and every ``.npz`` saved before
still loads; the format follows from the file's name (:func:`save_weights_file`, :func:`load_weights_file`).

**ONNX** (``.onnx``) is written by each framework's own exporter (``vgg_*/export.py``): an NCHW float32 input
``images`` (pixels in [0, 1]) with a dynamic or fixed batch axis, an output ``logits``, and the same metadata
in the model's ``metadata_props``. :func:`finish_onnx` names, stamps and checks what the exporter wrote;
:class:`OnnxModel` runs it with ONNX Runtime on the CPU — a fourth executor, written by none of the three
frameworks, that every export must agree with.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .arch import NetConfig, config_from_dict
from .backends import get_backend
from .data import check_batch
from .errors import BackendUnavailable, ConfigError, InputError, WeightsError, reason
from .files import atomic_write, check_target
from .spec import available_memory, check_memory, format_bytes, spec
from .weights import (
    FORMAT,
    MODEL_SUFFIXES,
    check_finite_weights,
    check_weights,
    load_npz,
    make_meta,
    meta_config,
    no_file,
    parse_meta,
    save_npz,
    scheme_weights,
    trainable_shapes,
)

SAFETENSORS_SUFFIX = ".safetensors"
ONNX_SUFFIX = ".onnx"
# Every file format the `vgg` command reads or writes, by name: the four of common.weights and these two.
FILE_SUFFIXES = {**MODEL_SUFFIXES, "safetensors": SAFETENSORS_SUFFIX, "onnx": ONNX_SUFFIX}
OPSET = 18  # asked of PyTorch's and Keras' exporters; MXNet 1.9's writes the newest opset of the installed onnx
INPUT, OUTPUT = "images", "logits"
INSTALL = "pip install -e '.[onnx]'"
_JSON_KEYS = ("version", "config", "opset", "batch")  # metadata values stored as JSON text; the others are text


def require(module: str, what: str):
    """Import ``module`` (``onnx``, ``onnxruntime``, ``safetensors``, ...) or say in one line what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise BackendUnavailable(
            f"{what} needs the Python package {package}, which is not installed here; install it with: {INSTALL}"
        ) from None


# --- metadata as strings (safetensors' header and ONNX's metadata_props hold text only) ---------------------


def meta_strings(meta: dict) -> dict[str, str]:
    """A metadata record as text: strings as they are, numbers and the configuration as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def meta_from_strings(strings: dict[str, str] | None, path, what: str) -> dict:
    """The metadata record of :func:`meta_strings`, checked to be this project's and of a version this code reads."""
    if not strings or "format" not in strings or "config" not in strings:
        raise WeightsError(
            f"{path} is {what} but not one of this project's: it has no {FORMAT!r} configuration in its "
            f"metadata; write it with vgg convert (or save_weights / export_onnx)"
        )
    meta = {}
    for key, text in strings.items():
        try:
            meta[key] = json.loads(text) if key in _JSON_KEYS else text
        except (json.JSONDecodeError, RecursionError):  # RecursionError: nested past Python's limit
            raise WeightsError(f"{path} has damaged metadata ({key}: {text[:40]!r})") from None
    return parse_meta(json.dumps(meta), path)


@contextlib.contextmanager
def quiet_exporter(logger_name: str):
    """An exporter's progress lines and warnings kept off the terminal (its errors still raise)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


# --- safetensors ---------------------------------------------------------------------------------------------


def save_safetensors(
    path: str | os.PathLike,
    config: NetConfig,
    weights: dict[str, np.ndarray],
    source: str,
    source_version: str,
    extra: dict | None = None,
) -> Path:
    """Write canonical weights and their metadata to a ``.safetensors`` file, atomically."""
    numpy_api = require("safetensors.numpy", "writing .safetensors weights")
    weights = check_weights(config, weights, copy=False)
    meta = make_meta(config, source, source_version, **(extra or {}))
    data = numpy_api.save({k: np.ascontiguousarray(v) for k, v in weights.items()}, metadata=meta_strings(meta))
    return atomic_write(path, lambda f: f.write(data))


def _safe_open(path: Path):
    """safetensors' reader on ``path`` (the header is parsed and the file's length checked; no tensor is read)."""
    safetensors = require("safetensors", "reading .safetensors weights")
    if not path.is_file():
        raise WeightsError(no_file(path, "weights file"))
    try:
        return safetensors.safe_open(str(path), framework="numpy")
    except (safetensors.SafetensorError, OSError) as e:
        raise WeightsError(
            f"{path} is not a readable safetensors file ({e}); it is damaged (truncated?) or of another format"
        ) from None


def read_safetensors_meta(path: str | os.PathLike) -> dict:
    """The metadata of a ``.safetensors`` weights file, read from its header alone."""
    path = Path(path)
    with _safe_open(path) as f:
        return meta_from_strings(f.metadata(), path, "a safetensors file")


def load_safetensors(path: str | os.PathLike, config: NetConfig | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Read a ``.safetensors`` weights file; with ``config``, refuse another configuration before reading tensors.

    The header is checked first: the metadata, then every tensor's name, dtype and shape against the spec; only
    then are the tensors read.
    """
    path = Path(path)
    with _safe_open(path) as f:
        meta = meta_from_strings(f.metadata(), path, "a safetensors file")
        saved = meta_config(meta, path, config)
        target = config or saved
        expected = spec(target).param_shapes()
        names = set(f.keys())
        missing, extra = [n for n in expected if n not in names], sorted(names - set(expected))
        if missing or extra:
            said = [f"{len(missing)} missing (first {missing[0]})" if missing else ""]
            said += [f"{len(extra)} extra (first {extra[0]})" if extra else ""]
            raise WeightsError(
                f"{path} holds {len(names)} tensors, not the {len(expected)} of {target.describe()}: "
                f"{' and '.join(s for s in said if s)}; it was altered or made by another program"
            )
        for name, shape in expected.items():
            piece = f.get_slice(name)
            dtype, got = piece.get_dtype(), tuple(piece.get_shape())
            if dtype not in ("F32", "F64", "F16"):
                raise WeightsError(f"{path}: tensor {name} has dtype {dtype}; weights are floating point (F32)")
            if got != shape:
                raise WeightsError(
                    f"{path}: tensor {name} has shape {got}, but {target.describe()} has {shape}; "
                    f"the file was altered or made by another program"
                )
        weights = {name: f.get_tensor(name) for name in expected}
    return check_weights(target, weights, source=path), meta


def save_weights_file(
    path: str | os.PathLike, config: NetConfig, weights: dict[str, np.ndarray], source: str, source_version: str
) -> Path:
    """Canonical weights to ``path`` in the format its name says: ``*.safetensors``, else the ``.npz`` of today."""
    write = save_safetensors if str(path).endswith(SAFETENSORS_SUFFIX) else save_npz
    return write(path, config, weights, source, source_version)


def load_weights_file(path: str | os.PathLike, config: NetConfig | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """(canonical weights, metadata) of a ``*.safetensors`` or ``.npz`` weights file, by its name."""
    read = load_safetensors if str(path).endswith(SAFETENSORS_SUFFIX) else load_npz
    return read(path, config)


# --- file names ------------------------------------------------------------------------------------------------


def file_format(path: str | os.PathLike) -> str:
    """Which format a model file is in (``npz``, ``safetensors``, ``onnx``, ``torch``, ``tf``, ``mxnet``), by name."""
    name = Path(path).name
    for fmt, suffix in FILE_SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    raise ConfigError(
        f"cannot tell the format of {path}: name it " + ", ".join(f"*{s} ({f})" for f, s in FILE_SUFFIXES.items())
    )


def check_file_path(path: str | os.PathLike, fmt: str) -> Path:
    """``path`` if its name has ``fmt``'s suffix, else one line that says which name to give."""
    named = file_format(path)
    if named != fmt:
        raise ConfigError(
            f"cannot tell the format of {path}: its name says {named}, but {fmt} was asked for; "
            f"a {fmt} model file must be named *{FILE_SUFFIXES[fmt]}"
        )
    return Path(path)


# --- ONNX: what an exporter wrote, named, stamped and checked --------------------------------------------------


def check_export_args(path: str | os.PathLike, batch: int | None, config: NetConfig) -> tuple[Path, int | None]:
    """``export_onnx``'s arguments checked before any work: a ``*.onnx`` path in an existing folder, not a folder,
    and a batch size the exporter's example batch fits in memory with (``config``: the network's)."""
    path = check_target(check_file_path(path, "onnx"))  # what atomic_write checks, before the export's work
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch <= 0):
        raise ConfigError(f"batch must be None (a dynamic batch axis) or a positive whole number, got {batch!r}")
    if batch is not None:
        check_memory(config, int(batch))  # the exporter runs one example batch of that size
    require("onnx", "ONNX export")
    return path, None if batch is None else int(batch)


def _rename(graph, old: str, new: str) -> None:
    """Give value ``old`` the name ``new`` everywhere in ``graph`` (where an exporter cannot name it itself)."""
    if old == new:
        return
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new


def _dims(value) -> list:
    """The dimensions of a graph input or output: ints, or the names of dynamic axes."""
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _check_signature(model, config: NetConfig, path) -> int | None:
    """The graph's one input and one output checked against ``config``; the fixed batch size, or None if dynamic."""
    onnx = require("onnx", "reading .onnx models")
    graph = model.graph
    constants = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in constants]
    want_in = [config.in_channels, config.input_size, config.input_size]
    if (
        [i.name for i in inputs] != [INPUT]
        or [o.name for o in graph.output] != [OUTPUT]
        or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT
        or _dims(inputs[0])[1:] != want_in
        or _dims(graph.output[0])[1:] != [config.num_classes]
    ):
        got = (
            ", ".join(f"{v.name} {_dims(v)}" for v in inputs)
            + " -> "
            + ", ".join(f"{v.name} {_dims(v)}" for v in graph.output)
        )
        raise WeightsError(
            f"{path} is a graph of another network: {got}, but {config.describe()} takes "
            f"{INPUT} [N, {', '.join(map(str, want_in))}] float32 -> {OUTPUT} [N, {config.num_classes}]"
        )
    batch = _dims(inputs[0])[0]
    return batch if isinstance(batch, int) and batch > 0 else None


def finish_onnx(
    path: str | os.PathLike,
    config: NetConfig,
    source: str,
    source_version: str,
    exporter: str,
    batch: int | None = None,
) -> None:
    """Complete the file an exporter just wrote at ``path``: names, batch axis, metadata, ONNX's checker.

    The single input and output are named ``images`` and ``logits`` (where the exporter chose other names),
    the batch axis is called ``batch`` (or fixed to ``batch``), weights listed among the inputs are left as
    constants only, and the metadata (format, version, configuration, source, exporter, opset) goes into
    ``metadata_props``. The graph's nodes are the exporter's, untouched.
    """
    onnx = require("onnx", "ONNX export")
    model = onnx.load(str(path))
    graph = model.graph
    constants = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise WeightsError(
            f"the {exporter} export has inputs {[i.name for i in inputs]} and outputs "
            f"{[o.name for o in graph.output]}; expected one of each"
        )
    del graph.input[:]
    graph.input.extend(inputs)  # an initializer listed as an input could be overridden; a constant cannot
    _rename(graph, inputs[0].name, INPUT)
    _rename(graph, graph.output[0].name, OUTPUT)
    classes = graph.output[0].type.tensor_type.shape.dim[1:]
    if len(classes) == 1 and not (classes[0].dim_value or classes[0].dim_param):
        classes[0].dim_value = config.num_classes  # MXNet's dynamic export leaves it unknown; checked below
    for value in (graph.input[0], graph.output[0]):
        axis = value.type.tensor_type.shape.dim[0]
        if batch is None:
            axis.dim_param = "batch"
        else:
            axis.dim_value = batch
    _check_signature(model, config, f"the {exporter} export")
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    meta = make_meta(config, source, source_version, exporter=exporter, opset=opset, batch=batch)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, meta_strings(meta))
    onnx.checker.check_model(model, full_check=True)  # full: ONNX's shape inference must agree with the shapes
    onnx.save(model, str(path))


# --- ONNX Runtime: the fourth executor ---------------------------------------------------------------------------


def model_tensors(graph):
    """Every tensor a graph holds: its initializers, and the constants in its nodes' attributes and subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                yield from model_tensors(sub)


PROTOBUF_MOST = 2**31 - 1  # bytes one protobuf message (an .onnx file without external data) can hold
_PACKED_4BIT = ("INT4", "UINT4", "FLOAT4E2M1")  # types whose raw data packs two values in a byte
# Where a tensor keeps its values when not as raw bytes: one field per type family, a value per entry (complex
# numbers two entries).
_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


def declared_bytes(onnx, tensor) -> int:
    """The bytes a tensor declares by its dims and type (8 per value of a type numpy does not know)."""
    count = math.prod(tensor.dims)
    if _type_name(onnx, tensor.data_type) in _PACKED_4BIT:
        return (count + 1) // 2
    try:
        return count * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return count * 8


def _type_name(onnx, data_type: int) -> str:
    """ONNX's name of a tensor type (``FLOAT``), or its number where this onnx knows no such type."""
    types = onnx.TensorProto.DataType
    return types.Name(data_type) if data_type in types.values() else str(data_type)


def _external_length(tensor, folder: Path, path: Path) -> int:
    """The bytes a tensor kept as external data reads, from a plain file inside the model's folder (links
    followed) and inside that file; ONNX reads the rest of the file where no length is given."""
    entries = {e.key: e.value for e in tensor.external_data}
    where = entries.get("location", "")
    target = (folder / where).resolve()
    if not (target.is_relative_to(folder) and target.is_file()):
        raise WeightsError(
            f"{path} keeps the weight {tensor.name!r} in {where!r}, which is not a file in the model's "
            f"folder {folder} (links followed); put the model's data files beside it, or save it whole"
        )
    size = target.stat().st_size
    try:
        offset = int(entries.get("offset") or 0)
        length = int(entries["length"]) if entries.get("length") else size - offset
    except ValueError:
        raise WeightsError(
            f"{path} keeps the weight {tensor.name!r} at an offset or length that is no number of bytes; it is "
            f"damaged or was altered"
        ) from None
    if offset < 0 or length < 0 or offset + length > size:
        raise WeightsError(
            f"{path} keeps the weight {tensor.name!r} in {length} bytes from byte {offset} of {where!r}, which "
            f"holds {size}; it is damaged (truncated?)"
        )
    return length


def _check_tensors(model, path: Path) -> int:
    """Every tensor of the model holds what it declares (its dims and type: raw bytes, values, or a range of an
    external file), checked on the file's structure before any external data is read; the bytes they declare.

    ONNX reads a tensor's external data by its ``length`` (the rest of the file where none is given), not by its
    shape, and numpy and ONNX Runtime allocate by the shape: a small tensor that names a huge file, or a huge one
    that holds a few bytes, is refused here. With this, the bytes declared are the bytes read.
    """
    onnx = require("onnx", "reading .onnx models")
    folder = path.resolve().parent
    total = 0
    for tensor in model_tensors(model.graph):
        declared = declared_bytes(onnx, tensor)
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            held, unit = _external_length(tensor, folder, path), "bytes"
        elif tensor.raw_data:
            held, unit = len(tensor.raw_data), "bytes"
        else:  # values in a typed field: compared as values
            per = 2 if tensor.data_type in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128) else 1
            held, unit = sum(len(getattr(tensor, f)) for f in _TYPED_FIELDS) // per, "values"
        expected = declared if unit == "bytes" else math.prod(tensor.dims)
        if held != expected or min(tensor.dims, default=0) < 0:
            raise WeightsError(
                f"{path}: its tensor {tensor.name!r} declares shape {tuple(tensor.dims)} of "
                f"{_type_name(onnx, tensor.data_type)} ({expected} {unit}), but holds {held} {unit}; it is damaged "
                f"or was altered"
            )
        total += declared
    return total


def _most_tensor_bytes(strings: dict[str, str] | None, path: Path) -> int | None:
    """The most tensor bytes a model of this project's may hold: the network its metadata ``strings`` names, its
    parameters and statistics as float32, twice over, and 1 MiB; None where the metadata names no network."""
    try:
        s = spec(meta_config(meta_from_strings(strings, path, "an ONNX model"), path))
    except (WeightsError, ConfigError):
        return None
    return 2 * 4 * (s.params + s.buffers) + 2**20


def _check_declared_bytes(model, path: Path, declared: int) -> None:
    """A model of this project's (its metadata names its configuration) may declare no more tensor bytes than that
    network holds (its parameters and statistics as float32, twice over, and 1 MiB); no model more than this
    machine's free memory. Checked on the tensors' declared shapes, before its external data are read or ONNX
    Runtime copies them."""
    most = _most_tensor_bytes({p.key: p.value for p in model.metadata_props}, path)
    # None: no model of this project's (a user's, for vgg conform), held to its layers by what reads it
    if most is not None and declared > most:
        raise WeightsError(
            f"{path} declares {format_bytes(declared)} of tensors, where the network its metadata describes "
            f"holds {format_bytes(most / 2)}; it was altered or made by another program"
        )
    available = available_memory()
    if available is not None and declared > available:
        raise WeightsError(
            f"{path} declares {format_bytes(declared)} of tensors, more than the {format_bytes(available)} of memory "
            f"available; free memory, or check it on a machine with more"
        )


def _varint(read) -> int:
    """One protobuf varint from ``read(1)``; a ValueError past 10 bytes or at the end of the data."""
    value = 0
    for shift in range(0, 70, 7):
        byte = read(1)
        if not byte:
            raise ValueError("the data ends inside a number")
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
    raise ValueError("a number longer than protobuf writes")


METADATA_FIELD = 14  # ModelProto.metadata_props in onnx.proto: repeated StringStringEntryProto (key 1, value 2)


def _scan_metadata(path: Path) -> dict[str, str] | None:
    """An ONNX file's metadata (``metadata_props``), read field by field from the file's top-level protobuf
    fields with the others' bytes skipped, not read (the graph with its weights among them); None where the file
    does not scan as protobuf (ONNX then says what is wrong with it)."""
    found: dict[str, str] = {}
    try:
        with open(path, "rb") as f:
            end = os.fstat(f.fileno()).st_size
            while f.tell() < end:
                key = _varint(f.read)
                field, wire = key >> 3, key & 7
                if wire == 0:
                    _varint(f.read)
                elif wire in (1, 5):
                    f.seek(8 if wire == 1 else 4, os.SEEK_CUR)
                elif wire == 2:
                    n = _varint(f.read)
                    if field == METADATA_FIELD and n <= 2**20:
                        entry = io.BytesIO(f.read(n))
                        parts: dict[int, str] = {}
                        while entry.tell() < n:
                            tag = _varint(entry.read)
                            if tag & 7 != 2:
                                return None
                            parts[tag >> 3] = entry.read(_varint(entry.read)).decode()
                        found[parts.get(1, "")] = parts.get(2, "")
                    else:
                        f.seek(n, os.SEEK_CUR)
                else:
                    return None
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return found


def _check_size_by_metadata(path: Path, size: int) -> None:
    """A model of this project's names its configuration in its metadata, which is read first
    (:func:`_scan_metadata`): a file larger than that network's tensors may take (as in
    :func:`_check_declared_bytes`) is refused before protobuf reads it whole."""
    most = _most_tensor_bytes(_scan_metadata(path), path)
    if most is not None and size > most:  # None: a user's model, or a damaged one, held to its tensors once parsed
        raise WeightsError(
            f"{path} is {format_bytes(size)}, where the network its metadata describes holds "
            f"{format_bytes(most / 2)}; it was altered or made by another program"
        )


def read_onnx(path: Path, check: Callable[[Any], None] | None = None):
    """The ONNX model in the file at ``path``, with its weights, or a WeightsError that says what is wrong.

    Nothing is read whole before its size is known: the file is at most what one protobuf holds (2 GiB, no
    compression) and, for a model of this project's, what the network its metadata names takes (the metadata is
    read first, the rest skipped: :func:`_check_size_by_metadata`); every tensor holds exactly what its shape
    declares (:func:`_check_tensors`), and the bytes declared fit the network the model's metadata describes and
    this machine's memory (:func:`_check_declared_bytes`), before any external data is read. ``check(model)`` is
    called there too: ``vgg conform`` holds a user's model, which has no such metadata, to the layers it checks.

    A model may keep weights in files beside it (ONNX's external data); those are read only where they are
    plain files inside the model's own folder once links are followed, so a file cannot make the project read
    another one (ONNX itself refuses ``..`` but follows links).
    """
    onnx = require("onnx", "reading .onnx models")
    from google.protobuf.message import DecodeError  # deferred: part of the optional ONNX install

    def damaged(e: Exception):
        return WeightsError(
            f"{path} is not a readable ONNX model ({reason(e)}); it is damaged (truncated?) or of another format"
        )

    size = path.stat().st_size if path.is_file() else None
    if size == 0:  # protobuf reads no bytes as an empty model, and says nothing
        raise WeightsError(f"{path} is empty (0 bytes), not an ONNX model; export or copy it again")
    if size is not None and size > PROTOBUF_MOST:  # protobuf would read it all, then refuse it
        raise WeightsError(
            f"{path} is {format_bytes(size)}, more than the 2 GiB one ONNX (protobuf) file holds; it is not an ONNX "
            f"model (a larger one keeps its weights as external data, beside it)"
        )
    if size is not None:
        _check_size_by_metadata(path, size)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError, RuntimeError) as e:
        raise damaged(e) from None
    _check_declared_bytes(model, path, _check_tensors(model, path))
    if check is not None:
        check(model)
    try:
        onnx.load_external_data_for_model(model, str(path.resolve().parent))
    except Exception as e:  # ValidationError where a file is missing or short; OSError
        raise damaged(e) from None
    return model


class OnnxModel:
    """An exported network run by ONNX Runtime's CPU provider, checked against its metadata before it runs.

    ``config`` and ``meta`` are read from the file; ``batch`` is its fixed batch size or None; calling it on an
    NCHW float32 batch (pixels in [0, 1]) gives the logits as a NumPy array.
    """

    def __init__(self, path: str | os.PathLike, config: NetConfig | None = None):
        onnx = require("onnx", "reading .onnx models")
        ort = require("onnxruntime", "running .onnx models")
        self.path = path = Path(path)
        if not path.is_file():
            raise WeightsError(no_file(path, "model file"))
        model = read_onnx(path)
        strings = {p.key: p.value for p in model.metadata_props}
        self.meta = meta_from_strings(strings, path, "an ONNX model")
        saved = meta_config(self.meta, path, config)
        self.config = config or saved
        self.batch = _check_signature(model, self.config, path)
        try:
            onnx.checker.check_model(model)
        except Exception as e:  # ValidationError, and UnicodeDecodeError where damaged bytes hold a name
            said = (str(e).splitlines() or [""])[0]
            raise WeightsError(f"{path} fails ONNX's checker ({type(e).__name__}: {said}); it is damaged") from None
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(
                model.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )  # the model read and checked above, not the file again (whose external data ORT would reread)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types, not exported
            raise WeightsError(f"ONNX Runtime cannot load {path} ({str(e).splitlines()[0]}); it is damaged") from None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits of an NCHW float32 batch."""
        if not isinstance(x, np.ndarray):
            raise InputError(f"the input is a {type(x).__name__}; give a NumPy array (NCHW float32)")
        check_batch(self.config, x.shape, x.dtype.name, where="the input")
        if self.batch is not None and x.shape[0] != self.batch:
            raise InputError(
                f"{self.path} was exported for batches of exactly {self.batch}, got {x.shape[0]}; "
                f"export it again without a fixed batch, or pad the batch"
            )
        return self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(x)})[0]

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits of any number of examples: split into (padded) batches of the fixed size where there is one."""
        if self.batch is None:
            return self(x)
        out = []
        for start in range(0, len(x), self.batch):
            part = x[start : start + self.batch]
            padded = np.concatenate([part, np.zeros((self.batch - len(part), *part.shape[1:]), part.dtype)])
            out.append(self(padded)[: len(part)])
        return np.concatenate(out)


def load_onnx(path: str | os.PathLike, config: NetConfig | None = None) -> OnnxModel:
    """An ``.onnx`` of ``export_onnx`` ready to run; with ``config``, another network's file is refused."""
    return OnnxModel(path, config)


def evaluate_onnx(model: OnnxModel, batches) -> float:
    """Accuracy over ``batches`` of (NCHW float32 images, labels) NumPy pairs, e.g. :mod:`common.data`'s."""
    correct = total = 0
    for x, y in batches:
        correct += int((model.logits(x).argmax(axis=1) == y).sum())
        total += len(y)
    return correct / total


def weights_api(
    export_weights: Callable, import_weights: Callable, source: str, source_version: str, default_init: Callable
) -> tuple[Callable, Callable, Callable, Callable]:
    """The four weights helpers every backend exports, made once from its ``export_weights``/``import_weights``.

    ``source``/``source_version`` name the framework in saved files; ``default_init(net)`` re-initialises a
    network the framework's own way (``init_weights(net, "default")``). Returns ``(named_parameters,
    init_weights, save_weights, load_weights)``.
    """

    def named_parameters(net: Any) -> list[tuple[str, tuple[int, ...]]]:
        """(canonical name, shape) of every trainable parameter, in order: the same list in every backend."""
        return trainable_shapes(export_weights(net))

    def init_weights(net: Any, scheme: str = "xavier", seed: int = 0, value: float = 1.0) -> Any:
        """Re-initialise ``net`` by one of the book's schemes (see :func:`common.weights.scheme_weights`).

        Every scheme but ``"default"`` is drawn in NumPy and imported, so a seed gives bit-identical weights in
        all three frameworks; ``"default"`` is the framework's own initialisation.
        """
        if scheme == "default":
            default_init(net)
            return net
        return import_weights(net, scheme_weights(net.config, scheme, seed, value))

    def save_weights(net: Any, path: str | os.PathLike) -> Path:
        """Write the canonical weights and configuration to a ``.npz`` (or ``.safetensors``) file, atomically."""

        weights = check_finite_weights(export_weights(net), "the network")
        return save_weights_file(path, net.config, weights, source, source_version)

    def load_weights(net: Any, path: str | os.PathLike) -> Any:
        """Load a ``.npz`` or ``.safetensors`` of any backend; refuses another configuration before touching it."""

        weights, _ = load_weights_file(path, net.config)
        return import_weights(net, weights)

    return named_parameters, init_weights, save_weights, load_weights


def read_model(path) -> tuple:
    """(config, canonical weights, source framework) of a saved model in any of the five formats read back."""

    fmt = file_format(path)
    if fmt == "onnx":
        raise ConfigError(
            f"{path} is an ONNX model: ONNX is a format to export to, not to read weights from; convert the "
            f".npz, .safetensors or framework file it was exported from"
        )
    if fmt in ("npz", "safetensors"):
        weights, meta = load_weights_file(path)
        return config_from_dict(meta["config"]), weights, meta["source"]  # both loaders refuse non-finite values
    b = get_backend(fmt)
    net = b.load_model(path)
    return net.config, b.export_weights(net), fmt
