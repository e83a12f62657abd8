"""The one registry of backends: found by name, imported lazily, a missing framework is a clear message."""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from types import ModuleType
from typing import NamedTuple

from .errors import BackendUnavailable, ConfigError


class Backend(NamedTuple):
    """One entry of the registry (tests read it by position too: keep the order of the fields)."""

    package: str  # the package of this project that implements it
    framework: str  # the framework module it needs
    extra: str  # the pip extra that installs that framework
    label: str  # the framework's display name


BACKENDS: dict[str, Backend] = {
    "torch": Backend(package="vgg_torch", framework="torch", extra="torch", label="PyTorch"),
    "tf": Backend(package="vgg_tf", framework="tensorflow", extra="tf", label="tf.keras"),
    "mxnet": Backend(package="vgg_mxnet", framework="mxnet", extra="mxnet", label="MXNet Gluon"),
    "jax": Backend(package="vgg_jax", framework="jax", extra="jax", label="JAX (Flax)"),
}

# The contract: every backend package exports these names with identical signatures.
API = (
    "vgg_block",
    "vgg",
    "layer_shapes",
    "count_params",
    "layer_params",
    "summary",
    "load_data_fashion_mnist",
    "on_device",
    "train",
    "evaluate_accuracy",
    "try_gpu",
    "get_device",
    "export_weights",
    "import_weights",
    "save_weights",
    "load_weights",
    "export_onnx",
    "save_model",
    "load_model",
    "zoo_weights",
    "named_parameters",
    "init_weights",
    "alexnet",
    "from_config",
    "abstract_network",
    "MySequential",
    "hand_vgg",
    "FixedHiddenMLP",
    "tied_mlp",
)


def display_name(name: str) -> str:
    return BACKENDS[name].label


def is_available(name: str) -> bool:
    """True when the backend's framework is installed (checked without importing it)."""
    return importlib.util.find_spec(BACKENDS[name].framework) is not None


def parse_backends(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """'all', 'torch,tf' or a list -> validated backend names, in the registry's order."""
    names = (
        list(BACKENDS)
        if text in ("all", ["all"])
        else [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    )
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        raise ConfigError(
            f"unknown backend {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"choose from {', '.join(BACKENDS)} or 'all'"
        )
    return [n for n in BACKENDS if n in names]


def require(name: str) -> None:
    """Raise a clear error, without importing anything, if backend ``name`` cannot be used here."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    backend = BACKENDS[name]
    if not is_available(name):
        raise BackendUnavailable(
            f"backend {name!r} needs {backend.label} ({backend.framework}), which is not installed here; "
            f"install it with: pip install -e '.[{backend.extra}]'"
        )


def get_backend(name: str) -> ModuleType:
    """Import and return the backend package ``vgg_<name>``."""
    require(name)
    with warnings.catch_warnings():  # a framework's own notices as it loads (PYTHONWARNINGS=error made them fatal)
        for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            warnings.simplefilter("ignore", category)
        return importlib.import_module(BACKENDS[name].package)
