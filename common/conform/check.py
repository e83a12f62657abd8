"""The check itself: :func:`conform`, in named phases (open, structure, numerics, diagnosis)."""

from __future__ import annotations

import importlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..arch import LayerPlan, NetConfig
from ..backends import BACKENDS, get_backend, require
from ..errors import ConfigError, VGGError, arg
from ..spec import Spec, spec
from . import onnx as onnx_adapter
from .inference import align, check_room, given_options, infer_config, match_params
from .pitfalls import Diagnosis, init_diagnosis, numeric_diagnosis, same_values, shape_diagnosis
from .records import TOLERANCE, LayerRow, Param, Trace
from .reference import plan_layers, probe_images, probe_weights, rel_error
from .report import Report, dims


def _adapter(name: str):
    """The ``conform`` module of backend ``name`` (``torch``, ``tf``, ``mxnet``), or this module's ONNX part."""
    if name == "onnx":
        return onnx_adapter
    require(name)
    return importlib.import_module(f"{BACKENDS[name].package}.conform")


_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def framework_of(model) -> str:
    """Which adapter reads ``model``: a path (``*.onnx``, ``*.keras``, ``*-symbol.json``), ``module:factory``
    (PyTorch), or a network object of one of the four frameworks."""
    if isinstance(model, (str, os.PathLike)):
        text = str(model)
        if text.endswith(".onnx"):
            return "onnx"
        if text.endswith(".keras"):
            return "tf"
        if text.endswith(("-symbol.json", ".params")):
            return "mxnet"
        if _FACTORY.match(text) and not Path(text).exists():
            return "torch"
        raise ConfigError(
            f"cannot tell what {text} is: give an ONNX file (*.onnx), a Keras model (*.keras), an MXNet Gluon "
            f"export (*-symbol.json beside its *.params) or a PyTorch factory as module.path:function"
        )
    roots = {c.__module__.split(".")[0] for c in type(model).__mro__}
    frameworks = (("torch", "torch"), ("keras", "tf"), ("tensorflow", "tf"), ("mxnet", "mxnet"), ("vgg_jax", "jax"))
    for root, name in frameworks:
        if root in roots:
            return name
    raise ConfigError(
        f"a {type(model).__name__} is no model this can check: give a torch.nn.Module, a keras.Model, an MXNet "
        f"Gluon block, or a path"
    )


def _trace_any(adapter, model, x_nchw: np.ndarray, layout: str | None) -> tuple[Trace, str]:
    """Run the model on the images in its layout; an unknown layout is tried NCHW, then channels-last."""
    if layout != "NHWC":
        trace = adapter.trace_model(model, x_nchw)
        if trace.error is None or layout == "NCHW" or trace.events:
            return trace, "NCHW"
        other = adapter.trace_model(model, np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1)))
        return (other, "NHWC") if other.error is None else (trace, "NCHW")
    return adapter.trace_model(model, np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))), "NHWC"


@dataclass
class _Model:
    """The model being checked, as its adapter opened it."""

    name: str  # the adapter's: "onnx", "torch", "tf" or "mxnet"
    adapter: ModuleType
    what: str  # how the report names it
    native: Any
    params: list[Param]


@dataclass
class _Run:
    """The model's run on the probe images, aligned with the spec's layers."""

    config: NetConfig
    spec: Spec
    plan: list[tuple[str, LayerPlan]]
    kinds: list[str]
    x: np.ndarray
    weights: dict[str, np.ndarray]
    trace: Trace
    layout: str
    matched: dict[int, int]
    outputs: dict[int, np.ndarray]


