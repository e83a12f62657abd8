"""What the commands share: their options and defaults, the checks of the files they write, the parser's
one-line errors, and the spelling of the Python API's arguments as options."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from ..arch import CONFIGS, MAX_INT, arch_text, make_any_config
from ..checkpoint import prepare_folder
from ..data import EXAMPLES
from ..errors import ArgValue, ConfigError, VGGError
from ..exits import REFUSED
from ..files import check_target
from ..recipe import LR_SCHEDULES, OPTIMIZERS, PRECISIONS, Recipe, default_lr

# Training options left out take these values (the checkpoint's, with --resume). `vgg train`: the book's recipe
# on VGG-11 narrowed 4x (its small_conv_arch) at 224 px.
TRAIN_DEFAULTS = {
    "arch": "vgg11",
    "ratio": 4,
    "fc_hidden": 4096,
    "batch_norm": False,
    "dropout": 0.5,
    "resize": 224,
    "epochs": 10,
    "optimizer": "sgd",
    "lr_schedule": "constant",
    "batch_size": 128,
    "seed": 0,
    "precision": "fp32",
}


# The default `vgg compare` run: VGG-11 narrowed 4x with batch norm on 32 px images, measured to reach
# >= 0.88 test accuracy in every backend within the time budget on a 2-core CPU (see README).
COMPARE_DEFAULTS = {
    **TRAIN_DEFAULTS,
    "resize": 32,
    "epochs": 5,
    "batch_norm": True,
    "fc_hidden": 512,
    "lr_schedule": "cosine",
}


# AlexNet in either command: the book's recipe (lr 0.01 for SGD, see default_lr), 10 epochs at 224 px.
ALEXNET_DEFAULTS = {"resize": 224, "epochs": 10, "lr_schedule": "constant"}


VGG_ONLY = ("ratio", "fc_hidden", "batch_norm")  # options AlexNet does not have


# `vgg summary`: the book's full-width network.
SUMMARY_DEFAULTS = {"arch": "vgg11", "ratio": 1, "fc_hidden": 4096, "batch_norm": False, "dropout": 0.5}


def positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        if kind is int and value > MAX_INT:  # no count here needs more, and the frameworks index no more
            raise argparse.ArgumentTypeError(f"must be at most {MAX_INT:,}, got {text}")
        return value

    return parse


def non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    if value > MAX_INT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_INT:,}, got {text}")
    return value


def arch_option(text):
    """A configuration name ('alexnet' included), or a book-style conv_arch such as '1,64;1,128;2,256;2,512;2,512'."""
    if text in CONFIGS or text == "alexnet":
        return text
    if ";" not in text and "," not in text:
        raise argparse.ArgumentTypeError(
            f"unknown arch {text!r}: give a name ({', '.join(CONFIGS)}, alexnet) or pairs like '1,64;1,128;2,256'"
        )
    try:
        return tuple(tuple(int(v) for v in pair.split(",")) for pair in text.split(";"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"arch {text!r}: give a name ({', '.join(CONFIGS)}, alexnet) or pairs like '1,64;1,128;2,256'"
        ) from None


def add_net_args(p, defaults):
    """The network's options; left out, they are None until the command fills in ``defaults`` (VGG's or AlexNet's)."""
    p.add_argument(
        "--arch",
        type=arch_option,
        default=None,
        help=f"alexnet, a VGG configuration ({', '.join(CONFIGS)}) or VGG conv_arch pairs "
        f"'1,64;1,128;...' (default {defaults['arch']})",
    )
    p.add_argument(
        "--ratio",
        type=positive(int),
        default=None,
        help=f"VGG: divide every conv width by this (the book's small_conv_arch is 4; default {defaults['ratio']})",
    )
    p.add_argument(
        "--fc-hidden",
        type=positive(int),
        default=None,
        help=f"VGG: width of the two hidden dense layers (default {defaults['fc_hidden']})",
    )
    p.add_argument(
        "--batch-norm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"VGG: batch norm between each conv and its ReLU (default {defaults['batch_norm']})",
    )
    p.add_argument(
        "--dropout",
        type=float,
        default=None,
        help=f"dropout of the two hidden dense layers (default {defaults['dropout']})",
    )


