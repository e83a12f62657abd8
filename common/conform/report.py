"""The conformance report: its figures, its Markdown and JSON, and the files it is written to."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, arg
from ..files import atomic_write
from .pitfalls import Diagnosis
from .records import TOLERANCE, LayerRow, ParamRow

REPORT_FILES = ("conformance.md", "conformance.json")


@dataclass
class Report:
    model: str
    framework: str
    config: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    inferred: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    params_spec: int = 0
    params_model: int = 0
    params: list[ParamRow] = field(default_factory=list)
    layers: list[LayerRow] = field(default_factory=list)
    first_param_mismatch: str | None = None
    first_shape_mismatch: str | None = None
    run_error: str | None = None
    reference: str = ""
    images: int = 0
    logits_error: float | None = None
    first_divergence: str | None = None
    deterministic: bool | None = None
    diagnoses: list[Diagnosis] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def structure_ok(self) -> bool:
        return (
            self.first_param_mismatch is None
            and self.first_shape_mismatch is None
            and self.run_error is None
            and self.params_model == self.params_spec
        )

    @property
    def numerics_ok(self) -> bool:
        return self.logits_error is not None and self.logits_error <= TOLERANCE and self.deterministic is not False

    @property
    def conforms(self) -> bool:
        return self.structure_ok and self.numerics_ok and not any(d.pitfall != "init" for d in self.diagnoses)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(conforms=self.conforms, structure_ok=self.structure_ok, numerics_ok=self.numerics_ok)
        d["tolerance"] = TOLERANCE
        for row in d["layers"]:
            if row["error"] is not None and not math.isfinite(row["error"]):
                row["error"] = None
        if d["logits_error"] is not None and not math.isfinite(d["logits_error"]):
            d["logits_error"] = None
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=list)

    def to_markdown(self) -> str:
        verdict = "conforms" if self.conforms else "does NOT conform"
        out = [
            f"# Conformance of {self.model}",
            "",
            f"**{verdict}** to {self.description} ({self.framework}; checked in {self.seconds:.1f} s).",
            "",
        ]
        if self.diagnoses:
            out += ["## Diagnosis", ""] + [f"- {d.sentence}" for d in self.diagnoses] + [""]
        if self.inferred or self.notes:
            out += ["## Configuration", ""] + [f"- {n}" for n in self.inferred + self.notes] + [""]
        out += [
            "## Structure",
            "",
            f"- trainable parameters: {self.params_model:,} (spec {self.params_spec:,})",
            "- parameters by order and shape: "
            + (f"first mismatch at {self.first_param_mismatch}" if self.first_param_mismatch else "all match"),
            "- output shapes: "
            + (f"first mismatch at {self.first_shape_mismatch}" if self.first_shape_mismatch else "all match"),
        ]
        if self.run_error:
            out.append(f"- the model raised {self.run_error}")
        out += ["", "| canonical | spec shape | model's parameter | shape | |", "|---|---|---|---|---|"]
        for r in self.params:
            mark = "ok" if r.ok else "**differs**"
            out.append(f"| {r.canonical or '-'} | {dims(r.spec_shape)} | {r.name or '-'} | {dims(r.shape)} | {mark} |")
        out += ["", "## Layers", ""]
        if self.logits_error is None:
            out.append("Numerics not compared: " + ("the structure differs." if not self.structure_ok else "no run."))
        else:
            within = "within" if self.logits_error <= TOLERANCE else "**outside**"
            out.append(
                f"Logits on {self.images} real Fashion-MNIST test images against {self.reference}, the same "
                f"weights: relative error {self.logits_error:.2e}, {within} {TOLERANCE:g}."
                + (f" First diverging layer: **{self.first_divergence}**." if self.first_divergence else "")
                + (" Two runs on the same images differ." if self.deterministic is False else "")
            )
        out += [
            "",
            "| canonical | kind | spec shape (NCHW) | model's layer | shape | rel. error |",
            "|---|---|---|---|---|---|",
        ]
        for row in self.layers:
            err = "" if row.error is None else ("inf" if not math.isfinite(row.error) else f"{row.error:.1e}")
            out.append(
                f"| {row.canonical} | {row.kind} | {dims(row.spec_shape)} | {row.name or '-'} | {dims(row.shape)} "
                f"| {err} |"
            )
        return "\n".join(out) + "\n"

    def summary(self) -> str:
        """Two or three lines for the terminal."""
        verdict = "conforms" if self.conforms else "does NOT conform"
        line = f"{self.model}: {verdict} to {self.description}"
        if self.logits_error is not None:
            line += f" (logits vs {self.reference}: {self.logits_error:.1e})"
        return "\n".join([line, *(f"  - {d.sentence}" for d in self.diagnoses)])


def dims(shape) -> str:
    return "-" if shape is None else "×".join(map(str, shape))


def write_report(report: Report, folder: str | os.PathLike) -> list[Path]:
    """``conformance.md`` and ``conformance.json`` in ``folder`` (created)."""

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file; give a folder for the report ({arg('out')})")
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / REPORT_FILES[0], folder / REPORT_FILES[1]]
    atomic_write(paths[0], lambda f: f.write(report.to_markdown().encode()))
    atomic_write(paths[1], lambda f: f.write(report.to_json().encode()))
    return paths
