"""Plain tables rendered as markdown (terminal, MLflow artifact) or CSV (spreadsheets, pandas)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[Any]]

    def markdown(self) -> str:
        cells = [self.headers, *([_cell(value) for value in row] for row in self.rows)]
        widths = [max(len(row[column]) for row in cells) for column in range(len(self.headers))]
        lines = [
            " | ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)) for row in cells
        ]
        lines = [f"| {line} |" for line in lines]
        lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.headers)
        writer.writerows(self.rows)
        return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
