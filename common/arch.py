"""VGG configurations as data, and the validation every backend relies on.

Configurations follow Table 1 of Simonyan & Zisserman, "Very Deep Convolutional Networks for
Large-Scale Image Recognition" (2014). Each block is the tuple of its convolutions' kernel sizes
(3, or 1 for the 1x1 convolutions of configuration C); a block ends in a 2x2 max-pool with
stride 2. The book's ``conv_arch`` — ``((num_convs, out_channels), ...)`` — is accepted as well.

Canonical layer names (the same in every backend, 1-based like ``keras.applications``)::

    block{b}.conv{i}  block{b}.bn{i}  block{b}.relu{i}  block{b}.lrn  block{b}.pool
    flatten  fc1  relu1  dropout1  fc2  relu2  dropout2  fc3

AlexNet (Krizhevsky et al., 2012, as the book writes it) is planned the same way from
:class:`AlexNetConfig`, with the names of its Caffe reference model: ``conv1`` ... ``conv5``, ``relu1`` ...,
``pool1``, ``pool2``, ``pool5``, ``flatten``, ``fc6``, ``relu6``, ``dropout6``, ``fc7``, ``relu7``, ``dropout7``,
``fc8``.

Parameters append ``.weight`` / ``.bias`` (and ``.running_mean`` / ``.running_var`` for batch
norm), e.g. ``block1.conv1.weight``, ``fc3.bias``. Layouts: conv OIHW, dense (out, in), the
features entering ``fc1`` flattened in C,H,W order.
"""

from __future__ import annotations

import numbers
import reprlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from .errors import ConfigError, arg

WIDTHS = (64, 128, 256, 512, 512)


class PaperConfig(NamedTuple):
    """One ConvNet configuration of Table 1 (one of its columns)."""

    kernels: tuple[tuple[int, ...], ...]  # kernel sizes of the convolutions, per block
    lrn: bool  # local response normalisation after the first convolution
    letter: str  # the paper's name for it


CONFIGS: dict[str, PaperConfig] = {
    "vgg11": PaperConfig(((3,), (3,), (3, 3), (3, 3), (3, 3)), lrn=False, letter="A"),
    "vgg11_lrn": PaperConfig(((3,), (3,), (3, 3), (3, 3), (3, 3)), lrn=True, letter="A-LRN"),
    "vgg13": PaperConfig(((3, 3), (3, 3), (3, 3), (3, 3), (3, 3)), lrn=False, letter="B"),
    "vgg16_c": PaperConfig(((3, 3), (3, 3), (3, 3, 1), (3, 3, 1), (3, 3, 1)), lrn=False, letter="C"),
    "vgg16": PaperConfig(((3, 3), (3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)), lrn=False, letter="D"),
    "vgg19": PaperConfig(((3, 3), (3, 3), (3, 3, 3, 3), (3, 3, 3, 3), (3, 3, 3, 3)), lrn=False, letter="E"),
}


class LRNParams(NamedTuple):
    """The parameters of local response normalisation, in the PyTorch/MXNet convention.

    ``x / (k + alpha / size * sum(x^2 over size channels)) ** beta``
    """

    size: int  # channels in the window
    alpha: float
    beta: float
    k: float


# Local response normalisation of configuration A-LRN, as in Krizhevsky et al. (2012).
LRN = LRNParams(size=5, alpha=1e-4, beta=0.75, k=2.0)

BN_EPSILON = 1e-5  # PyTorch's and Gluon's default; Keras is told explicitly (its default is 1e-3)
BN_MOMENTUM = 0.1  # weight of the new batch statistic (Keras and Gluon take 1 - this)


@dataclass(frozen=True)
class Block:
    """One VGG block: convolutions of the given kernel sizes, all ``out_channels`` wide, then a pool."""

    out_channels: int
    kernels: tuple[int, ...]
    lrn: bool = False


