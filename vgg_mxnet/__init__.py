"""VGG of *Dive into Deep Learning* in MXNet Gluon, behind the project's common API."""
# MXNet 1.9.1 still uses the alias ``numpy.bool``, which NumPy 1.24 removed; restore it before anything
# imports mxnet. The one place this is done: every module below is reached through this package.
# (``vars`` rather than ``hasattr``: NumPy 1.26 warns on every lookup of the missing name.)
import numpy as np

if "bool" not in vars(np):
    np.bool = bool

from .data import load_data_fashion_mnist  # noqa: E402
from .model import count_params, layer_shapes, summary, vgg, vgg_block  # noqa: E402
from .train import evaluate_accuracy, train, try_gpu  # noqa: E402
from .weights import export_weights, import_weights, load_weights, save_weights  # noqa: E402

FRAMEWORK = "MXNet Gluon"
LAYOUT = "NCHW"
