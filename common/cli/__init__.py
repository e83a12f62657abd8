"""The ``vgg`` command: summary, train, compare, bench, convert, conform, evaluate; frameworks imported when needed.

As pip does it: :mod:`.registry` names each command's module, imported when the command runs; :mod:`.options`
holds the options the commands share; :mod:`.program` builds the parser and turns errors into exit statuses.
"""

from .options import message_for, option_for
from .program import build_parser, main

__all__ = ["build_parser", "main", "message_for", "option_for"]