@dataclass(frozen=True)
class VGGConfig:
    """Everything a backend needs to build one network, validated."""

    arch: str
    blocks: tuple[Block, ...]
    in_channels: int
    num_classes: int
    input_size: int
    ratio: int
    fc_hidden: int
    dropout: float
    batch_norm: bool

    @property
    def final_size(self) -> int:
        """Side of the feature map that leaves the last block."""
        size = self.input_size
        for _ in self.blocks:
            size //= 2
        return size

    @property
    def final_channels(self) -> int:
        return self.blocks[-1].out_channels

    @property
    def flat_features(self) -> int:
        return self.final_channels * self.final_size**2

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (tuples become lists)."""
        d = asdict(self)
        d["blocks"] = [[b["out_channels"], list(b["kernels"]), b["lrn"]] for b in d["blocks"]]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VGGConfig:
        """The configuration of a :meth:`to_dict` record, rebuilt by :func:`make_config` (so every value is
        checked as ``vgg()`` checks it) and refused where its blocks are not the ones its arch builds."""
        try:
            blocks = tuple(
                Block(out_channels=int(c), kernels=tuple(int(k) for k in ks), lrn=bool(lrn))
                for c, ks, lrn in d["blocks"]
            )
            arch = d["arch"]
            values = {key: d[key] for key in ("in_channels", "num_classes", "input_size", "ratio", "fc_hidden")}
            dropout, batch_norm = d["dropout"], d["batch_norm"]
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"not a VGG configuration record ({e!r}); was it written by this project?") from None
        named = isinstance(arch, str) and arch in CONFIGS
        config = make_config(arch if named else conv_arch(blocks), **values, dropout=dropout, batch_norm=batch_norm)
        if config.arch != arch or config.blocks != blocks:
            raise ConfigError(
                f"a record of arch {reprlib.repr(arch)} at ratio {values['ratio']} whose blocks are not that arch's "
                f"({conv_arch(blocks)}); was it written by this project?"
            )
        return config

    def vgg_kwargs(self) -> dict[str, Any]:
        """The ``vgg()`` arguments that rebuild this configuration in any backend."""
        named = self.arch in CONFIGS
        return {
            "arch": self.arch if named else conv_arch(self),
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "input_size": self.input_size,
            "ratio": self.ratio,
            "fc_hidden": self.fc_hidden,
            "dropout": self.dropout,
            "batch_norm": self.batch_norm,
        }

    def check_size(self, input_size) -> int:
        """The side of a square input this network takes, or a ConfigError saying which sizes work."""
        return check_input_size(input_size, len(self.blocks))

    def describe(self) -> str:
        bn = ", batch norm" if self.batch_norm else ""
        return (
            f"{self.arch} (ratio {self.ratio}{bn}), {self.in_channels}x{self.input_size}x{self.input_size} in, "
            f"{self.num_classes} classes, fc_hidden {self.fc_hidden}"
        )


class AlexNetLayer(NamedTuple):
    """One layer of AlexNet's features; what a kind does not use keeps its default."""

    name: str
    kind: str  # conv, relu or pool
    out_channels: int = 0  # conv only
    kernel: int = 0  # conv, pool: window side
    stride: int = 1  # conv, pool
    padding: int = 0  # conv


# AlexNet as the book writes it (one input channel for Fashion-MNIST, 10 classes by default): conv1 11x11
# stride 4 padding 1, then 3x3/2 max-pools.
ALEXNET_FEATURES: tuple[AlexNetLayer, ...] = (
    AlexNetLayer("conv1", "conv", out_channels=96, kernel=11, stride=4, padding=1),
    AlexNetLayer("relu1", "relu"),
    AlexNetLayer("pool1", "pool", kernel=3, stride=2),
    AlexNetLayer("conv2", "conv", out_channels=256, kernel=5, padding=2),
    AlexNetLayer("relu2", "relu"),
    AlexNetLayer("pool2", "pool", kernel=3, stride=2),
    AlexNetLayer("conv3", "conv", out_channels=384, kernel=3, padding=1),
    AlexNetLayer("relu3", "relu"),
    AlexNetLayer("conv4", "conv", out_channels=384, kernel=3, padding=1),
    AlexNetLayer("relu4", "relu"),
    AlexNetLayer("conv5", "conv", out_channels=256, kernel=3, padding=1),
    AlexNetLayer("relu5", "relu"),
    AlexNetLayer("pool5", "pool", kernel=3, stride=2),
)
ALEXNET_HIDDEN = 4096


def side_after(side: int, kind: str, kernel: int, stride: int, padding: int) -> int:
    """The side of the feature map after one conv or pool (PyTorch's floor rule; other layers keep it)."""
    if kind in ("conv", "pool"):
        return (side + 2 * padding - kernel) // stride + 1
    return side


def _alexnet_side(input_size: int) -> int:
    side = input_size
    for layer in ALEXNET_FEATURES:
        side = side_after(side, layer.kind, layer.kernel, layer.stride, layer.padding)
        if side < 1:
            return 0
    return side


ALEXNET_MIN_SIZE = next(s for s in range(1, 1024) if _alexnet_side(s) >= 1)  # 65


