"""Weights in canonical form: Gluon's parameter names map one-to-one onto the canonical names, layouts match."""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mxnet as mx
import numpy as np

from common.arch import VGGConfig
from common.errors import WeightsError, reason
from common.files import atomic_write, check_utf8
from common.interchange import weights_api
from common.spec import spec
from common.weights import (
    META_KEY,
    META_LIMIT,
    check_finite_weights,
    check_model_path,
    check_weights,
    existing_model,
    extra_arrays,
    make_meta,
    meta_config,
    parse_meta,
)
from common.zoo import from_gluon_zoo

from .model import Net, from_config

# Gluon's batch-norm parameter names -> canonical; the other suffixes are canonical already
_RENAME = {"gamma": "weight", "beta": "bias"}
_SUFFIXES = ("weight", "bias", "gamma", "beta", "running_mean", "running_var")


def _params(net):
    """Canonical name -> Gluon ``Parameter``, one mapping for both ways.

    ``block1_bn1_gamma`` is ``block1.bn1.weight``.
    """
    out = {}
    for name, p in net.collect_params().items():
        suffix = next(s for s in _SUFFIXES if name.endswith("_" + s))
        layer = name[len(net.prefix) : -len(suffix) - 1]  # block1_bn1 (the network's own prefix, if any, dropped)
        out[f"{layer.replace('_', '.')}.{_RENAME.get(suffix, suffix)}"] = p
    return out


def export_weights(net: Net) -> dict[str, np.ndarray]:
    """Canonical name -> NumPy array (conv OIHW, dense (out, in), batch-norm statistics included)."""
    return {name: p.list_data()[0].asnumpy() for name, p in _params(net).items()}


def import_weights(net: Net, weights: Mapping[str, np.ndarray]) -> Net:
    """Set every parameter from canonical arrays; checks all names and shapes before changing anything."""
    weights = check_weights(net.config, weights, copy=False)
    params = _params(net)
    for name, array in weights.items():
        params[name].set_data(mx.nd.array(array, dtype=array.dtype))
    return net


def _default_init(net):
    """Gluon's own: uniform(-0.07, 0.07) weights, zero biases, batch norm at identity (``"default"``)."""
    net.initialize(mx.init.Uniform(), force_reinit=True)


named_parameters, init_weights, save_weights, load_weights = weights_api(
    export_weights, import_weights, "mxnet", mx.__version__, _default_init
)


def save_model(net: Net, path: str | os.PathLike) -> Path:
    """MXNet's own NDArray file (``.params``): canonical names and the configuration, written atomically."""
    path = check_utf8(check_model_path(path, "mxnet"), "MXNet")
    meta = json.dumps(make_meta(net.config, "mxnet", mx.__version__)).encode()
    weights = check_finite_weights(export_weights(net), "the network")
    arrays = {name: mx.nd.array(a, dtype=a.dtype) for name, a in weights.items()}
    arrays[META_KEY] = mx.nd.array(np.frombuffer(meta, np.uint8), dtype=np.uint8)
    return atomic_write(path, lambda tmp: mx.nd.save(tmp, arrays), by_name=True)


# MXNet's NDArray file (src/ndarray/ndarray.cc, NDArray::Save): the list's magic and a reserved word, the arrays
# (each: its magic, storage type, shape, context, dtype, then its data), then their names.
LIST_MAGIC, ARRAY_MAGICS = 0x112, (0xF993FAC9, 0xF993FACA)
ITEMSIZE = {0: 4, 1: 8, 2: 2, 3: 1, 4: 4, 5: 1, 6: 8, 7: 1, 12: 2}  # mshadow's type flags
FLOATS = (0, 1, 2)  # float32, float64, float16


