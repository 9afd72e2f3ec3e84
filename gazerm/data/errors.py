"""Errors that name the file, row and field of bad input."""

from __future__ import annotations

from gazerm.errors import GazermError


class DataError(GazermError, ValueError):
    """A problem with one input row (or a whole file, ``row=None``).

    ``row`` is 1-based: the line of a JSONL/CSV file (CSV counts the header as line 1), or
    the position of the record in a JSON array / Parquet file / hub dataset split.
    """

    def __init__(self, file: str, row: int | None, field: str | None, message: str) -> None:
        self.file = file
        self.row = row
        self.field = field
        self.message = message
        where = file if row is None else f"{file}, row {row}"
        if field:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[type[DataError], tuple[str, int | None, str | None, str]]:
        """Pickled as what it was built from (a worker process hands it to the driver)."""
        return DataError, (self.file, self.row, self.field, self.message)

    def to_record(self) -> dict[str, object]:
        return {"file": self.file, "row": self.row, "field": self.field, "error": self.message}
