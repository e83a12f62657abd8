"""The frameworks' own VGG networks (their model zoos) mapped onto this project's canonical weights.

Three naming schemes, one canonical one:

- torchvision's ``state_dict``: ``features.{i}.weight`` (conv OIHW or batch norm), ``features.{i}.running_mean``,
  ``classifier.{0,3,6}.weight`` (out, in) — the canonical layouts already;
- ``keras.applications`` VGG16/VGG19: layers ``block{b}_conv{i}``, ``fc1``, ``fc2``, ``predictions`` with HWIO
  kernels, (in, out) dense kernels, and ``fc1`` rows in H,W,C order (Flatten on NHWC);
- Gluon's ``model_zoo.vision`` VGG: ``{prefix}conv{i}_weight``, ``{prefix}batchnorm{i}_gamma``,
  ``{prefix}dense{i}_weight`` — the canonical layouts already.

Each ``from_*`` function takes plain NumPy arrays (the backend package reads them out of its framework's
network), infers the configuration (arch from the number of convolutions, batch norm, channels, classes) and
returns ``(config, canonical weights)``; ``to_torchvision`` goes the other way. The zoo networks have
4096-wide hidden layers and take 224 px input (torchvision's adaptive average pool is the identity at that
size); a Gluon network first run on other sizes has a narrower first dense layer, and its size is inferred.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from .arch import VGGConfig, make_config
from .errors import WeightsError
from .spec import spec
from .weights import check_weights, to_canonical

# Zoo networks exist for the four plain configurations; they differ only in the number of convolutions.
ZOO_ARCHS = {8: "vgg11", 10: "vgg13", 13: "vgg16", 16: "vgg19"}


def zoo_config(
    arch: str = "vgg16", batch_norm: bool = False, in_channels: int = 3, num_classes: int = 1000, input_size: int = 224
) -> VGGConfig:
    """The configuration of a zoo network: full width, 4096-wide head, 224 px unless built for another size."""
    return make_config(arch, in_channels, num_classes, input_size, 1, 4096, 0.5, batch_norm)


def _layers(config: VGGConfig) -> dict[str, list[str]]:
    """Canonical layer names by kind, in the network's order: conv, bn, linear."""
    out: dict[str, list[str]] = {"conv": [], "bn": [], "linear": []}
    for layer in spec(config).layers:
        if layer.kind in out:
            out[layer.kind].append(layer.name)
    return out


def _config(source: str, convs: list[np.ndarray], has_bn: bool, fc1: np.ndarray, fc3: np.ndarray) -> VGGConfig:
    """The zoo network's configuration: arch from the number of convs, input size from fc1's input width."""
    if len(convs) not in ZOO_ARCHS:
        raise WeightsError(
            f"the {source} network has {len(convs)} convolutions; VGG-11/13/16/19 have {', '.join(map(str, ZOO_ARCHS))}"
        )
    side = (fc1.shape[1] / convs[-1].shape[0]) ** 0.5  # Gluon's Dense infers its width from the first input
    if side != int(side):
        raise WeightsError(
            f"the {source} network's first dense layer takes {fc1.shape[1]} inputs, not "
            f"{convs[-1].shape[0]} x s x s; it is not a VGG head"
        )
    return zoo_config(ZOO_ARCHS[len(convs)], has_bn, int(convs[0].shape[1]), int(fc3.shape[0]), int(side) * 32)