def fill_defaults(args, defaults: dict) -> None:
    """Options left out (None) take ``defaults``, or AlexNet's where ``--arch alexnet``; VGG's own stay None there."""
    alexnet = (args.arch or defaults["arch"]) == "alexnet"
    for option, value in {**defaults, **(ALEXNET_DEFAULTS if alexnet else {})}.items():
        if getattr(args, option, None) is None and not (alexnet and option in VGG_ONLY):
            setattr(args, option, value)


def net_config(args, input_size: int, in_channels: int = 1, num_classes: int = 10):
    """The network the options describe, validated (either network)."""
    return make_any_config(
        args.arch, in_channels, num_classes, input_size, args.ratio, args.fc_hidden, args.dropout, args.batch_norm
    )


def check_worker_options(args) -> None:
    """--sync-bn and --port belong to --workers N: refused without it, rather than ignored."""
    if args.workers == 1 and args.sync_bn:
        raise ConfigError("--sync-bn synchronizes batch norm across workers: add --workers N (N > 1)")
    if args.workers == 1 and args.port is not None:
        raise ConfigError("--port is the first of the workers' ports: add --workers N (N > 1), or leave it out")
    if args.workers > 1 and args.compile:
        raise ConfigError("--compile compiles one process's step: leave out --compile or --workers N")


def train_examples(args) -> int:
    """The training examples a run takes: --train-limit, at most the whole training split."""
    return min(args.train_limit or EXAMPLES["train"], EXAMPLES["train"])


def make_recipe(args):
    """The run's recipe from its options (the book's learning rate where --lr is left out), checked."""

    lr = args.lr or default_lr(args.optimizer, args.arch)
    return Recipe(args.epochs, lr, args.optimizer, args.lr_schedule, args.seed, args.precision)


def prepare_file(path, overwrite: bool, option: str, suffixes: tuple[str, ...] = (), create: bool = False) -> Path:
    """A file a command writes when its work is done, checked now, before the work: a bad path fails first.

    Refuses an empty name, a name without one of ``suffixes`` (when given), a folder, a folder that does not
    exist (``create``: made now) or cannot be written to, and an existing file unless ``overwrite``;
    ``option`` names where the path came from.
    """

    if not str(path).strip():
        raise ConfigError(f"{option} was given an empty name; name the file to write")
    path = Path(path)
    if suffixes and not path.name.lower().endswith(suffixes):
        raise ConfigError(f"{option} {path}: name a {' or '.join(suffixes)} file")
    try:
        if create and not path.parent.exists():
            prepare_folder(path.parent)
        check_target(path)  # the checks every written file gets, with the option named
    except ConfigError as e:
        raise ConfigError(f"{option}: {e}") from None
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise ConfigError(f"{path} already exists; replace it with --overwrite, or choose another {option}")
    prepare_folder(path.parent)  # refused where it cannot be written
    return path


def add_precision(p, default="fp32"):
    """``--precision``; ``default=None`` where the command fills it in (a resumed run takes the checkpoint's)."""

    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=default,
        help="compute precision: fp32, or bf16 (bfloat16 convolutions and matmuls, float32 weights; default fp32)",
    )


def add_compile(p) -> None:
    """``--compile``: the step and evaluation through the framework's compiler (``compile=True`` of the API)."""
    p.add_argument(
        "--compile",
        action="store_true",
        help="PyTorch: the step and evaluation through torch.compile, once per mode, every batch size in one "
        "graph; tf.keras: XLA (jit_compile); MXNet: no change, its graph is hybridized already",
    )


