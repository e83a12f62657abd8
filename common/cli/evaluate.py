"""`vgg evaluate`: the test accuracy of a saved model, in a framework or in ONNX Runtime."""

from __future__ import annotations

from ..backends import BACKENDS, display_name, get_backend
from ..checkpoint import check_run_file
from ..data import fashion_mnist_batches
from ..errors import ConfigError
from ..interchange import FILE_SUFFIXES, evaluate_onnx, file_format, load_onnx, read_model
from ..training import parse_device
from .options import (
    FORMATS,
    add_compile,
    add_device,
    positive,
)


def add_arguments(p) -> None:
    p.add_argument("model", help=f"a saved model: {FORMATS}")
    p.add_argument(
        "--backend",
        choices=list(BACKENDS),
        default=None,
        help="framework to run it in (default: the file's own; needed for .npz and .safetensors)",
    )
    p.add_argument("--batch-size", type=positive(int), default=256)
    p.add_argument("--test-limit", type=positive(int), default=None, help="use only the first N test examples")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files (else searched)")
    add_device(p)
    add_compile(p)


def run(args) -> int:
    fmt = file_format(args.model)
    if fmt == "onnx":
        return _evaluate_onnx(args)
    check_run_file(args.model)  # a file of a run's folder that another run's files sit beside is refused
    config, weights, source = read_model(args.model)  # first: a file that is no model says so
    name = args.backend or (fmt if fmt not in ("npz", "safetensors") else None)
    if name is None:
        raise ConfigError(
            f"a {FILE_SUFFIXES[fmt]} model belongs to no framework: say which one evaluates it with --backend"
        )
    if config.in_channels != 1 or config.num_classes != 10:
        raise ConfigError(f"{args.model} is {config.describe()}; Fashion-MNIST needs 1 input channel and 10 classes")
    b = get_backend(name)
    net = b.import_weights(b.from_config(config), weights)
    _, test_iter = b.load_data_fashion_mnist(
        args.batch_size, config.input_size, 0, args.data_dir, None, args.test_limit
    )
    device = b.get_device(args.device)
    acc = b.evaluate_accuracy(net, test_iter, device, compile=args.compile)
    print(
        f"{args.model} ({source}) in {display_name(name)} on {device}: test acc {acc:.4f} on "
        f"{test_iter.batches.num_examples:,} Fashion-MNIST test images at {config.input_size} px"
    )
    return 0


def _evaluate_onnx(args) -> int:
    """``vgg evaluate MODEL.onnx``: test accuracy through ONNX Runtime, no framework imported."""

    if args.backend:
        raise ConfigError(f"{args.model} runs in ONNX Runtime; --backend chooses a framework for weights files")
    if args.compile:
        raise ConfigError(f"{args.model} runs in ONNX Runtime, which compiles its graph itself; leave out --compile")
    if parse_device(args.device)[0] == "cuda":
        raise ConfigError(
            f"{args.model} runs in ONNX Runtime on the CPU (its CPU package is installed); leave out --device "
            f"or give --device cpu"
        )
    model = load_onnx(args.model)
    config = model.config
    if config.in_channels != 1 or config.num_classes != 10:
        raise ConfigError(f"{args.model} is {config.describe()}; Fashion-MNIST needs 1 input channel and 10 classes")
    _, test = fashion_mnist_batches(args.batch_size, config.input_size, 0, "NCHW", args.data_dir, None, args.test_limit)
    acc = evaluate_onnx(model, test)
    print(
        f"{args.model} ({model.meta['source']}, {model.meta['exporter']}, opset {model.meta['opset']}) in ONNX "
        f"Runtime: test acc {acc:.4f} on {test.num_examples:,} Fashion-MNIST test images at {config.input_size} px"
    )
    return 0