def _assign(source: str, config: VGGConfig, found: dict[str, list[dict[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    """Zoo layers of each kind, in order, onto the canonical layers of the same kind; then checked by shape."""
    weights = {}
    for kind, names in _layers(config).items():
        if len(found[kind]) != len(names):
            raise WeightsError(
                f"the {source} network has {len(found[kind])} {kind} layers where "
                f"{config.arch} has {len(names)}; is it a VGG network?"
            )
        for name, params in zip(names, found[kind], strict=True):
            weights.update({f"{name}.{suffix}": array for suffix, array in params.items()})
    return check_weights(config, weights)


def from_torchvision(state_dict: Mapping[str, np.ndarray]) -> tuple[VGGConfig, dict[str, np.ndarray]]:
    """A torchvision VGG ``state_dict`` (``vgg11`` ... ``vgg19_bn``), as NumPy arrays, in canonical form."""
    groups: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    for key, array in state_dict.items():
        m = re.fullmatch(r"(features|classifier)\.(\d+)\.(\w+)", key)
        if m is None:
            raise WeightsError(
                f"{key!r} is not a key of a torchvision VGG state_dict "
                f"(expected features.<i>.<name> or classifier.<i>.<name>)"
            )
        if m[3] != "num_batches_tracked":
            groups.setdefault((m[1], int(m[2])), {})[m[3]] = np.asarray(array)
    found: dict[str, list[dict[str, np.ndarray]]] = {"conv": [], "bn": [], "linear": []}
    for (part, _), params in sorted(groups.items(), key=lambda item: (item[0][0] != "features", item[0][1])):
        kind = "linear" if part == "classifier" else "bn" if "running_mean" in params else "conv"
        found[kind].append(params)
    if not found["linear"]:
        raise WeightsError("the state_dict has no classifier.<i> layers: it is not a whole torchvision VGG")
    config = _config(
        "torchvision",
        [p["weight"] for p in found["conv"]],
        bool(found["bn"]),
        found["linear"][0]["weight"],
        found["linear"][-1]["weight"],
    )
    return config, _assign("torchvision", config, found)


def to_torchvision(config: VGGConfig, weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Canonical weights under torchvision's key names, for ``torchvision.models.vgg*`` ``load_state_dict``.

    The float32 arrays given are renamed, not copied (``load_state_dict`` copies them into the network).
    """
    weights = check_weights(config, dict(weights), copy=False)
    if (
        config.arch not in ZOO_ARCHS.values()
        or config.in_channels != 3
        or config.input_size != 224
        or config.fc_hidden != 4096
        or config.ratio != 1
    ):
        raise WeightsError(
            f"torchvision's VGG is a full-width vgg11/13/16/19 on 3x224x224 input with a "
            f"4096-wide head; these weights are for {config.describe()}"
        )
    out, index, linear = {}, 0, iter((0, 3, 6))
    for layer in spec(config).layers:
        if layer.kind in ("conv", "bn", "relu", "pool"):
            if layer.kind in ("conv", "bn"):
                for suffix, _ in layer.param_shapes:
                    out[f"features.{index}.{suffix}"] = weights[f"{layer.name}.{suffix}"]
            index += 1
        elif layer.kind == "linear":
            i = next(linear)
            for suffix, _ in layer.param_shapes:
                out[f"classifier.{i}.{suffix}"] = weights[f"{layer.name}.{suffix}"]
    return out


def from_keras_applications(layers: list[tuple[str, list[np.ndarray]]]) -> tuple[VGGConfig, dict[str, np.ndarray]]:
    """``keras.applications`` VGG16/VGG19 as (layer name, [kernel, bias]) pairs in order, in canonical form.

    The network must include its top (``include_top=True``): the head is part of the configuration.
    """
    convs = [w for name, w in layers if re.fullmatch(r"block\d+_conv\d+", name)]
    dense = [(name, w) for name, w in layers if name in ("fc1", "fc2", "predictions")]
    if not convs or [name for name, _ in dense] != ["fc1", "fc2", "predictions"]:
        raise WeightsError(
            "expected a keras.applications VGG16 or VGG19 with include_top=True (layers "
            "block<b>_conv<i>, fc1, fc2, predictions); got layers "
            + ", ".join(name for name, _ in layers[:6])
            + ", ..."
        )
    config = _config(
        "keras.applications",
        [to_canonical(k, "conv", None) for k, _ in convs],
        False,
        dense[0][1][0].T,
        dense[-1][1][0].T,
    )
    found = {
        "conv": [{"weight": to_canonical(k, "conv", config), "bias": b} for k, b in convs],
        "bn": [],
        "linear": [
            {"weight": to_canonical(k, "flat" if name == "fc1" else "dense", config), "bias": b}
            for name, (k, b) in dense
        ],
    }
    return config, _assign("keras.applications", config, found)


def from_gluon_zoo(params: list[tuple[str, np.ndarray]]) -> tuple[VGGConfig, dict[str, np.ndarray]]:
    """A Gluon ``model_zoo.vision`` VGG's parameters as (name, array) pairs in order, in canonical form."""
    rename = {"gamma": "weight", "beta": "bias"}
    kinds = {"conv": "conv", "batchnorm": "bn", "dense": "linear"}
    found: dict[str, list[dict[str, np.ndarray]]] = {"conv": [], "bn": [], "linear": []}
    seen: dict[str, dict[str, np.ndarray]] = {}
    for name, array in params:
        m = re.search(r"(conv|batchnorm|dense)(\d+)_(weight|bias|gamma|beta|running_mean|running_var)$", name)
        if m is None:
            raise WeightsError(
                f"{name!r} is not a parameter of a Gluon model_zoo VGG "
                f"(expected <prefix>conv<i>_weight, batchnorm<i>_gamma, dense<i>_bias, ...)"
            )
        layer = name[: m.start(3)]
        if layer not in seen:
            seen[layer] = {}
            found[kinds[m[1]]].append(seen[layer])
        seen[layer][rename.get(m[3], m[3])] = np.asarray(array)
    if not found["linear"]:
        raise WeightsError("the parameters hold no dense layers: not a whole Gluon model_zoo VGG")
    config = _config(
        "Gluon model_zoo",
        [p["weight"] for p in found["conv"]],
        bool(found["bn"]),
        found["linear"][0]["weight"],
        found["linear"][-1]["weight"],
    )
    return config, _assign("Gluon model_zoo", config, found)
