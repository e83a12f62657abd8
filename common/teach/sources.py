"""The backends' own code, read at generation time: source text, file and line, aligned parts, conventions."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ..arch import BN_EPSILON, BN_MOMENTUM
from ..backends import BACKENDS, get_backend, is_available

ROOT = Path(__file__).resolve().parents[2]
# the branches of a backend's ``_layer``: one per kind of planned layer (common.arch.LayerPlan.kind)
_BRANCH = re.compile(r"^\s*if p\.kind == \"(\w+)\":")


@dataclass
class Source:
    """One function's (or class's) source as the installed package has it, cut into parts that align."""

    qualname: str  # e.g. "vgg_torch.model._layer"
    path: Path
    line: int  # first line in the file
    text: str
    parts: list[tuple[str, str]] = field(default_factory=list)  # (part name, text); their texts join to ``text``

    @property
    def shown_path(self) -> str:
        """The file as a reader finds it: relative to the checkout where it lies inside it."""
        try:
            return str(self.path.relative_to(ROOT))
        except ValueError:
            return str(self.path)

    @property
    def link(self) -> str:
        return f"{self.path.as_uri()}#L{self.line}"


def backends() -> list[str]:
    """The registry's backends whose framework is installed here, in the registry's order."""
    return [name for name in BACKENDS if is_available(name)]


def package(name: str) -> ModuleType:
    return get_backend(name)


def resolve(module: ModuleType | str, dotted: str) -> Any | None:
    """``module.dotted`` (``"model._layer"``, ``"train.Trainer.train_step"``) or None where it does not exist."""
    base = module if isinstance(module, str) else module.__name__
    head, *rest = dotted.split(".")
    try:
        obj: Any = importlib.import_module(f"{base}.{head}")
    except ModuleNotFoundError:
        try:
            obj = getattr(importlib.import_module(base), head)
        except AttributeError:
            return None
    for attr in rest:
        obj = obj.__dict__.get(attr) if isinstance(obj, type) else getattr(obj, attr, None)
        if obj is None:
            return None
    return obj


def source(obj: Any, qualname: str) -> Source:
    lines, start = inspect.getsourcelines(obj)
    text = "".join(lines)
    path = Path(inspect.getsourcefile(obj) or "?").resolve()
    return Source(qualname, path, start, text, split_parts(text))


def backend_source(name: str, dotted: str) -> Source | None:
    """The source of ``dotted`` in backend ``name``'s package, or None where that package has no such name."""
    pkg = BACKENDS[name].package
    package(name)  # imports the framework (and refuses clearly where it is missing)
    obj = resolve(pkg, dotted)
    if obj is None:
        return None
    try:
        return source(obj, f"{pkg}.{dotted}")
    except (OSError, TypeError):  # made at run time (no source file), or not a function or class
        return None


def common_source(dotted: str) -> Source:
    obj = resolve("common", dotted)
    assert obj is not None, dotted
    return source(obj, f"common.{dotted}")


def split_parts(text: str) -> list[tuple[str, str]]:
    """``text`` cut before each ``if p.kind == "..."`` branch: ("head", ...), ("conv", ...), ..., ("tail", ...).

    A function without such branches is one part, "all". The parts' texts join to ``text`` exactly.
    """
    lines = text.splitlines(keepends=True)
    starts = [(i, m.group(1)) for i, line in enumerate(lines) if (m := _BRANCH.match(line))]
    if not starts:
        return [("all", text)]
    parts = [("head", "".join(lines[: starts[0][0]]))]
    indent = len(lines[starts[0][0]]) - len(lines[starts[0][0]].lstrip())
    for k, (i, kind) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else len(lines)
        if k + 1 == len(starts):  # the last branch ends where a line goes back to the branches' indentation
            end = next(
                (
                    j
                    for j in range(i + 1, len(lines))
                    if lines[j].strip() and len(lines[j]) - len(lines[j].lstrip()) <= indent
                ),
                len(lines),
            )
        parts.append((kind, "".join(lines[i:end])))
        if k + 1 == len(starts) and end < len(lines):
            parts.append(("tail", "".join(lines[end:])))
    return parts


# --- what the code says about each framework's conventions ---------------------------------------------------