@dataclass(frozen=True)
class AlexNetConfig:
    """Everything a backend needs to build the book's AlexNet, validated (:func:`make_alexnet_config`)."""

    in_channels: int
    num_classes: int
    input_size: int
    dropout: float
    arch: str = "alexnet"

    @property
    def final_size(self) -> int:
        """Side of the feature map that leaves ``pool5`` (5 at 224 px)."""
        return _alexnet_side(self.input_size)

    @property
    def final_channels(self) -> int:
        """Width of the last convolution (``conv5``)."""
        return [layer.out_channels for layer in ALEXNET_FEATURES if layer.kind == "conv"][-1]

    @property
    def flat_features(self) -> int:
        return self.final_channels * self.final_size**2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def alexnet_kwargs(self) -> dict[str, Any]:
        """The ``alexnet()`` arguments that rebuild this configuration in any backend."""
        return {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "input_size": self.input_size,
            "dropout": self.dropout,
        }

    def check_size(self, input_size) -> int:
        """The side of a square input AlexNet takes, or a ConfigError saying which sizes work."""
        return check_alexnet_size(input_size)

    def describe(self) -> str:
        return f"alexnet, {self.in_channels}x{self.input_size}x{self.input_size} in, {self.num_classes} classes"


def check_alexnet_size(input_size, field: str = "input_size") -> int:
    """Return the side of a square AlexNet input, or raise ConfigError saying what size would work.

    ``field`` is the name of the argument that gave the size, for the message.
    """
    size = _square_side(input_size, field)
    if size < ALEXNET_MIN_SIZE:
        raise ConfigError(
            f"{field} {size} is too small for AlexNet: its 11x11 stride-4 convolution and three 3x3 stride-2 "
            f"pools leave no pixel below {ALEXNET_MIN_SIZE}; resize the images to at least {ALEXNET_MIN_SIZE} px "
            f"({arg(field, ALEXNET_MIN_SIZE)}; the book uses 224)"
        )
    return size


NetConfig = VGGConfig | AlexNetConfig


def config_from_dict(d: dict[str, Any]) -> NetConfig:
    """A configuration from its :meth:`to_dict` record, of either network."""
    if isinstance(d, dict) and d.get("arch") == "alexnet":
        try:
            values = {key: d[key] for key in ("in_channels", "num_classes", "input_size", "dropout")}
        except KeyError as e:
            raise ConfigError(f"not an AlexNet configuration record ({e!r}); was it written by this project?") from None
        return make_alexnet_config(**values)  # every value checked as alexnet() checks it
    if not isinstance(d, dict):
        raise ConfigError(f"not a configuration record: {d!r}")
    return VGGConfig.from_dict(d)


# The largest size, count or width taken: the frameworks index tensors with 32-bit sizes (MXNet refuses more
# elements), and a Python int beyond 64 bits overflows their C++ before any memory check could speak.
MAX_INT = 2**31 - 1
# The most convolutions in one block: VGG's deepest block has 4; a block of millions would take minutes to
# plan before the memory check could refuse it.
MAX_CONVS = 256


def as_config(config) -> NetConfig:
    """A network's configuration: ``net.config`` as it is, or its ``to_dict()`` record (``history.json``'s
    ``config``) rebuilt; anything else is a ConfigError that says what to give."""
    if isinstance(config, (VGGConfig, AlexNetConfig)):
        return config
    if isinstance(config, dict):
        return config_from_dict(config)
    raise ConfigError(
        f"config must be a network's configuration (net.config) or its record (net.config.to_dict()), "
        f"got {type(config).__name__}"
    )


def _is_positive_int(value, maximum: int = MAX_INT) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and 0 < int(value) <= maximum


def positive_int(value, name: str, maximum: int = MAX_INT) -> int:
    """``value`` as an int, or a ConfigError saying that the argument ``name`` must be a positive integer (at
    most ``maximum``)."""
    if not _is_positive_int(value, maximum):
        raise ConfigError(f"{arg(name)} must be a positive integer (at most {maximum:,}), got {value!r}")
    return int(value)


# The probabilities float32 holds as themselves, below 1: MXNet refuses a positive dropout rate below its
# smallest normal number, and one that rounds to 1 in float32 scales the kept values by 1 / 0.
FLOAT32_TINY, FLOAT32_BELOW_ONE = 2.0**-126, 1 - 2.0**-24


