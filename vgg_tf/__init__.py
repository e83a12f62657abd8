"""VGG (and AlexNet) of *Dive into Deep Learning* in tf.keras (Keras 3 on TensorFlow), behind the common API."""

# TensorFlow's C++ start-up notices go to stderr on every run and bury the training lines: keep warnings and
# errors only, unless the user set TF_CPP_MIN_LOG_LEVEL (must be set before tensorflow loads). The oneDNN
# notice printed before absl's logging starts ignores the variable (tensorflow issue #100442) and stays.
import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from .blocks import FixedHiddenMLP, MySequential, hand_vgg, tied_mlp  # noqa: E402
from .data import load_data_fashion_mnist  # noqa: E402
from .export import export_onnx  # noqa: E402
from .model import alexnet, count_params, from_config, layer_shapes, summary, vgg, vgg_block  # noqa: E402
from .train import evaluate_accuracy, get_device, train, try_gpu  # noqa: E402
from .weights import (  # noqa: E402
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

LAYOUT = "NHWC"
