"""`vgg teach`: write the chapter as a static page (index.html) and a notebook (chapter.ipynb) into a folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..backends import parse_backends, require
from ..errors import ConfigError
from ..files import atomic_write
from . import chapter, notebook, page

PAGE, NOTEBOOK = "index.html", "chapter.ipynb"
DEFAULT_RUN = "runs/compare"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        default="runs/teach",
        metavar="DIR",
        help="folder for index.html and chapter.ipynb (default runs/teach)",
    )
    parser.add_argument(
        "--run",
        default=None,
        metavar="DIR",
        help=f"a folder `vgg compare` wrote, for the results (default {DEFAULT_RUN} when it holds results.json)",
    )
    parser.add_argument(
        "--bench",
        action="append",
        default=[],
        metavar="FILE",
        help="a `vgg bench --json` or `vgg bench --sweep --json` file for the exercises' measured speeds (repeatable)",
    )
    parser.add_argument(
        "--notebook-backend",
        default=None,
        metavar="NAME",
        help="the backend the notebook's first cell chooses (default: the first installed one)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an index.html or chapter.ipynb that vgg teach did not write"
    )


def _ours(path: Path) -> bool:
    """Whether ``path`` is a page or notebook `vgg teach` wrote (so it may be replaced without --overwrite)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    if path.suffix == ".ipynb":
        try:
            return json.loads(text).get("metadata", {}).get("generator") == notebook.GENERATOR
        except (ValueError, AttributeError):
            return False
    return f'<meta name="generator" content="{page.GENERATOR}">' in text[:2000]


def _run_folder(args) -> Path | None:
    if args.run is not None:
        return Path(args.run)
    default = Path(DEFAULT_RUN)
    return default if (default / "results.json").is_file() else None


def run(args) -> int:
    out = Path(args.out)
    targets = (out / PAGE, out / NOTEBOOK)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    for path in targets:
        if path.exists() and not args.overwrite and not _ours(path):
            raise ConfigError(f"{path} exists and vgg teach did not write it; give another --out, or --overwrite")
    folder = _run_folder(args)
    try:
        found = chapter.read_run(folder) if folder is not None else None
    except ConfigError as e:
        raise ConfigError(f"{e}; give --run the folder a `vgg compare` wrote (its --out), or leave --run out") from None
    try:
        bench = chapter.read_bench(args.bench)
    except ConfigError as e:
        raise ConfigError(f"{e}; give --bench the file such a command wrote") from None
    if args.notebook_backend is not None:
        (nb_backend,) = parse_backends([args.notebook_backend])
        require(nb_backend)
    else:
        nb_backend = None
    ch = chapter.gather(found, bench)
    html_text = page.render(ch)
    nb_text = notebook.text(nb_backend or ch.names[0])
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create --out {out}: {e.strerror}; give a folder you can write") from None
    for path, text in zip(targets, (html_text, nb_text), strict=True):  # a file that appeared meanwhile is kept
        atomic_write(path, lambda f, t=text: f.write(t.encode()), overwrite=args.overwrite or _ours(path))
    print(f"page:     {targets[0]}  (open it in a browser; it needs no network)")
    print(f"notebook: {targets[1]}  (its first cell chooses the backend)")
    if found is None:
        print(chapter.NO_RUN)
    return 0