def _probability(value, name: str) -> float:
    """``value`` as a float in [0, 1) that float32 holds (see FLOAT32_TINY), or a ConfigError naming ``name``."""
    number = not isinstance(value, bool) and isinstance(value, numbers.Real)
    if not number or not (float(value) == 0 or FLOAT32_TINY <= float(value) <= FLOAT32_BELOW_ONE):
        raise ConfigError(
            f"{arg(name)} must be a probability in [0, 1) that float32 holds: 0, or from {FLOAT32_TINY:.3g} to "
            f"{FLOAT32_BELOW_ONE:.8f}, got {value!r}"
        )
    return float(value)


def _square_side(input_size, field: str) -> int:
    """The side of a square input given as an int or an (h, w) pair; a ConfigError for anything else."""
    if isinstance(input_size, (tuple, list)):
        if len(input_size) != 2:
            raise ConfigError(f"{arg(field)} must be an int or a (height, width) pair, got {input_size!r}")
        h, w = input_size
        if h != w:
            raise ConfigError(
                f"{arg(field)} must be square (these networks take HxH images), got {h}x{w}; "
                f"resize to {max(h, w)}x{max(h, w)}"
            )
        input_size = h
    return positive_int(input_size, field)


def check_input_size(input_size, num_blocks: int = len(WIDTHS), field: str = "input_size") -> int:
    """Return the side of a square input, or raise ConfigError saying what size would work.

    ``field`` is the name of the argument that gave the size, for the message.
    """
    size = _square_side(input_size, field)
    minimum = 2**num_blocks
    if minimum > MAX_INT:  # no size the frameworks can index is enough: the blocks are what must change
        raise ConfigError(
            f"{num_blocks} blocks halve the input {num_blocks} times, so it must be at least {minimum:,} px, more "
            f"than the {MAX_INT:,} the frameworks can index; use at most {MAX_INT.bit_length() - 1} blocks in "
            f"{arg('arch')}"
        )
    if size < minimum:
        raise ConfigError(
            f"{field} {size} is too small: {num_blocks} blocks halve it {num_blocks} times, so the minimum is "
            f"{minimum}; resize the images to at least {minimum} px ({arg(field, minimum)} or more)"
        )
    return size


def _blocks_from_conv_arch(conv_arch) -> tuple[Block, ...]:
    try:
        pairs = [tuple(p) for p in conv_arch]
    except TypeError:
        raise ConfigError(
            f"{arg('arch')} must be a configuration name or a tuple of (num_convs, out_channels) pairs, "
            f"got {conv_arch!r}"
        ) from None
    if not pairs:
        raise ConfigError(f"{arg('arch')} has no blocks; give at least one (num_convs, out_channels) pair")
    blocks = []
    for i, pair in enumerate(pairs, start=1):
        if len(pair) != 2:
            raise ConfigError(f"block {i} of {arg('arch')} is {pair!r}; each block is a (num_convs, out_channels) pair")
        for what, value, most in zip(("num_convs", "out_channels"), pair, (MAX_CONVS, MAX_INT), strict=True):
            if not _is_positive_int(value, most):
                raise ConfigError(f"{what} of block {i} must be a positive integer (at most {most:,}), got {value!r}")
        blocks.append(Block(out_channels=int(pair[1]), kernels=(3,) * int(pair[0])))
    return tuple(blocks)