def conform(
    model,
    config: NetConfig | None = None,
    *,
    reference: str = "torch",
    seed: int = 0,
    images: int = 4,
    data_dir=None,
    **options,
) -> Report:
    """Check a user's VGG or AlexNet against the spec and a reference backend; see the package's docstring.

    ``model``: a path (``*.onnx``, ``*.keras``, ``*-symbol.json``), a PyTorch factory ``module.path:function``,
    or a network object; ``config`` or the configuration's arguments (``arch``, ``in_channels``, ``num_classes``,
    ``input_size``, ``ratio``, ``fc_hidden``, ``batch_norm``), the rest inferred from the parameter shapes.
    ``reference``: the backend that runs the same weights. Returns the :class:`Report`; bad input raises.
    """
    started = time.perf_counter()
    if reference not in BACKENDS:
        raise ConfigError(f"unknown reference {reference!r}; choose from {', '.join(BACKENDS)}")
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ConfigError(f"{arg('images')} must be a positive whole number, got {images!r}")
    given = given_options(config, options)
    opened, notes = _open(model, given)
    config, inferred = infer_config(
        opened.params,
        given,
        opened.adapter.declared_input(opened.native),
        opened.adapter.has_lrn(opened.native),
        opened.what,
    )
    check_room(config, images, opened.what)
    report = Report(
        model=opened.what,
        framework={"onnx": "ONNX Runtime", **{k: b.label for k, b in BACKENDS.items()}}[opened.name],
        config=config.to_dict(),
        description=config.describe(),
        inferred=inferred,
        notes=notes,
        params_spec=spec(config).params,
        params_model=sum(int(np.prod(p.shape)) for p in opened.params if p.trainable and p.shape),
        reference=BACKENDS[reference].label,
    )
    mapping = _match_parameters(report, opened.params, config)
    run = _run_model(report, opened, config, mapping, images, seed, data_dir)
    shapes_differ = _shapes_differ(report, run)
    if mapping is None or run.trace.error or shapes_differ:
        report.seconds = time.perf_counter() - started
        return report
    logits_error, finite = _compare_numerics(report, opened, run, reference)
    if logits_error > TOLERANCE and report.deterministic and finite:
        report.diagnoses.append(_diagnose_divergence(report, run))
    init = init_diagnosis(opened.params)
    if init:
        report.diagnoses.append(init)
    report.diagnoses = list({(d.pitfall, d.layer): d for d in report.diagnoses}.values())
    report.seconds = time.perf_counter() - started
    return report


def _open(model, given: dict[str, Any]) -> tuple[_Model, list[str]]:
    """Open ``model`` with its framework's adapter and read its parameters (lazy ones materialised by one run)."""
    name = framework_of(model)
    adapter = _adapter(name)
    what = str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__
    native = adapter.open_model(model)
    params = adapter.model_parameters(native)
    notes: list[str] = []
    if any(p.shape is None for p in params):  # lazy layers: one run on the given (or the book's) input sets them
        c, s = given.get("in_channels", 1), given.get("input_size", 224)
        adapter.trace_model(native, np.zeros((1, c, s, s), np.float32))
        params = adapter.model_parameters(native)
        notes.append(f"lazy layers were materialised by one run on a 1x{c}x{s}x{s} input")
        if any(p.shape is None for p in params):
            raise ConfigError(
                f"{what} keeps lazy parameters after a run on 1x{c}x{s}x{s} input: pass "
                f"{arg('in_channels')} and {arg('input_size')}"
            )
    return _Model(name, adapter, what, native, params), notes


def _match_parameters(report: Report, params: list[Param], config: NetConfig) -> dict[str, str] | None:
    """Match the model's parameters with the spec's, into the report; the model's name -> canonical name, or None
    where they do not match."""
    rows, mapping, bare = match_params(params, config)
    report.params = rows
    report.first_param_mismatch = next(
        (
            f"{r.canonical or '(none)'} (spec {dims(r.spec_shape)}, model's {r.name or '(none)'} {dims(r.shape)})"
            for r in rows
            if not r.ok
        ),
        None,
    )
    if bare:  # batch norms without running statistics
        report.diagnoses.append(Diagnosis.of("bn_batch_stats", bare[0]))
    return mapping


def _run_model(
    report: Report, opened: _Model, config: NetConfig, mapping: dict[str, str] | None, images: int, seed: int, data_dir
) -> _Run:
    """Load the probe weights (where the parameters matched), run the probe images and align the trace with the
    spec's layers, into the report's layer rows."""
    x = probe_images(config, images, data_dir)
    weights = probe_weights(config, seed, probe_images(config, 4, data_dir, start=images))
    report.images = len(x)
    adapter, native = opened.adapter, opened.native
    if mapping is not None:
        report.notes += adapter.load_parameters(native, {n: weights[c] for n, c in mapping.items()}, config) or []
    trace, layout = _trace_any(adapter, native, x, adapter.input_layout(native))
    if layout == "NHWC":
        report.notes.append("the model takes channels-last (N,H,W,C) images: it was given them so")
    report.run_error = trace.error
    if trace.error:
        last = trace.events[-1].name if trace.events else None
        report.run_error = f"{trace.error}" + (f" (after its layer {last})" if last else " (before any layer)")
    sp = spec(config)
    kinds = [layer.kind for layer in sp.layers]
    matched = align(kinds, trace.events)
    outputs: dict[int, np.ndarray] = {}
    for k, layer in enumerate(sp.layers):
        row = LayerRow(layer.name, layer.kind, layer.shape)
        if k in matched:
            event = trace.events[matched[k]]
            row.name, row.shape = event.name, event.shape
            if event.output is not None:
                outputs[k] = event.output
        report.layers.append(row)
    return _Run(config, sp, plan_layers(config), kinds, x, weights, trace, layout, matched, outputs)


