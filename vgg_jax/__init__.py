"""VGG (and AlexNet) of *Dive into Deep Learning* in JAX with Flax (linen) and optax, behind the common API."""

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

LAYOUT = "NHWC"
