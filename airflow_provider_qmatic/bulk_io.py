"""Rows in, outcomes out: lists of dicts, CSV and JSON Lines, through any path-like object.

Plain Python (no Airflow import at module level), so the bulk runner works from ``@task`` code and
scripts as well as from the operators. Files are opened through anything with an ``open(mode)``
method: Airflow's ``ObjectStoragePath`` (local, ``s3://``, ``gs://``, ... whatever the installed
Airflow and fsspec support), ``pathlib.Path`` or ``upath.UPath``. A plain string that is a local
path or a ``file://`` URI is opened directly; any other URI is handed to Airflow's
``ObjectStoragePath``, imported only then.

Column mapping
--------------
Rows are flat: one column per field (see :data:`FIELDS`). Column names are matched after
normalisation (case, spaces, hyphens and camelCase do not matter: ``Personal Identifier``,
``personalIdentifier`` and ``personal_identifier`` are one column), and ``column_map`` renames
anything else (``{"Branch": "branch_id"}``). Rows given as Python dicts may also be nested like the
API's JSON (``{"customer": {...}, "timeSlot": {...}}``). Columns that map to no field are ignored.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from airflow_provider_qmatic.exceptions import QmaticConfigError

# Every field a row may carry, per action: (required, optional).
FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "book": (
        (
            "branch_id",
            "service_id",
            "start_time",
            "personal_identifier",
            "first_name",
            "last_name",
            "email",
        ),
        (
            "end_time",
            "phone_number",
            "date_of_birth",
            "notes",
            "resource_id",
            "number_of_reservations",
            "information_questions",
        ),
    ),
    "reschedule": (("appointment_id", "start_time"), ("end_time", "notes")),
    "cancel": (("appointment_id",), ()),
}
CUSTOMER_FIELDS: tuple[str, ...] = (
    "personal_identifier",
    "first_name",
    "last_name",
    "email",
    "phone_number",
    "date_of_birth",
)
OUTCOME_COLUMNS: tuple[str, ...] = ("row", "status", "appointment_id", "error")
CSV_SUFFIXES = (".csv",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
# A row of a CSV file may be long (notes), but not unbounded.
_CSV_FIELD_LIMIT = 1024 * 1024
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


@runtime_checkable
class PathLike(Protocol):
    """What the reader and writer need of a path: ObjectStoragePath, pathlib.Path, UPath."""

    def open(self, *args: Any, **kwargs: Any) -> Any: ...


Source = Sequence[Mapping[str, Any]] | str | os.PathLike[str] | PathLike


@dataclass(frozen=True)
class InputRows:
    """Rows read from a source: flat dicts keyed by field name, numbered from 1.

    ``columns`` is the set of fields present (for a file, from its header; for a list, in any row).
    """

    rows: list[tuple[int, dict[str, Any]]]
    columns: frozenset[str]
    source: str
    ignored: tuple[str, ...] = ()


def normalise_column(name: str) -> str:
    """``Personal Identifier``, ``personalIdentifier``, ``personal-identifier``: ``personal_identifier``."""
    text = _CAMEL.sub("_", str(name).strip())
    return re.sub(r"[\s\-.]+", "_", text).strip("_").lower()


def known_fields(action: str) -> tuple[str, ...]:
    required, optional = FIELDS[action]
    return required + optional


def check_column_map(action: str, column_map: Mapping[str, str] | None) -> dict[str, str]:
    """``{input column: field}``, checked: every target must be a field of the action."""
    if not column_map:
        return {}
    if not isinstance(column_map, Mapping):
        raise QmaticConfigError(
            "column_map must be a mapping of input column to field, e.g. {'Branch': 'branch_id'}",
            field="column_map",
        )
    fields = known_fields(action)
    out: dict[str, str] = {}
    for column, target in column_map.items():
        field = normalise_column(str(target))
        if field not in fields:
            raise QmaticConfigError(
                f"column_map maps {str(column)!r} to {str(target)!r}, which is not a field of a bulk "
                f"{action}; fields: {', '.join(fields)}",
                field="column_map",
            )
        out[str(column)] = field
    return out


def map_columns(columns: Iterable[str], column_map: Mapping[str, str], action: str) -> dict[str, str]:
    """Input column -> field for the columns that map to a field of ``action`` (others are left out)."""
    fields = set(known_fields(action))
    mapping: dict[str, str] = {}
    taken: dict[str, str] = {}
    for column in columns:
        field = column_map.get(column) or normalise_column(column)
        if field not in fields:
            continue
        if field in taken:
            raise QmaticConfigError(
                f"columns {taken[field]!r} and {column!r} both map to the field {field!r}; rename one "
                "(column_map) or drop it",
                field="column_map",
            )
        taken[field] = column
        mapping[column] = field
    return mapping


def flatten_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A nested row (``customer``, ``timeSlot``/``time_slot`` objects, as in the API) made flat."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = normalise_column(key)
        if name == "customer" and isinstance(value, Mapping):
            for ckey, cvalue in value.items():
                flat.setdefault(str(ckey), cvalue)
        elif name == "time_slot" and isinstance(value, Mapping):
            for skey, svalue in value.items():
                flat.setdefault(str(skey), svalue)
        elif name in ("branch", "service") and isinstance(value, Mapping) and "id" in value:
            flat.setdefault(f"{name}_id", value["id"])
        else:
            flat[str(key)] = value
    return flat


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def apply_mapping(row: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """The row keyed by field, empty strings as missing."""
    out: dict[str, Any] = {}
    for column, value in row.items():
        field = mapping.get(column)
        if field is None:
            continue
        cleaned = _clean(value)
        if cleaned is not None:
            out[field] = cleaned
    return out


def missing_required(action: str, columns: Iterable[str]) -> list[str]:
    required, _optional = FIELDS[action]
    present = set(columns)
    return [field for field in required if field not in present]


# -- paths ---------------------------------------------------------------------------------------


def describe(path: Any) -> str:
    """The path for messages: no user info or query string, which may carry credentials."""
    text = str(path)
    if "://" not in text:
        return text
    parts = urlsplit(text)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{parts.path}"


def as_path(path: str | os.PathLike[str] | PathLike) -> PathLike:
    """A path-like object to open: strings that are local stay local, other URIs use ObjectStoragePath."""
    if isinstance(path, PathLike) and not isinstance(path, str):
        return path
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    if "://" not in text:
        return Path(text).expanduser()
    parts = urlsplit(text)
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return Path(unquote(parts.path))
    from airflow_provider_qmatic.compat import ObjectStoragePath

    result: PathLike = ObjectStoragePath(text)
    return result


def local_path(path: Any) -> Path | None:
    """A plain ``pathlib.Path`` for a local file (also an ObjectStoragePath on ``file://``), else None."""
    if type(path).__module__ == "pathlib":
        return Path(path)
    protocol = getattr(path, "protocol", None)
    if protocol in ("", "file", "local") and isinstance(getattr(path, "path", None), str):
        return Path(path.path)
    return None


def suffix_of(path: Any) -> str:
    name = str(getattr(path, "name", "") or str(path).rstrip("/").rsplit("/", 1)[-1])
    return ("." + name.rsplit(".", 1)[-1].lower()) if "." in name else ""


def file_format(path: Any, *, what: str) -> str:
    """``csv`` or ``jsonl`` from the file name's extension, or a clear error."""
    suffix = suffix_of(path)
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    raise QmaticConfigError(
        f"{what} {describe(path)} must end in .csv or .jsonl (or .ndjson) so its format is known",
        field=what.replace(" ", "_"),
    )


# -- reading -------------------------------------------------------------------------------------


def read_text(path: PathLike, *, what: str = "input file") -> str:
    """The file's text: UTF-8, a leading BOM dropped; any other encoding is a clear error."""
    try:
        with path.open("rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise QmaticConfigError(f"{what} {describe(path)} does not exist", field="rows") from None
    except OSError as exc:
        raise QmaticConfigError(
            f"{what} {describe(path)} cannot be read: {exc.strerror or type(exc).__name__}", field="rows"
        ) from None
    if isinstance(raw, str):  # a text-mode file system
        return raw.lstrip("\ufeff")
    try:
        return codecs.decode(bytes(raw), "utf-8-sig")
    except UnicodeDecodeError as exc:
        line = bytes(raw)[: exc.start].count(b"\n") + 1
        raise QmaticConfigError(
            f"{what} {describe(path)} is not UTF-8 text (invalid byte at offset {exc.start}, line {line}); "
            "save it as UTF-8 (with or without BOM), e.g. `iconv -f latin1 -t utf-8`",
            field="rows",
        ) from None


def read_csv(text: str, *, source: str) -> tuple[list[dict[str, Any]], list[str]]:
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    # Comma-separated; a header without commas but with semicolons or tabs (spreadsheet exports in
    # some locales) names its own delimiter. Guessing from the data itself is not reliable.
    first_line = text.split("\n", 1)[0]
    delimiter = ","
    if "," not in first_line:
        delimiter = ";" if ";" in first_line else ("\t" if "\t" in first_line else ",")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise QmaticConfigError(f"CSV file {source} is empty: it needs a header row", field="rows") from None
    except csv.Error as exc:
        raise QmaticConfigError(f"CSV file {source}: {exc}", field="rows") from None
    header = [h.strip() for h in header]
    if not any(header):
        raise QmaticConfigError(f"CSV file {source} has an empty header row", field="rows")
    rows: list[dict[str, Any]] = []
    try:
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue  # blank lines carry no row
            rows.append({header[i]: record[i] for i in range(min(len(header), len(record))) if header[i]})
    except csv.Error as exc:
        raise QmaticConfigError(f"CSV file {source} line {reader.line_num}: {exc}", field="rows") from None
    return rows, [h for h in header if h]


def read_jsonl(text: str, *, source: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            raise QmaticConfigError(
                f"JSON Lines file {source} line {number} is not valid JSON", field="rows"
            ) from None
        if not isinstance(value, dict):
            raise QmaticConfigError(
                f"JSON Lines file {source} line {number} is not a JSON object", field="rows"
            )
        rows.append(value)
    return rows


def load_rows(source: Source, *, action: str, column_map: Mapping[str, str] | None = None) -> InputRows:
    """Read and map the rows of ``source``; raises before any request if required columns are missing.

    :param source: a list of dicts, or a path/URI of a ``.csv`` or ``.jsonl`` file.
    :param action: ``book``, ``reschedule`` or ``cancel``: decides the fields.
    :param column_map: ``{input column: field}`` for columns whose names differ from the fields.
    """
    if action not in FIELDS:
        raise QmaticConfigError(f"unknown bulk action {action!r}", field="action")
    renames = check_column_map(action, column_map)
    is_file = isinstance(source, (str, os.PathLike)) or (
        isinstance(source, PathLike) and not isinstance(source, Sequence)
    )
    if is_file:
        path = as_path(source)  # type: ignore[arg-type]
        where = describe(path)
        fmt = file_format(path, what="input file")
        text = read_text(path)
        if fmt == "csv":
            raw_rows, all_columns = read_csv(text, source=where)
        else:
            raw_rows = [flatten_row(r) for r in read_jsonl(text, source=where)]
            all_columns = _all_keys(raw_rows)
    elif isinstance(source, Sequence):
        where = "the row list"
        raw_rows = []
        for index, item in enumerate(source, start=1):
            if not isinstance(item, Mapping):
                raise QmaticConfigError(
                    f"row {index} of the row list is a {type(item).__name__}, not a mapping of column "
                    "to value",
                    field="rows",
                )
            raw_rows.append(flatten_row(item))
        all_columns = _all_keys(raw_rows)
    else:
        raise QmaticConfigError(
            "rows must be a list of dicts or a path/URI of a .csv or .jsonl file, got "
            f"{type(source).__name__}",
            field="rows",
        )
    mapping = map_columns(all_columns, renames, action)
    columns = frozenset(mapping.values())
    missing = missing_required(action, columns)
    if missing and (raw_rows or is_file):
        raise QmaticConfigError(
            f"{where} lacks the required column(s) {', '.join(missing)} for a bulk {action} "
            f"(columns found: {', '.join(all_columns) or 'none'}); name them as the fields are named "
            "or rename them with column_map",
            field="rows",
        )
    rows = [(number, apply_mapping(raw, mapping)) for number, raw in enumerate(raw_rows, start=1)]
    ignored = tuple(c for c in all_columns if c not in mapping)
    return InputRows(rows=rows, columns=columns, source=where, ignored=ignored)


def _all_keys(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(str(key), None)
    return list(seen)


# -- writing -------------------------------------------------------------------------------------


def render_outcomes(outcomes: Iterable[Mapping[str, Any]], fmt: str) -> str:
    """Outcomes as CSV (with header) or JSON Lines text."""
    if fmt == "jsonl":
        return "".join(json.dumps({k: o.get(k) for k in OUTCOME_COLUMNS}) + "\n" for o in outcomes)
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(OUTCOME_COLUMNS)
    for o in outcomes:
        writer.writerow(["" if o.get(k) is None else o.get(k) for k in OUTCOME_COLUMNS])
    return buffer.getvalue()


def write_outcomes(path: str | os.PathLike[str] | PathLike, outcomes: Iterable[Mapping[str, Any]]) -> str:
    """Write outcomes to ``path`` (format by extension); returns the path as shown in messages."""
    target = as_path(path)
    fmt = file_format(target, what="results_path")
    data = render_outcomes(outcomes, fmt).encode("utf-8")
    local = local_path(target)
    if local is not None:
        # Written beside and renamed, so a reader never sees half a file.
        local.parent.mkdir(parents=True, exist_ok=True)
        temp = local.with_name(f".{local.name}.{os.getpid()}.tmp")
        with temp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, local)
    else:
        parent = getattr(target, "parent", None)
        mkdir = getattr(parent, "mkdir", None)
        if callable(mkdir):
            with contextlib.suppress(OSError, NotImplementedError, TypeError):
                mkdir(parents=True, exist_ok=True)  # object stores have no directories
        with target.open("wb") as handle:
            handle.write(data)
    return describe(target)


def read_outcomes(path: str | os.PathLike[str] | PathLike) -> list[dict[str, Any]]:
    """Read back a results file written by :func:`write_outcomes` (row as int, empty as None)."""
    target = as_path(path)
    fmt = file_format(target, what="results_path")
    text = read_text(target, what="results file")
    if fmt == "jsonl":
        return read_jsonl(text, source=describe(target))
    rows, _header = read_csv(text, source=describe(target))
    out: list[dict[str, Any]] = []
    for row in rows:
        item: dict[str, Any] = {k: (v or None) for k, v in row.items()}
        item["row"] = int(row["row"])
        out.append(item)
    return out