@dataclass
class Conventions:
    """What a backend's layers take, read from its ``_layer`` and the framework's own signatures."""

    layout: str  # the layout its network computes in (the package's LAYOUT)
    conv_call: str  # the convolution's constructor as written, e.g. "nn.Conv2d"
    in_channels: str  # how the convolution learns its input channels
    bn_call: str
    epsilon: float | None  # as this code sets it
    epsilon_default: float | None  # the framework's own default
    momentum: float | None  # as this code sets it
    momentum_default: float | None
    momentum_meaning: str


def _calls(segment: str) -> list[ast.Call]:
    tree = ast.parse(textwrap.dedent(segment))
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    return sorted(calls, key=lambda c: (c.lineno, c.col_offset))  # in the order they are written


def _callee(calls: list[ast.Call], module: ModuleType) -> tuple[str, Any]:
    """The first call in a branch whose callee is a class (the layer's constructor): its text and the class."""
    for call in calls:
        text = ast.unparse(call.func)
        try:
            obj = eval(text, vars(module))  # a name or an attribute path in the module, e.g. "nn.BatchNorm2d"
        except Exception:
            continue
        if isinstance(obj, type):
            return text, obj
    return "?", None


def _default(cls: Any, *names: str) -> tuple[str | None, Any]:
    """The first of ``names`` that ``cls``'s constructor takes, and its default (inspect.Parameter.empty: none)."""
    if cls is None:
        return None, None
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return None, None
    for n in names:
        if n in params:
            return n, params[n].default
    return None, None


def _keyword(calls: list[ast.Call], names: tuple[str, ...]) -> float | None:
    """The value this code gives one of ``names`` (evaluated with the spec's constants), or None if it gives none."""
    for call in calls:
        for kw in call.keywords:
            if kw.arg in names:
                try:
                    return float(eval(ast.unparse(kw.value), {"BN_EPSILON": BN_EPSILON, "BN_MOMENTUM": BN_MOMENTUM}))
                except Exception:  # an expression of names this module does not know: not read
                    return None
    return None


def conventions(name: str) -> Conventions | None:
    """The conventions of backend ``name``, read from its ``model._layer`` branches; None where it has none."""
    layer = backend_source(name, "model._layer")
    if layer is None:
        return None
    module = importlib.import_module(f"{BACKENDS[name].package}.model")
    parts = dict(layer.parts)
    try:
        conv_calls, bn_calls = _calls(parts["conv"]), _calls(parts["bn"])
    except (KeyError, SyntaxError):  # a _layer not written as one `if p.kind == ...` branch per kind
        return None
    conv_text, conv_cls = _callee(conv_calls, module)
    param, default = _default(conv_cls, "in_channels", "in_features")
    given = "in_width" in parts.get("conv", "")
    if param is None:
        how = (
            f"`{conv_text}` takes no input-channel argument: the layer infers it from the first input it is "
            "built or called with (a lazy input shape)"
        )
    elif default is inspect.Parameter.empty:
        how = f"`{conv_text}` requires `{param}`: the input channels are written out, the weights exist at once"
    elif given:
        how = (
            f"`{conv_text}` defaults `{param}` to {default!r}, which defers initialization until the first batch "
            f"fixes the shapes; this code gives `{param}=p.in_width`, so the shapes are known when it is built"
        )
    else:
        how = f"`{conv_text}` leaves `{param}` at {default!r}: deferred until the first batch"
    bn_text, bn_cls = _callee(bn_calls, module)
    _eps_name, eps_default = _default(bn_cls, "eps", "epsilon")
    _mom_name, mom_default = _default(bn_cls, "momentum")
    momentum = _keyword(bn_calls, ("momentum",))
    # the update is running = (1 - a) * running + a * batch; a framework's "momentum" is a or 1 - a
    weight_of_new = momentum is not None and abs(momentum - BN_MOMENTUM) < 1e-12
    meaning = (
        "the weight of the new batch statistic (running = (1 - m) * running + m * batch)"
        if weight_of_new
        else "the weight kept by the running statistic (running = m * running + (1 - m) * batch)"
    )
    return Conventions(
        layout=str(getattr(package(name), "LAYOUT", "NCHW")),
        conv_call=conv_text,
        in_channels=how,
        bn_call=bn_text,
        epsilon=_keyword(bn_calls, ("eps", "epsilon")),
        epsilon_default=_number(eps_default),
        momentum=momentum,
        momentum_default=_number(mom_default),
        momentum_meaning=meaning,
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