def _declared(path) -> tuple[dict[str, tuple[tuple[int, ...], int, int]], dict]:
    """Each array's (shape, type flag, data offset) by name, and the file's metadata, from its headers alone:
    every data block is skipped, not read, so a file that declares more than it holds is refused here."""
    size = path.stat().st_size

    def damaged(why: str) -> WeightsError:
        return WeightsError(
            f"{path} is not a readable MXNet parameter file ({why}); it is empty, damaged or of another format"
        )

    with path.open("rb") as f:

        def take(fmt: str) -> tuple:
            data = f.read(struct.calcsize(fmt))
            if len(data) != struct.calcsize(fmt):
                raise damaged("it ends inside a header")
            return struct.unpack(fmt, data)

        magic, _, count = take("<QQQ")
        if magic != LIST_MAGIC or count > size:
            raise damaged("no NDArray list header")
        arrays = []
        for _ in range(count):
            magic, stype, ndim = take("<IiI")
            if magic not in ARRAY_MAGICS or ndim > 32:
                raise damaged("no NDArray header")
            if stype != 0:  # a sparse array: no weights of a network this project saves
                raise WeightsError(f"{path} holds a sparse array; a model file holds dense arrays: it was altered")
            shape = take(f"<{ndim}q")
            _, _, flag = take("<iii")
            if flag not in ITEMSIZE or min(shape, default=0) < 0:
                raise damaged(f"an array of type {flag} and shape {shape}")
            offset = f.tell()
            f.seek(offset + math.prod(shape) * ITEMSIZE[flag])
            if f.tell() > size:
                raise damaged(f"an array of shape {shape} reaches past its end")
            arrays.append((tuple(shape), flag, offset))
        (names,) = take("<Q")
        keys = []
        for _ in range(names if names == count else 0):
            (length,) = take("<Q")
            keys.append(f.read(min(length, 4096)).decode("utf-8", "replace"))
        if len(keys) != count:
            raise damaged(f"{names} names for {count} arrays")
        declared = dict(zip(keys, arrays, strict=True))
        if META_KEY not in declared:
            raise WeightsError(f"{path} is an MXNet parameter file but not one of this project's models")
        shape, flag, offset = declared.pop(META_KEY)
        if flag != 3 or len(shape) != 1 or shape[0] > META_LIMIT:
            raise damaged(f"its record is of type {flag} and shape {shape}")
        f.seek(offset)
        meta = parse_meta(f.read(shape[0]).decode("utf-8", "replace"), path)
    return declared, meta


def load_model(path: str | os.PathLike) -> Net:
    """A network rebuilt from a ``.params`` of :func:`save_model` (MXNet's NDArray format: data only).

    Every array's name, shape and dtype is read from the file's headers and checked against the configuration
    it records before MXNet reads any data.
    """
    path = check_utf8(existing_model(path, "mxnet"), "MXNet")
    declared, meta = _declared(path)
    expected = spec(meta_config(meta, path)).param_shapes()
    extra_arrays(path, declared, expected)
    for name, shape in expected.items():
        got, flag, _ = declared.get(name, (None, 0, 0))
        if got is not None and (got != shape or flag not in FLOATS):
            raise WeightsError(
                f"{path}: its array {name} is declared {got} of type {flag}, but the configuration recorded in the "
                f"file gives it shape {shape} in floating point; it was altered or made by another program"
            )
    try:
        saved = mx.nd.load(str(path))
    except (mx.base.MXNetError, UnicodeDecodeError) as e:  # damaged names fail to decode
        raise WeightsError(
            f"{path} is not a readable MXNet parameter file ({reason(e)}); it is empty, damaged or of another format"
        ) from None
    if not isinstance(saved, dict) or META_KEY not in saved:
        raise WeightsError(f"{path} is an MXNet parameter file but not one of this project's models")
    meta = parse_meta(saved.pop(META_KEY).asnumpy().astype(np.uint8).tobytes().decode("utf-8", "replace"), path)
    config = meta_config(meta, path)
    weights = check_weights(config, {k: v.asnumpy() for k, v in saved.items()}, copy=False, source=path)
    return import_weights(from_config(config), weights)


def zoo_weights(zoo_net: Any) -> tuple[VGGConfig, dict[str, np.ndarray]]:
    """(config, canonical weights) of a Gluon ``model_zoo.vision`` VGG (``vgg11`` ... ``vgg19_bn``), initialised."""
    try:
        params = [(name, p.data().asnumpy()) for name, p in zoo_net.collect_params().items()]
    except mx.gluon.parameter.DeferredInitializationError:
        raise WeightsError(
            "the Gluon network's shapes are not known yet: run it on one 3x224x224 batch first "
            "(Gluon infers the first dense layer's input width then)"
        ) from None
    return from_gluon_zoo(params)