def make_config(
    arch="vgg11", in_channels=1, num_classes=10, input_size=224, ratio=1, fc_hidden=4096, dropout=0.5, batch_norm=False
) -> VGGConfig:
    """Validate ``vgg()``'s arguments and resolve them into a :class:`VGGConfig`."""
    if not isinstance(batch_norm, bool):
        raise ConfigError(f"{arg('batch_norm')} must be True or False, got {batch_norm!r}")
    if isinstance(arch, str):
        if arch == "alexnet":
            raise ConfigError("arch 'alexnet' is not a VGG configuration; build the book's AlexNet with alexnet()")
        if arch not in CONFIGS:
            raise ConfigError(
                f"unknown arch {arch!r}; known: {', '.join(CONFIGS)}, alexnet "
                f"(or a tuple of (num_convs, out_channels) pairs)"
            )
        paper = CONFIGS[arch]
        blocks = tuple(
            Block(out_channels=width, kernels=kernels, lrn=paper.lrn and i == 0)
            for i, (width, kernels) in enumerate(zip(WIDTHS, paper.kernels, strict=True))
        )
        name = arch
        if paper.lrn and batch_norm:
            raise ConfigError(
                f"{arch} has local response normalisation and no batch-norm variant; "
                f"use {arg('arch', 'vgg11')} with {arg('batch_norm', True)} instead"
            )
    else:
        blocks = _blocks_from_conv_arch(arch)
        name = "custom"
    ratio = positive_int(ratio, "ratio")
    narrowed = []
    for i, b in enumerate(blocks, start=1):
        width = b.out_channels // ratio
        if width == 0:
            largest = min(x.out_channels for x in blocks)
            raise ConfigError(
                f"ratio {ratio} leaves block {i} ({b.out_channels} channels) with zero width; use a ratio of at "
                f"most {largest} ({arg('ratio', largest)})"
            )
        narrowed.append(Block(out_channels=width, kernels=b.kernels, lrn=b.lrn))
    in_channels = positive_int(in_channels, "in_channels")
    num_classes = positive_int(num_classes, "num_classes")
    fc_hidden = positive_int(fc_hidden, "fc_hidden")
    dropout = _probability(dropout, "dropout")
    size = check_input_size(input_size, len(blocks))
    return VGGConfig(
        arch=name,
        blocks=tuple(narrowed),
        in_channels=in_channels,
        num_classes=num_classes,
        input_size=size,
        # A custom conv_arch is recorded by its final widths (ratio 1): the same network, rebuilt the same way.
        ratio=ratio if name in CONFIGS else 1,
        fc_hidden=fc_hidden,
        dropout=dropout,
        batch_norm=batch_norm,
    )


def make_alexnet_config(in_channels=1, num_classes=10, input_size=224, dropout=0.5) -> AlexNetConfig:
    """Validate ``alexnet()``'s arguments and resolve them into an :class:`AlexNetConfig`."""
    in_channels = positive_int(in_channels, "in_channels")
    num_classes = positive_int(num_classes, "num_classes")
    dropout = _probability(dropout, "dropout")
    return AlexNetConfig(
        in_channels=in_channels, num_classes=num_classes, input_size=check_alexnet_size(input_size), dropout=dropout
    )


def make_any_config(
    arch="vgg11",
    in_channels=1,
    num_classes=10,
    input_size=224,
    ratio=None,
    fc_hidden=None,
    dropout=0.5,
    batch_norm=None,
) -> NetConfig:
    """A configuration of either network, ``arch`` choosing which; ``None`` is "not given".

    ``arch="alexnet"`` is the book's AlexNet, which has no ``ratio``, ``fc_hidden`` or ``batch_norm`` to set;
    any other ``arch`` is VGG (``ratio`` 1, ``fc_hidden`` 4096, no batch norm when not given).
    """
    if arch == "alexnet":
        given = [
            name
            for name, v in (("ratio", ratio), ("fc_hidden", fc_hidden), ("batch_norm", batch_norm))
            if v is not None
        ]
        if given:
            raise ConfigError(
                f"{', '.join(arg(name) for name in given)} change{'s' if len(given) == 1 else ''} VGG only; "
                f"AlexNet is the book's network as written: leave {'it' if len(given) == 1 else 'them'} out"
            )
        return make_alexnet_config(in_channels, num_classes, input_size, dropout)
    return make_config(
        arch,
        in_channels,
        num_classes,
        input_size,
        1 if ratio is None else ratio,
        4096 if fc_hidden is None else fc_hidden,
        dropout,
        bool(batch_norm),
    )


def check_block(num_convs, in_channels, out_channels, batch_norm=False) -> Block:
    """Validate ``vgg_block()``'s arguments; the book's block is ``num_convs`` 3x3 convolutions."""
    n = positive_int(num_convs, "num_convs", MAX_CONVS)
    positive_int(in_channels, "in_channels")
    c = positive_int(out_channels, "out_channels")
    if not isinstance(batch_norm, bool):
        raise ConfigError(f"{arg('batch_norm')} must be True or False, got {batch_norm!r}")
    return Block(out_channels=c, kernels=(3,) * n)


@dataclass(frozen=True)
class LayerPlan:
    """One layer to build: what every backend turns into its framework's layer of the same name."""

    name: str  # name inside its group: "conv1", "bn1", "relu1", "lrn", "pool", or the group's own
    kind: str  # conv, bn, relu, lrn, pool, flatten, linear, dropout
    in_width: int = 0  # conv/linear: input channels/features; bn: channels
    out_width: int = 0  # conv/linear: output channels/features
    kernel: int = 0  # conv, pool: window side
    stride: int = 1  # conv, pool: step of the window
    padding: int = 0  # conv: zeros added on every side (VGG's kernel // 2 keeps the size)
    rate: float = 0.0  # dropout: probability of dropping


