"""CSV files: a header row, numeric feature columns and one target column, read without ever
repeating a cell of the file in a message (data.path may point at any local file)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from netsize.config import MAX_EXAMPLES, MAX_FEATURES
from netsize.errors import UserError

if TYPE_CHECKING:
    from netsize.data import CsvData, Task

MAX_AUTO_CLASSES = 20  # csv task auto: integer targets with at most this many values = classes
# Fewer rows than this cannot give train, validation and test splits worth a run.
MIN_CSV_ROWS = 10

# Messages about a CSV file name its path, line and column numbers and the recipe's keys, never
# a value read from it: data.path may point at any local file.


def load_csv(cfg: CsvData) -> tuple[torch.Tensor, torch.Tensor, Task]:
    path = Path(cfg.path)
    if not path.is_file():
        what = "is a folder, not" if path.is_dir() else "no such"
        raise UserError(f"{path}: {what} CSV file; fix data.path.")
    header_line, header, body = _read_csv_rows(path)
    _check_header(path, header_line, header, cfg)
    t = header.index(cfg.target)
    features: list[list[float]] = []
    targets: list[str] = []
    for line, row in body:
        if len(row) != len(header):
            raise UserError(f"{path}: line {line} has {len(row)} fields, the header has "
                            f"{len(header)}; give every row one field per column.")
        features.append([_number(row[i], path, i + 1, line) for i in range(len(row)) if i != t])
        targets.append(row[t].strip())
    if len(body) < MIN_CSV_ROWS:
        raise UserError(f"{path}: {len(body)} data rows; a CSV data set needs at least "
                        f"{MIN_CSV_ROWS} (training, validation and test examples come out of it).")
    x = torch.tensor(features, dtype=torch.float32)  # (N, F)
    y, task = _csv_targets(targets, [line for line, _ in body], t + 1, cfg, path)
    return x, y, task


def _read_csv_rows(path: Path) -> tuple[int, list[str], list[tuple[int, list[str]]]]:
    """(line of the header, header names, (line, fields) of each data row); empty lines after
    the header are skipped."""
    rows: list[tuple[int, list[str]]] = []
    line = 1
    try:
        # utf-8-sig: a byte-order mark (spreadsheet exports) is not part of the first name.
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            while True:
                line = reader.line_num + 1  # the line the next row starts on
                try:
                    row = next(reader)
                except StopIteration:
                    break
                if row or line == 1:
                    rows.append((line, row))
                if len(rows) > MAX_EXAMPLES + 1:
                    raise UserError(f"{path}: more than {MAX_EXAMPLES:,} data rows; use a "
                                    "smaller CSV file.")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; save the CSV file as UTF-8 (or fix "
                        "data.path).") from None
    except csv.Error as error:
        reason = ("a field is longer than csv's limit of "
                  f"{csv.field_size_limit():,} characters" if "field limit" in str(error)
                  else "it is not valid CSV")
        raise UserError(f"{path}: line {line}: {reason}; fix the file or point data.path at a "
                        "CSV file.") from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UserError(f"{path}: cannot read the CSV file ({reason}); fix data.path.") from None
    if not rows:
        raise UserError(f"{path}: empty CSV file; it needs a header row and at least "
                        f"{MIN_CSV_ROWS} data rows.")
    header_line, header = rows[0]
    if not any(name.strip() for name in header):
        raise UserError(f"{path}: the header (line {header_line}) is empty; the first line must "
                        "name the columns.")
    return header_line, [name.strip() for name in header], rows[1:]


def _check_header(path: Path, line: int, header: list[str], cfg: CsvData) -> None:
    if len(header) > MAX_FEATURES + 1:
        raise UserError(f"{path}: {len(header):,} columns; at most {MAX_FEATURES:,} features "
                        "and the target are supported.")
    if len(header) < 2:
        raise UserError(f"{path}: the header (line {line}) names {len(header)} column; a CSV "
                        "data set needs at least one feature column and the data.target column.")
    for i, name in enumerate(header):
        if not name:
            raise UserError(f"{path}: column {i + 1} of the header (line {line}) has no name; "
                            "name every column.")
        if name in header[:i]:
            raise UserError(f"{path}: column {i + 1} of the header (line {line}) repeats the "
                            f"name of column {header.index(name) + 1}; give each column its own "
                            "name.")
    if cfg.target not in header:
        raise UserError(f"{path}: the header (line {line}) has no column named {cfg.target!r} "
                        "(data.target); set data.target to the name of the target column.")


def _number(cell: str, path: Path, column: int, line: int) -> float:
    if (value := _try_float(cell)) is None:
        raise UserError(f"{path}: line {line}, column {column} is not a finite number; feature "
                        f"columns must be numeric (fix the value or drop the column).")
    return value


def _csv_targets(values: list[str], lines: list[int], column: int, cfg: CsvData,
                 path: Path) -> tuple[torch.Tensor, Task]:
    numeric = [_try_float(v) for v in values]
    all_numeric = all(v is not None for v in numeric)
    task: Task
    if cfg.task != "auto":
        task = cfg.task
    elif not all_numeric:
        task = "classification"
    else:
        integer = all(float(v).is_integer() for v in numeric)  # type: ignore[arg-type]
        few = len(set(numeric)) <= MAX_AUTO_CLASSES
        task = "classification" if integer and few else "regression"
    if task == "regression":
        if not all_numeric:
            bad = next(i for i, v in enumerate(numeric) if v is None)
            raise UserError(f"{path}: line {lines[bad]}, column {column} (data.target) is not "
                            "a finite number; a regression target must be numeric (use "
                            "data.task: classification for labels).")
        return torch.tensor(numeric, dtype=torch.float32).reshape(-1, 1), task
    keys: list[Any] = numeric if all_numeric else values  # sort numbers as numbers
    classes = sorted(set(keys))
    if len(classes) < 2:
        raise UserError(f"{path}: column {column} (data.target) has a single class; "
                        "classification needs at least two.")
    index = {c: i for i, c in enumerate(classes)}
    return torch.tensor([index[k] for k in keys], dtype=torch.int64), task


def _try_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
