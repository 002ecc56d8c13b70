"""Medians of the repeats, the markdown table, the JSON file."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.scenarios import Case, Metric


@dataclass
class CaseRecord:
    """Every run of one case on one system."""

    system: str
    case: str
    runs: list[dict[str, float] | None] = field(default_factory=list)  # None: run failed
    notes: list[str] = field(default_factory=list)

    def median(self) -> dict[str, float]:
        keys = dict.fromkeys(k for run in self.runs if run for k in run)
        medians: dict[str, float] = {}
        for key in keys:
            values = [v for run in self.runs if run for v in [run[key]] if not math.isnan(v)]
            if values:
                medians[key] = statistics.median(values)
        return medians


def _format(value: float | None, metric: Metric) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{metric.digits}f}"


def markdown_table(
    systems: Sequence[str], cases: Sequence[Case], records: dict[tuple[str, str], CaseRecord]
) -> str:
    """One row per system, one column per figure; notes listed underneath."""
    columns = [(case.name, metric) for case in cases for metric in case.metrics]
    lines = [
        "| system | " + " | ".join(m.label for _, m in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for system in systems:
        cells = []
        for case_name, metric in columns:
            record = records.get((system, case_name))
            value = record.median().get(metric.key) if record else None
            cells.append(_format(value, metric))
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    notes = [
        f"- {record.system} {record.case}: {note}"
        for record in records.values()
        for note in record.notes
    ]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines)


def _clean(value: Any) -> Any:
    """NaN is not JSON: write null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def write_json(
    path: Path, header: dict[str, Any], records: dict[tuple[str, str], CaseRecord]
) -> None:
    results = [
        {
            "system": r.system,
            "case": r.case,
            "median": r.median(),
            "runs": r.runs,
            "notes": r.notes,
        }
        for r in records.values()
    ]
    path.write_text(json.dumps(_clean({**header, "results": results}), indent=2) + "\n")
