"""report.json (`edgekit.reports.report/1`) as pydantic models: what `gate` reads, strictly.

A gate must fail closed: a report whose numbers are NaN, strings, booleans, negative, or
whose artifact ids repeat would otherwise pass checks it never made. Every field the gate
compares is typed here with its range; fields it does not read are kept as they are
(extra="allow": reports grow fields: docs/architecture.md). `compress` validates its own report
through the same models before writing it.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from edgekit.errors import ReportError

SCHEMA = "edgekit.reports.report/1"

# Ranges wide enough for any real file and run, narrow enough that every ratio the gate takes
# is a finite number (a p50 of 5e-324 ms made the change infinite; 10**400 bytes, exit 3).
MAX_MS = 1e9  # eleven days per inference
MIN_P50_MS = 1e-6  # a nanosecond
Fraction = Annotated[float, Field(ge=0.0, le=1.0, strict=True, allow_inf_nan=False)]
Milliseconds = Annotated[float, Field(ge=0.0, le=MAX_MS, strict=True, allow_inf_nan=False)]
Bytes = Annotated[int, Field(gt=0, le=1 << 53, strict=True)]
Text = Annotated[str, Field(min_length=1, strict=True)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Accuracy(_Open):
    top1: Fraction
    top5: Optional[Fraction] = None


class Latency(_Open):
    p50: Annotated[float, Field(ge=MIN_P50_MS, le=MAX_MS, strict=True, allow_inf_nan=False)]
    mean: Optional[Milliseconds] = None
    p90: Optional[Milliseconds] = None
    p99: Optional[Milliseconds] = None


class Benchmark(_Open):
    """How the latency was measured: the gate reads `runs` to size its noise interval."""
    runs: Optional[Annotated[int, Field(ge=1, strict=True)]] = None


class ArtifactEntry(_Open):
    id: Text
    format: Literal["tflite", "onnx", "openvino"]  # what a sweep measures with: no other runtime
    precision: Literal["fp32", "fp16", "int8", "int8w", "int16x8"]
    size_bytes: Bytes
    accuracy: Optional[Accuracy] = None
    agreement: Optional[Fraction] = None
    latency_ms: Optional[Latency] = None
    benchmark: Optional[Benchmark] = None
    device: Text = "host"


class Reference(_Open):
    """The source model's own scores: a sweep's accuracy floor is taken from them."""
    accuracy: Optional[Accuracy] = None


class Host(_Open):
    cpu: Optional[str] = None
    arch: Optional[str] = None


Count = Annotated[int, Field(ge=1, strict=True)]
Points = Annotated[float, Field(ge=0.0, le=100.0, strict=True, allow_inf_nan=False)]


class RecipeRecord(_Open):
    """The resolved recipe: a reader (a person or a gate config) compares runs on these, so a
    "calib_samples": "lots" is a broken report, not a string to carry along."""
    int8: Optional[Annotated[bool, Field(strict=True)]] = None
    fp16: Optional[Annotated[bool, Field(strict=True)]] = None
    formats: Optional[list[Text]] = None
    calib_samples: Optional[Count] = None
    batch_size: Optional[Count] = None
    seed: Optional[Annotated[int, Field(ge=0, strict=True)]] = None
    accuracy_tolerance: Optional[Points] = None
    learning_rate: Optional[Annotated[float, Field(gt=0.0, strict=True, allow_inf_nan=False)]] = None
    distillation: Optional[Fraction] = None


class SourceRecord(_Open):
    params: Optional[Annotated[int, Field(ge=0, strict=True)]] = None
    macs: Optional[Annotated[int, Field(ge=0, strict=True)]] = None
    num_classes: Optional[Count] = None
    size_bytes: Optional[Bytes] = None


class Report(_Open):
    schema_: Literal["edgekit.reports.report/1"] = Field(alias="schema")
    artifacts: Annotated[list[ArtifactEntry], Field(min_length=1)]  # nothing to compare passes nothing
    host: Optional[Host] = None

    @field_validator("artifacts")
    @classmethod
    def _unique_ids(cls, artifacts: list[ArtifactEntry]) -> list[ArtifactEntry]:
        seen = set()
        for artifact in artifacts:
            if artifact.id in seen:
                raise ValueError(f"artifact id {artifact.id!r} appears more than once")
            seen.add(artifact.id)
        return artifacts


def parse_strict_json(text: str):
    """JSON as the standard defines it: NaN and Infinity are not numbers there. A key twice in
    one object is refused: json.loads keeps the last, another reader the first, so a report
    could show a reviewer one size_bytes and the gate another."""
    def refuse(constant: str):
        raise ReportError(f"{constant} is not a JSON number")

    def unique_keys(pairs: list) -> dict:
        seen = {}
        for key, value in pairs:
            if key in seen:
                raise ReportError(f"the key {key[:80]!r} appears twice in one object")
            seen[key] = value
        return seen

    return json.loads(text, parse_constant=refuse, object_pairs_hook=unique_keys)


# Sections checked strictly but kept as plain dicts on Report (API users index report.source["keras"]).
SECTIONS = {"recipe": RecipeRecord, "source": SourceRecord, "reference": Reference}


def validate_report(data) -> Report:
    try:
        report = Report.model_validate(data)
        for name, model in SECTIONS.items():
            if isinstance(data, dict) and data.get(name) is not None:
                model.model_validate(data[name])
        return report
    except ValidationError as exc:
        error = exc.errors()[0]
        section = next((n for n, m in SECTIONS.items() if exc.title == m.__name__), None)
        loc = (section, *error["loc"]) if section else error["loc"]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        raise ReportError(f"{where or 'the report'}: {error['msg'][0].lower()}{error['msg'][1:]}"
                          .replace("Value error, ", "").replace("value error, ", "")) from None

