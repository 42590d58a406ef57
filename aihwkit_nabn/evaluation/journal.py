"""The sweep journal: one CSV row per finished evaluation, written and fsynced as it finishes.

The journal is the single source of truth of a sweep: a resumed sweep reads it to skip finished rows,
and every report is rewritten from it.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple, Union

__all__ = ["ROW_FIELDS", "OPTIONAL_FIELDS", "RowJournal", "read_rows", "row_key"]

ROW_FIELDS = (
    "model", "method", "source", "time_s", "time_label", "chip", "chip_seed", "metric", "value",
    "method_seconds", "eval_seconds", "unlabeled_samples", "labeled_samples", "trained_params", "device",
    "peak_mem_mib",
)
#: Columns a journal written by an older version may lack; they read back as None.
OPTIONAL_FIELDS = ("peak_mem_mib",)


def row_key(row: Mapping[str, Any]) -> Tuple[str, str, float, int, str]:
    """The identity of a row: ``(model, method, time_s, chip, metric)``."""
    return (str(row["model"]), str(row["method"]), float(row["time_s"]), int(row["chip"]), str(row["metric"]))


def read_rows(path: Union[str, Path]) -> List[Dict[str, Any]]:
    """Return the rows of a sweep journal (``rows.csv``) with numeric fields parsed."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    numeric = {"time_s": float, "chip": int, "chip_seed": int, "value": float, "method_seconds": float,
               "eval_seconds": float, "unlabeled_samples": int, "labeled_samples": int, "trained_params": int,
               "peak_mem_mib": float}

    def parse(key: str, value: Any) -> Any:
        if key in OPTIONAL_FIELDS and value in ("", None):
            return None
        return numeric[key](value) if key in numeric else value

    return [{k: parse(k, row.get(k)) for k in ROW_FIELDS} for row in rows]


class RowJournal:
    """Append-only CSV of finished rows, flushed and fsynced row by row so an interruption loses nothing."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A row cut off by a crash mid-write would corrupt the CSV: drop a trailing partial line.
        if self.path.exists():
            text = self.path.read_text()
            if text and not text.endswith("\n"):
                self.path.write_text(text[: text.rfind("\n") + 1])
            self._upgrade_header()
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = self.path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=ROW_FIELDS)
        if new:
            self._writer.writeheader()
            self._flush()

    def _upgrade_header(self) -> None:
        """Rewrite a journal whose header lacks newer optional columns (older rows get them blank)."""
        with self.path.open(newline="") as f:
            reader = csv.DictReader(f)
            header, rows = reader.fieldnames or [], list(reader)
        if not header or tuple(header) == ROW_FIELDS:
            return
        unknown = [h for h in header if h not in ROW_FIELDS]
        missing = [h for h in ROW_FIELDS if h not in header and h not in OPTIONAL_FIELDS]
        if unknown or missing:
            raise ValueError(f"{self.path} is not a sweep journal of this version (columns {header})")
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=ROW_FIELDS, restval="")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def _flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def append(self, row: Mapping[str, Any]) -> None:
        """Write one finished row to disk."""
        self._writer.writerow({k: row[k] for k in ROW_FIELDS})
        self._flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()
