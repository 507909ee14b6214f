"""Reading CSV/TSV/JSONL tables into rows of strings, shared by the manifest and MEACorpus readers.

Both formats carry the same information, so both become a list of ``{column: value}`` dicts with
the line number kept for error messages. Empty cells and JSON nulls become None, so "no value"
looks the same whatever the file type.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from emovox.errors import CorpusError

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")


def read_table(path: Path, what: str) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """Column names and ``(line number, row)`` pairs of a CSV, TSV or JSONL file."""
    if not path.is_file():
        raise CorpusError(f"{what} {path} not found")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return _read_delimited(path, "\t" if suffix == ".tsv" else ",", what)
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path, what)
    raise CorpusError(f"{what} {path}: unknown file type {suffix!r}; use one of {', '.join(TABLE_SUFFIXES)}")


def _clean(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _read_delimited(path: Path, delimiter: str, what: str) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if not columns:
            raise CorpusError(f"{what} {path} is empty; the first line must name the columns")
        rows = []
        for row in reader:
            if None in row:  # more cells than header names
                raise CorpusError(
                    f"{what} {path}, line {reader.line_num}: more cells than columns; quote cells that contain {delimiter!r}"
                )
            cleaned = {k.strip(): _clean(v) for k, v in row.items()}
            if any(v is not None for v in cleaned.values()):
                rows.append((reader.line_num, cleaned))
    return columns, rows


def _read_jsonl(path: Path, what: str) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    rows = []
    columns: dict[str, None] = {}
    with path.open(encoding="utf-8-sig") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(
                    f"{what} {path}, line {n}: not valid JSON ({exc.msg}); each line must be one JSON object"
                ) from None
            if not isinstance(obj, dict):
                raise CorpusError(f"{what} {path}, line {n}: expected a JSON object, got {type(obj).__name__}")
            for k in obj:
                columns.setdefault(str(k).strip(), None)
            rows.append((n, {str(k).strip(): _clean(v) for k, v in obj.items()}))
    return list(columns), rows
