"""``vgg conform``: hold anyone's VGG or AlexNet port to the spec, and say where it first goes wrong.

The checks, framework-free (each framework's part is its ``vgg_*/conform.py``; ONNX's is
:mod:`common.conform.onnx`, run by ONNX Runtime):

1. **Structure.** The configuration is given or inferred from the parameter shapes. The trainable parameters
   are matched to the canonical names (:meth:`common.spec.Spec.param_shapes`) by order and shape, batch-norm
   statistics the same way; the layer-by-layer output shapes, traced with the framework's hooks (intermediate
   outputs in ONNX), are aligned with the spec's layers by kind and compared in NCHW.
2. **Numerics.** Seeded canonical weights (:func:`probe_weights`: Xavier's, with biases and batch norm moved off
   zero and identity so that neither can hide a mistake) are loaded into the model and into a reference backend
   (PyTorch by default); the logits on real Fashion-MNIST test images must agree to a relative 1e-4 (of the
   largest logit). Where they do not, every traced layer is compared and the first that diverges is named.
3. **Diagnosis.** At that layer the known pitfalls are tried as switches of a NumPy reference computation
   (:class:`Variant`, :func:`run_layers`), started from the model's own activation before the layer: the one
   whose output matches the model's is the diagnosis, one sentence with its fix. Shape pitfalls (padding,
   ``ceil_mode``) are diagnosed from the shape trace the same way; dropout at evaluation by running twice.

Channels-last models (Keras, or an ONNX graph with an N,H,W,C input) are handled, not faulted: the images are
given channels-last and the first dense layer's weights are loaded with its rows permuted (what ``vgg_tf`` does).

The package: :mod:`.records` (what an adapter gives), :mod:`.reference` (the NumPy layers and probe inputs),
:mod:`.pitfalls` (the catalogue and its diagnoses), :mod:`.inference` (the configuration and the matching),
:mod:`.report`, :mod:`.onnx` (the ONNX adapter) and :mod:`.check` (:func:`conform` itself).
"""

from .check import conform, framework_of
from .inference import GIVEN, align, infer_config, match_params
from .pitfalls import PITFALLS, Diagnosis, Pitfall
from .records import KINDS, STATISTICS, TOLERANCE, Event, LayerRow, Param, ParamRow, Trace, failure, users_own
from .reference import Variant, plan_layers, pooled_side, probe_images, probe_weights, rel_error, run_layers
from .report import REPORT_FILES, Report, write_report

__all__ = [
    "GIVEN",
    "KINDS",
    "PITFALLS",
    "REPORT_FILES",
    "STATISTICS",
    "TOLERANCE",
    "Diagnosis",
    "Event",
    "LayerRow",
    "Param",
    "ParamRow",
    "Pitfall",
    "Report",
    "Trace",
    "Variant",
    "align",
    "conform",
    "failure",
    "framework_of",
    "infer_config",
    "match_params",
    "plan_layers",
    "pooled_side",
    "probe_images",
    "probe_weights",
    "rel_error",
    "run_layers",
    "users_own",
    "write_report",
]