def add_workers(p):
    """``--workers``, ``--port``, ``--sync-bn``: data parallel on the framework's own engine (docs/distributed.md)."""
    p.add_argument(
        "--workers",
        type=positive(int),
        default=1,
        help="data-parallel worker processes on this machine, on the framework's own distributed engine; "
        "--batch-size stays the global batch, split among them (default 1: one process)",
    )
    p.add_argument(
        "--port",
        type=port_number,
        default=None,
        help="with --workers: the first port of 127.0.0.1 the workers use (default: free ones are picked)",
    )
    p.add_argument(
        "--oversubscribe",
        action="store_true",
        help="with --workers: start them even where this machine has fewer CPUs, or less memory, than they need",
    )
    p.add_argument(
        "--sync-bn",
        action="store_true",
        help="with --workers and --batch-norm: batch-norm statistics over the global batch, where the "
        "framework has it (PyTorch on GPUs, tf.keras; JAX's are the global batch's always)",
    )


def port_number(text):
    """A TCP port number, 1..65535."""
    value = positive(int)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is at most 65535, got {text}")
    return value


def positive_ints(text):
    """A comma list of whole numbers > 0, such as '32,64,96'."""
    return [positive(int)(v) for v in text.split(",")]


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (argparse prints the whole usage first), like every other error."""

    commands: Mapping[str, argparse.ArgumentParser] = {}  # the top parser's: each command's own

    def error(self, message):
        self.exit(REFUSED, f"error: {message} (see {self.prog} --help)\n")


def add_device(p) -> None:
    p.add_argument(
        "--device",
        default="auto",
        help="auto (a GPU when the framework sees one, else the CPU), cpu, cuda or cuda:N (default auto)",
    )


def option_for(argument: str, command: str) -> str:
    """The option of ``vgg COMMAND`` that sets the Python API's ``argument``: the one place they are matched.

    ``input_size`` is ``--resize`` where the command resizes the images to it (``vgg summary`` has
    ``--input-size``); every other argument is its name with dashes (``fc_hidden`` -> ``--fc-hidden``).
    """
    if argument == "input_size" and command in ("train", "compare", "bench"):
        return "--resize"
    return "--" + argument.replace("_", "-")


def message_for(error: VGGError, command: str) -> str:
    """The error's message with every argument it names written as ``vgg COMMAND``'s option (``--resize 32``)."""

    def spell(argument: str, value: ArgValue) -> str:
        option = option_for(argument, command)
        if value is None or value is True:
            return option
        if value is False:
            return "--no-" + option.removeprefix("--")
        return f"{option} {arch_text(value) if argument == 'arch' else value}"

    return error.spelled(spell)


def add_training(p, defaults) -> None:
    """The training options, all None when left out: the command fills in ``defaults`` (or a checkpoint's)."""
    add_net_args(p, defaults)

    def default(option):  # "default X", and AlexNet's where it differs
        alex = ALEXNET_DEFAULTS.get(option, defaults[option])
        return f"default {defaults[option]}" + (f", AlexNet {alex}" if alex != defaults[option] else "")

    p.add_argument(
        "--resize",
        type=positive(int),
        default=None,
        help=f"input side in pixels, bilinear from 28 (VGG >= 32, AlexNet >= 65; {default('resize')})",
    )
    p.add_argument("--epochs", type=non_negative_int, default=None, help=f"({default('epochs')})")
    p.add_argument(
        "--lr",
        type=positive(float),
        default=None,
        help="learning rate (default: sgd 0.05, AlexNet 0.01 as in the book; adam 0.001)",
    )
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help=f"(default {defaults['optimizer']})")
    p.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default=None,
        help=f"constant (the book's) or cosine, annealed per epoch ({default('lr_schedule')})",
    )
    p.add_argument("--batch-size", type=positive(int), default=None, help=f"(default {defaults['batch_size']})")
    p.add_argument("--seed", type=int, default=None, help="fixes the initial weights, batch order and dropout")
    p.add_argument("--train-limit", type=positive(int), default=None, help="use only the first N training examples")
    p.add_argument("--test-limit", type=positive(int), default=None, help="use only the first N test examples")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files (else searched)")
    add_device(p)
    add_precision(p, default=None)
    add_compile(p)
    add_workers(p)


# The saved models each command reads: convert reads the first part, evaluate all of it.
FORMATS = (
    "*.npz or *.safetensors (any framework), *.pt (PyTorch), *.weights.h5 (tf.keras), *.params (MXNet)"
    "; evaluate also reads *.onnx (ONNX Runtime)"
)
