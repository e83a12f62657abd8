"""VGG (and AlexNet) of *Dive into Deep Learning* in MXNet Gluon, behind the project's common API."""

# Two fixes that must run before anything imports mxnet; every module below is reached through this package.
# 1. MXNet 1.9.1 still uses the alias ``numpy.bool``, which NumPy 1.24 removed: restore it.
#    (``vars`` rather than ``hasattr``: NumPy 1.26 warns on every lookup of the missing name.)
# 2. Unless told otherwise, MXNet gives OpenMP half the CPUs on x86, assuming two hyper-threads per core
#    (src/engine/openmp.cc); on a machine without hyper-threading that halves the speed. Use the CPUs this
#    process may run on, as PyTorch does, unless OMP_NUM_THREADS or MXNET_OMP_MAX_THREADS says otherwise.
import os as _os

import numpy as _np

if "bool" not in vars(_np):
    vars(_np)["bool"] = bool
if "OMP_NUM_THREADS" not in _os.environ and "MXNET_OMP_MAX_THREADS" not in _os.environ:
    _os.environ["MXNET_OMP_MAX_THREADS"] = str(
        len(_os.sched_getaffinity(0)) if hasattr(_os, "sched_getaffinity") else _os.cpu_count() or 1
    )

from .blocks import FixedHiddenMLP, MySequential, hand_vgg, tied_mlp
from .data import load_data_fashion_mnist, on_device
from .export import export_onnx
from .model import (
    abstract_network,
    alexnet,
    count_params,
    from_config,
    layer_params,
    layer_shapes,
    summary,
    vgg,
    vgg_block,
)
from .train import evaluate_accuracy, get_device, train, try_gpu
from .weights import (
    export_weights,
    import_weights,
    init_weights,
    load_model,
    load_weights,
    named_parameters,
    save_model,
    save_weights,
    zoo_weights,
)

LAYOUT = "NCHW"