def _shapes_differ(report: Report, run: _Run) -> bool:
    """Whether a layer's output shape differs from the spec's: the first named, with its pitfall where one explains
    it; where the model raised while its shapes still agreed, the next layer is named."""
    config, sp = run.config, run.spec
    start_shape = (config.in_channels, config.input_size, config.input_size)
    bad_shape = next(
        (k for k, r in enumerate(report.layers) if r.shape is not None and tuple(r.shape[1:]) != r.spec_shape), None
    )
    if bad_shape is not None:
        bad = report.layers[bad_shape]
        report.first_shape_mismatch = (
            f"{bad.canonical} (spec {dims(bad.spec_shape)}, model's {bad.name} {dims((bad.shape or ())[1:])})"
        )
        found = shape_diagnosis(run.plan, report.layers, start_shape, bad_shape)
        if found:
            report.diagnoses.append(found)
    elif run.trace.error and run.trace.events:  # it raised where its shapes still agreed: name the next layer
        after = max(run.matched, default=-1) + 1
        report.first_shape_mismatch = f"{sp.layers[after].name if after < len(sp.layers) else 'the output'} (raised)"
    return bad_shape is not None


def _compare_numerics(report: Report, opened: _Model, run: _Run, reference: str) -> tuple[float, bool]:
    """The same weights in the reference backend: the logits' and every layer's error, whether the model is
    deterministic and finite (with the pitfall where not). Returns the logits' error and whether every output
    is finite."""
    sp, trace, outputs = run.spec, run.trace, run.outputs
    ref_adapter = _adapter(reference)
    b = get_backend(reference)
    ref_net = b.import_weights(b.from_config(run.config), run.weights)
    ref_trace, _ = _trace_any(ref_adapter, ref_adapter.open_model(ref_net), run.x, b.LAYOUT)
    if ref_trace.error or ref_trace.logits is None:
        raise VGGError(f"the reference {BACKENDS[reference].label} failed on the same input: {ref_trace.error}")
    ref_matched = align(run.kinds, ref_trace.events)
    reference_out = {k: ref_trace.events[e].output for k, e in ref_matched.items()}
    report.logits_error = logits_error = rel_error(np.asarray(trace.logits), np.asarray(ref_trace.logits))
    for k, row in enumerate(report.layers):
        if k in outputs and reference_out.get(k) is not None:
            row.error = rel_error(outputs[k], reference_out[k])
    again, _ = _trace_any(opened.adapter, opened.native, run.x, run.layout)
    report.deterministic = again.error is None and same_values(np.asarray(again.logits), np.asarray(trace.logits))
    broken = next((k for k in sorted(outputs) if not np.isfinite(outputs[k]).all()), None)
    finite = broken is None and bool(np.isfinite(np.asarray(trace.logits)).all())
    if not finite:  # named where it starts: the first layer of any kind, the model's own name where the spec has none
        spec_of = {e: k for k, e in run.matched.items()}
        first = next(
            (e for e, ev in enumerate(trace.events) if ev.output is not None and not np.isfinite(ev.output).all()), None
        )
        report.first_divergence = sp.layers[broken].name if broken is not None else "the logits"
        where = (
            "logits"
            if first is None
            else (sp.layers[spec_of[first]].name if first in spec_of else f"the model's {trace.events[first].name}")
        )
        report.diagnoses.append(Diagnosis.of("non_finite", where))
    elif not report.deterministic:
        changed: int | None = None
        if len(again.events) == len(trace.events):
            changed = next(
                (k for k in sorted(outputs) if not same_values(again.events[run.matched[k]].output, outputs[k])), None
            )
        random = sp.layers[changed].name if changed is not None else None
        dropout = next(
            (n for n, p in run.plan[: (changed or len(run.plan) - 1) + 1][::-1] if p.kind == "dropout"), None
        )
        report.diagnoses.append(Diagnosis.of("dropout_eval", dropout or random or "a layer"))
        report.first_divergence = random
    return logits_error, finite


def _diagnose_divergence(report: Report, run: _Run) -> Diagnosis:
    """The first layer whose output differs from the reference's, and the pitfall that explains it (or that none
    does)."""
    j = next((k for k, r in enumerate(report.layers) if r.error is not None and r.error > TOLERANCE), None)
    if j is None:
        report.first_divergence = "the logits"
        return Diagnosis(
            "unknown",
            "logits",
            "every traced layer agrees but the logits do not: look at what the "
            "model computes after its last traced layer",
        )
    report.first_divergence = report.layers[j].canonical
    found = numeric_diagnosis(run.plan, report.layers, run.outputs, run.weights, run.x, j)
    if found is not None and found.pitfall == "no_relu":  # untraced, but it is the layer that differs
        report.first_divergence = found.layer
    return found or Diagnosis(
        "unknown",
        report.layers[j].canonical,
        f"{report.layers[j].canonical} differs from the spec (relative error {report.layers[j].error:.1e}) "
        f"and no known pitfall explains it: compare that layer's code with the spec's",
    )