def block_plan(block: Block, in_channels: int, batch_norm: bool) -> list[LayerPlan]:
    """The layers of one block: (conv, [bn], relu, [lrn after the first]) per conv, then a 2x2/2 max-pool."""
    out: list[LayerPlan] = []
    c = in_channels
    for i, k in enumerate(block.kernels, start=1):
        out.append(LayerPlan(f"conv{i}", "conv", c, block.out_channels, k, padding=k // 2))
        c = block.out_channels
        if batch_norm:
            out.append(LayerPlan(f"bn{i}", "bn", c))
        out.append(LayerPlan(f"relu{i}", "relu"))
        if block.lrn and i == 1:
            out.append(LayerPlan("lrn", "lrn"))
    out.append(LayerPlan("pool", "pool", kernel=2, stride=2))
    return out


def net_plan(config: NetConfig) -> Sequence[tuple[str, list[LayerPlan] | LayerPlan]]:
    """Top-level layers in order: (name, block plan) for each block, then (name, layer) for the head.

    AlexNet's layers are all top-level (the book's ``nn.Sequential`` has no blocks).
    """
    if isinstance(config, AlexNetConfig):
        return alexnet_plan(config)
    out: list[tuple[str, list[LayerPlan] | LayerPlan]] = []
    c = config.in_channels
    for b, block in enumerate(config.blocks, start=1):
        out.append((f"block{b}", block_plan(block, c, config.batch_norm)))
        c = block.out_channels
    return out + head_plan(config.flat_features, config.fc_hidden, config.num_classes, config.dropout, first=1)


def head_plan(features: int, hidden: int, num_classes: int, dropout: float, first: int) -> list[tuple[str, LayerPlan]]:
    """Flatten, then three dense layers (two hidden ones with ReLU and dropout), numbered from ``first``."""
    out: list[tuple[str, LayerPlan]] = [("flatten", LayerPlan("flatten", "flatten"))]
    widths = (hidden, hidden, num_classes)
    for j, width in enumerate(widths, start=first):
        out.append((f"fc{j}", LayerPlan(f"fc{j}", "linear", features, width)))
        features = width
        if j < first + len(widths) - 1:
            out.append((f"relu{j}", LayerPlan(f"relu{j}", "relu")))
            out.append((f"dropout{j}", LayerPlan(f"dropout{j}", "dropout", rate=dropout)))
    return out


def alexnet_plan(config: AlexNetConfig) -> list[tuple[str, LayerPlan]]:
    """AlexNet's layers in order, all top-level: the book's ``nn.Sequential``, named as in Caffe's model."""
    out: list[tuple[str, LayerPlan]] = []
    c = config.in_channels
    for layer in ALEXNET_FEATURES:
        plan = LayerPlan(layer.name, layer.kind, c, layer.out_channels, layer.kernel, layer.stride, layer.padding)
        out.append((layer.name, plan))
        c = layer.out_channels or c
    return out + head_plan(config.flat_features, ALEXNET_HIDDEN, config.num_classes, config.dropout, first=6)


def check_trace_request(config: NetConfig, input_size, in_channels, batch) -> int:
    """Validate ``layer_shapes()``'s arguments against the network built from ``config``; return the size."""
    size = config.check_size(input_size)
    in_channels = positive_int(in_channels, "in_channels")
    positive_int(batch, "batch")
    if in_channels != config.in_channels:
        raise ConfigError(
            f"the network takes {config.in_channels}-channel input but in_channels={in_channels} was "
            f"given; pass {arg('in_channels', config.in_channels)} or build with vgg(in_channels={in_channels})"
        )
    if size != config.input_size:
        raise ConfigError(
            f"the network was built for {config.input_size}x{config.input_size} input (its first dense "
            f"layer expects {config.flat_features} features) but input_size={size} was given; "
            f"pass {arg('input_size', config.input_size)} or build with vgg(input_size={size})"
        )
    return size


def conv_arch(config: VGGConfig | tuple[Block, ...]) -> tuple[tuple[int, int], ...]:
    """The book's ``conv_arch`` view of a configuration (or of its blocks): ((num_convs, out_channels), ...)."""
    blocks = config.blocks if isinstance(config, VGGConfig) else config
    return tuple((len(b.kernels), b.out_channels) for b in blocks)


def arch_text(arch) -> str:
    return arch if isinstance(arch, str) else ";".join(f"{n},{c}" for n, c in arch)
