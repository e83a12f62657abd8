"""The project's own exceptions: raised before any work starts, each message says what to change.

A message names the arguments it asks to change with :func:`arg`, by their Python names (``input_size``,
``fc_hidden=512``). Read as a string, the error spells them that way; the error keeps them apart
(:attr:`VGGError.fields`) so that a front end with names of its own for those arguments (the command
line's ``--resize``) can spell them its way with :meth:`VGGError.spelled`. Nothing here knows a command line.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable

# The values a message may suggest for an argument: Python literals, so that every front end can read them back.
ArgValue = bool | int | float | str | tuple | None

# An argument named inside a message: STX, the name, optionally "=" and the repr of a value, ETX.
_MENTION = re.compile("\x02(\\w+)(?:=(.*?))?\x03", re.DOTALL)


def arg(name: str, value: ArgValue = None) -> str:
    """The argument ``name`` (set to ``value``, where given), marked for a message: ``input_size=32`` as a string."""
    return f"\x02{name}\x03" if value is None else f"\x02{name}={value!r}\x03"


def python_spelling(name: str, value: ArgValue) -> str:
    """How the Python API writes an argument: ``fc_hidden``, or ``fc_hidden=512``."""
    return name if value is None else f"{name}={value!r}"


class VGGError(Exception):
    """Base class of every error this project raises on purpose."""

    def __init__(self, message: str = "") -> None:
        self.template = message  # the message with its arguments marked by arg()
        self.fields: tuple[str, ...] = tuple(dict.fromkeys(m[1] for m in _MENTION.finditer(message)))
        super().__init__(self.spelled(python_spelling))

    @property
    def field(self) -> str | None:
        """The first argument the message asks to change (its Python name), or None if it names none."""
        return self.fields[0] if self.fields else None

    def spelled(self, spell: Callable[[str, ArgValue], str]) -> str:
        """The message with each argument it names written as ``spell(name, value)`` (``value`` None if none)."""
        return _MENTION.sub(lambda m: spell(m[1], None if m[2] is None else ast.literal_eval(m[2])), self.template)


class ConfigError(VGGError, ValueError):
    """An impossible network configuration or argument."""


class InputError(VGGError, ValueError):
    """Data given to a network or a function does not fit it."""


class DataError(VGGError):
    """The Fashion-MNIST files are missing, truncated or altered."""


class WeightsError(VGGError):
    """A weights file or dict does not fit the network it is loaded into."""


class WriteError(VGGError, OSError):
    """A file could not be written (a full disk, a folder without write permission); the message names it."""


class BackendUnavailable(VGGError, ImportError):
    """A backend's framework is not installed."""


class TrainingDiverged(VGGError, FloatingPointError):
    """The loss became NaN or infinite."""


def reason(error: BaseException) -> str:
    """The informative line of a library's error message: not an embedded traceback, not advice to run code."""
    lines = [line.strip() for line in str(error).splitlines()]
    useful = [
        line
        for line in lines
        if line
        and not line.startswith(("Traceback", "File ", "[bt]", "Stack trace", "(", "WeightsUnpickler", "Check the"))
        and "weights_only" not in line
        and "trust the source" not in line
    ]
    if not useful:
        return type(error).__name__
    said = useful[0] if not useful[0].endswith(":") or len(useful) == 1 else f"{useful[0]} {useful[1]}"
    return f"{type(error).__name__}: {said}"  # a line ending ":" introduces the cause (Keras' "could not be loaded")
