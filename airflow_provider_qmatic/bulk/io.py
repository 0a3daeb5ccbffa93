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

Information answers (bookings) come in two forms: an ``information_questions`` field holding JSON
(``[{"questionId": "q1", "answer": "..."}]`` or ``{"q1": "..."}``), or one column per question
named ``question:<questionId>`` (the id exactly as Qmatic shows it; the prefix is matched without
regard to case or spaces), whose cell is the answer; an empty cell is no answer. A row may use
both for different questions, not for the same one.

Big files
---------
Rows are streamed: :class:`InputRows` reads its source line by line each time it is iterated, so a
million-row file costs the memory of one line, not of the file. The runner iterates twice (validate
every row before sending anything, then run); a file is therefore read twice. ``max_rows`` bounds
how many rows a source may have.

Results files
-------------
A local results file is written to a temporary file created exclusively (``O_EXCL``, never through
a planted symlink) in the target's directory, flushed to disk, then renamed over the target: a
reader sees the old file or the new one, never half of one. On object stores (``s3://``, ...) the
store's own upload is used, which is all-or-nothing per object there. In CSV results, a value that
a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, tab or carriage
return) is prefixed with ``'`` (the OWASP CSV-injection rule); JSON Lines results are written as
they are.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import stat
import tempfile
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeGuard, runtime_checkable
from urllib.parse import unquote, urlsplit

from airflow_provider_qmatic.bulk.args import DEFAULT_MAX_ROWS, check_max_rows
from airflow_provider_qmatic.exceptions import QmaticConfigError
from airflow_provider_qmatic.state._files import kind_of

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
            "service_ids",
        ),
    ),
    "reschedule": (("appointment_id", "start_time"), ("end_time", "notes", "service_ids")),
    "cancel": (("appointment_id",), ()),
    # The identifier to search, which stays the customer's, and the new details.
    "update_customer": (
        ("personal_identifier", "first_name", "last_name", "email"),
        ("phone_number", "date_of_birth"),
    ),
}
CUSTOMER_FIELDS: tuple[str, ...] = (
    "personal_identifier",
    "first_name",
    "last_name",
    "email",
    "phone_number",
    "date_of_birth",
)
# A required column a row may give in another form: several services of one appointment
# (``service_ids``: ids separated by ";" in a CSV cell, a JSON list in a JSON Lines row) for one.
ALTERNATIVES: dict[str, str] = {"service_id": "service_ids"}
# One column per information question: "question:<questionId>" (see the module documentation).
QUESTION_PREFIX = "question:"
_QUESTION_COLUMN = re.compile(r"\s*question\s*:\s*(\S(?:.*\S)?)\s*$", re.IGNORECASE | re.DOTALL)
OUTCOME_COLUMNS: tuple[str, ...] = ("row", "status", "appointment_id", "error")
CSV_SUFFIXES = (".csv",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
# A row of a CSV file may be long (notes), but not unbounded.
_CSV_FIELD_LIMIT = 1024 * 1024
# One line of an input file; a longer one is refused rather than read whole into memory.
_LINE_LIMIT = 8 * 1024 * 1024
_CHUNK = 1024 * 1024
_BOM = b"\xef\xbb\xbf"
# OWASP CSV injection: a cell starting with one of these is a formula to a spreadsheet.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# A lone carriage return that ends a line (old Mac line ends), for splitting decoded text.
_LONE_CR = re.compile(r"(?<=\r)(?!\n)")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


@runtime_checkable
class PathLike(Protocol):
    """What the reader and writer need of a path: ObjectStoragePath, pathlib.Path, UPath."""

    def open(self, *args: Any, **kwargs: Any) -> Any: ...


Source = Sequence[Mapping[str, Any]] | str | os.PathLike[str] | PathLike


def normalise_column(name: str) -> str:
    """``Personal Identifier``, ``personalIdentifier``, ``personal-identifier``: ``personal_identifier``."""
    text = _CAMEL.sub("_", str(name).strip())
    return re.sub(r"[\s\-.]+", "_", text).strip("_").lower()


def known_fields(action: str) -> tuple[str, ...]:
    required, optional = FIELDS[action]
    return required + optional


def question_field(name: str) -> str | None:
    """``question:<questionId>`` for a column so named (prefix in any case, spaces around it), else
    None. The id is kept as written: Qmatic's ids are compared exactly."""
    match = _QUESTION_COLUMN.match(str(name))
    return QUESTION_PREFIX + match.group(1) if match else None


def takes_questions(action: str) -> bool:
    """Whether rows of ``action`` carry information answers (``question:<id>`` columns)."""
    return "information_questions" in known_fields(action)


def _field_of(action: str, name: str) -> str:
    """The field a column or ``column_map`` target names: a question column, or the normalised name."""
    question = question_field(name) if takes_questions(action) else None
    return question or normalise_column(name)


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
        field = _field_of(action, str(target))
        if field not in fields and not (takes_questions(action) and question_field(field)):
            also = f", or {QUESTION_PREFIX}<questionId>" if takes_questions(action) else ""
            raise QmaticConfigError(
                f"column_map maps {str(column)!r} to {str(target)!r}, which is not a field of a bulk "
                f"{action}; fields: {', '.join(fields)}{also}",
                field="column_map",
            )
        out[str(column)] = field
    return out


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
    """A plain ``pathlib.Path`` for a local file (also an ObjectStoragePath on ``file://``), else None.

    ``~`` is expanded: ``ObjectStoragePath("~/results.csv")`` keeps it literally.
    """
    if type(path).__module__ == "pathlib":
        return Path(path).expanduser()
    protocol = getattr(path, "protocol", None)
    if protocol in ("", "file", "local") and isinstance(getattr(path, "path", None), str):
        return Path(path.path).expanduser()
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


def _is_file(source: Any) -> TypeGuard[str | os.PathLike[str] | PathLike]:
    """A path or URI (a list of rows is a Sequence; a path-like object is not)."""
    return isinstance(source, (str, os.PathLike)) or (
        isinstance(source, PathLike) and not isinstance(source, Sequence)
    )


def _open_binary(path: PathLike, what: str) -> Any:
    local = local_path(path)
    try:
        return _open_local(local, what) if local is not None else path.open("rb")
    except FileNotFoundError:
        raise QmaticConfigError(f"{what} {describe(path)} does not exist", field="rows") from None
    except OSError as exc:
        raise QmaticConfigError(
            f"{what} {describe(path)} cannot be read: {exc.strerror or type(exc).__name__}", field="rows"
        ) from None


def _open_local(path: Path, what: str) -> BinaryIO:
    """A local file, opened without waiting: ``O_NONBLOCK`` makes a FIFO with no writer open at once
    (a plain ``open`` would wait for a writer forever, and the task with it), and anything but a
    regular file (FIFO, device, socket, directory) is then refused, naming ``rows`` and the fix."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise QmaticConfigError(
                f"rows: {what} {describe(path)} is {kind_of(mode)}, not a regular file, and would be waited "
                "on or read without end; name a regular .csv or .jsonl file (copy the data into one) or "
                "pass the rows as a list",
                field="rows",
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _raw_lines(handle: Any, what: str, where: str) -> Iterator[bytes]:
    """The handle's lines (with their ``\n``), from 1 MiB reads: any file object with ``read(n)``
    will do (fsspec's remote files have no ``readline(limit)``), and no line is held beyond 8 MiB."""
    rest = b""
    while True:
        try:
            chunk = handle.read(_CHUNK)
        except OSError as exc:
            raise QmaticConfigError(
                f"{what} {where} cannot be read: {exc.strerror or type(exc).__name__}", field="rows"
            ) from None
        if isinstance(chunk, str):  # a text-mode file system
            chunk = chunk.encode("utf-8")
        if not chunk:
            break
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield line + b"\n"
        if len(rest) > _LINE_LIMIT:
            yield rest  # the caller refuses it
            return
    if rest:
        yield rest


def text_lines(path: PathLike, *, what: str = "input file") -> Iterator[tuple[int, str]]:
    """The file's lines as ``(line number, text)``, read a chunk at a time: UTF-8, a leading BOM
    dropped.

    Any other encoding is a clear error naming the byte offset and line; so is a line longer than
    8 MiB (a file without line breaks would otherwise be read whole).
    """
    where = describe(path)
    with _open_binary(path, what) as handle:
        offset = 0
        for number, raw in enumerate(_raw_lines(handle, what, where), start=1):
            if len(raw) > _LINE_LIMIT:
                raise QmaticConfigError(
                    f"{what} {where} line {number} is longer than {_LINE_LIMIT // (1024 * 1024)} MiB; is it "
                    "really a CSV or JSON Lines file?",
                    field="rows",
                )
            start = len(_BOM) if number == 1 and raw.startswith(_BOM) else 0
            try:
                text = raw[start:].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise QmaticConfigError(
                    f"{what} {where} is not UTF-8 text (invalid byte at offset "
                    f"{offset + start + exc.start}, line {number}); save it as UTF-8 (with or without BOM), "
                    "e.g. `iconv -f latin1 -t utf-8`",
                    field="rows",
                ) from None
            offset += len(raw)
            yield number, text


def _physical_lines(lines: Iterable[tuple[int, str]]) -> Iterator[str]:
    """Text lines for the csv module, a lone ``\r`` (old Mac line end) also ending a line."""
    for _number, text in lines:
        if "\r" in text[:-2]:
            yield from _LONE_CR.split(text)
        else:
            yield text


def _delimiter(header_line: str) -> str:
    """Comma; a header without commas but with semicolons or tabs (spreadsheet exports in some
    locales) names its own delimiter. Guessing from the data itself is not reliable."""
    if "," in header_line:
        return ","
    return ";" if ";" in header_line else ("\t" if "\t" in header_line else ",")


def csv_records(path: PathLike, *, what: str = "input file") -> Generator[list[str], None, None]:
    """The header of a CSV file (cells stripped), then each non-blank record, streamed.

    Raises :class:`QmaticConfigError` for an empty file or header, and for a malformed line (named).
    """
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    where = describe(path)
    lines = text_lines(path, what=what)
    first = next(lines, None)
    if first is None:
        raise QmaticConfigError(f"CSV file {where} is empty: it needs a header row", field="rows")
    delimiter = _delimiter(first[1].split("\n", 1)[0])
    reader = csv.reader(_physical_lines(_chain(first, lines)), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
        if not any(header):
            raise QmaticConfigError(f"CSV file {where} has an empty header row", field="rows")
        yield header
        for record in reader:
            if any(cell.strip() for cell in record):  # blank lines carry no row
                yield record
    except csv.Error as exc:
        raise QmaticConfigError(f"CSV file {where} line {reader.line_num}: {exc}", field="rows") from None


def _chain(first: tuple[int, str], rest: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    yield first
    yield from rest


def jsonl_objects(path: PathLike, *, what: str = "input file") -> Iterator[dict[str, Any]]:
    """Each non-blank line of a JSON Lines file as a dict, streamed; a bad line is a named error.

    JSON nested deeper than the parser goes (``[[[[...``) is a bad line like any other, not a
    ``RecursionError``.
    """
    where = describe(path)
    for number, line in text_lines(path, what=what):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except RecursionError:
            raise QmaticConfigError(
                f"JSON Lines file {where} line {number} is nested too deeply to read", field="rows"
            ) from None
        except ValueError:
            raise QmaticConfigError(
                f"JSON Lines file {where} line {number} is not valid JSON", field="rows"
            ) from None
        if not isinstance(value, dict):
            raise QmaticConfigError(
                f"JSON Lines file {where} line {number} is not a JSON object", field="rows"
            )
        yield value


class _Columns:
    """Input column -> field, learnt as columns appear (a JSON row may bring new keys), checked."""

    def __init__(self, action: str, renames: Mapping[str, str]) -> None:
        self.action = action
        self.renames = renames
        self.fields = set(known_fields(action))
        self.questions = takes_questions(action)
        self.mapping: dict[str, str | None] = {}
        self.taken: dict[str, str] = {}

    def learn(self, columns: Iterable[str]) -> None:
        for column in columns:
            if column in self.mapping:
                continue
            field = self.renames.get(column) or _field_of(self.action, column)
            if field not in self.fields and not (self.questions and question_field(field)):
                self.mapping[column] = None
                continue
            if field in self.taken:
                raise QmaticConfigError(
                    f"columns {self.taken[field]!r} and {column!r} both map to the field {field!r}; rename "
                    "one (column_map) or drop it",
                    field="column_map",
                )
            self.taken[field] = column
            self.mapping[column] = field

    def apply(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The row keyed by field, text stripped, empty text and None as missing."""
        return _fields(zip(map(self.mapping.get, row), row.values(), strict=True))


def _fields(pairs: Iterable[tuple[str | None, Any]]) -> dict[str, Any]:
    """``{field: value}`` from ``(field or None, value)`` pairs; inlined, as it runs once per row."""
    out: dict[str, Any] = {}
    for field, value in pairs:
        if field is None or value is None:
            continue
        if isinstance(value, str):
            value = value.strip()
            if not value:
                continue
        out[field] = value
    return out


class InputRows:
    """The rows of a source, flat dicts keyed by field name, numbered from 1; read lazily.

    Each iteration reads the source afresh (a file line by line), so memory holds one row at a time.
    A CSV file's header is read and checked at once; the columns of JSON Lines and of a list are
    known only after the first full iteration, which ends by checking them. Every check raises
    :class:`QmaticConfigError`, so iterating once before sending anything is the whole validation
    of the source.

    :param max_rows: the most rows the source may have; one more is a clear error naming it.
    """

    def __init__(
        self,
        source: Source,
        *,
        action: str,
        column_map: Mapping[str, str] | None = None,
        max_rows: int = DEFAULT_MAX_ROWS,
    ) -> None:
        if action not in FIELDS:
            raise QmaticConfigError(f"unknown bulk action {action!r}", field="action")
        self.action = action
        self.max_rows = check_max_rows(max_rows)
        self._columns = _Columns(action, check_column_map(action, column_map))
        self._checked = False
        self._list: Sequence[Any] | None = None
        self._path: PathLike | None = None
        self._header: list[str] = []
        if _is_file(source):
            self._path = as_path(source)
            self.source = describe(self._path)
            self._format = file_format(self._path, what="input file")
            if self._format == "csv":
                self._read_header()
        elif isinstance(source, Sequence):
            self._list = source
            self.source = "the row list"
            self._format = "list"
            if len(source) > self.max_rows:
                raise self._too_many()
        else:
            raise QmaticConfigError(
                "rows must be a list of dicts or a path/URI of a .csv or .jsonl file, got "
                f"{type(source).__name__}",
                field="rows",
            )

    @property
    def columns(self) -> frozenset[str]:
        """The fields present so far (all of them after one full iteration)."""
        return frozenset(self._columns.taken)

    @property
    def ignored(self) -> tuple[str, ...]:
        """Input columns that name no field (all of them after one full iteration)."""
        return tuple(c for c, f in self._columns.mapping.items() if f is None)

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        count = 0
        rows = self._csv_rows() if self._format == "csv" else self._mapped_rows()
        for count, row in enumerate(rows, start=1):
            if count > self.max_rows:
                raise self._too_many()
            yield count, row
        if not self._checked:
            self._check_required(has_rows=count > 0)
            self._checked = True

    def _csv_rows(self) -> Iterator[dict[str, Any]]:
        """A CSV file's rows: cells go straight to their fields (the fast path of big files)."""
        assert self._path is not None
        records = csv_records(self._path)
        header = next(records)
        self._columns.learn(h for h in header if h)
        fields = [self._columns.mapping.get(h) if h else None for h in header]
        for record in records:
            yield _fields(zip(fields, record, strict=False))  # a short or long record: its cells

    def _mapped_rows(self) -> Iterator[dict[str, Any]]:
        """Rows of a list or a JSON Lines file, flattened; their keys may differ row by row."""
        if self._list is not None:
            for index, item in enumerate(self._list, start=1):
                if not isinstance(item, Mapping):
                    raise QmaticConfigError(
                        f"row {index} of the row list is a {type(item).__name__}, not a mapping of column "
                        "to value",
                        field="rows",
                    )
                raw = flatten_row(item)
                self._columns.learn(raw)
                yield self._columns.apply(raw)
        else:
            assert self._path is not None
            for value in jsonl_objects(self._path):
                raw = flatten_row(value)
                self._columns.learn(raw)
                yield self._columns.apply(raw)

    def _read_header(self) -> None:
        assert self._path is not None
        records = csv_records(self._path)
        try:
            header = next(records)
        finally:
            records.close()
        self._header = [h for h in header if h]
        self._columns.learn(self._header)
        self._check_required(has_rows=True)
        self._checked = True

    def _check_required(self, *, has_rows: bool) -> None:
        required, _optional = FIELDS[self.action]
        taken = self._columns.taken
        missing = [f for f in required if f not in taken and ALTERNATIVES.get(f, f) not in taken]
        if missing and (has_rows or self._path is not None):
            found = self._header if self._format == "csv" else list(self._columns.mapping)
            raise QmaticConfigError(
                f"{self.source} lacks the required column(s) {', '.join(missing)} for a bulk "
                f"{self.action} (columns found: {', '.join(found) or 'none'}); name them as the fields "
                "are named or rename them with column_map",
                field="rows",
            )

    def _too_many(self) -> QmaticConfigError:
        return QmaticConfigError(
            f"{self.source} has more than max_rows={self.max_rows:,} rows; split it into smaller jobs, or "
            "raise max_rows if this worker has the memory and the time for it",
            field="max_rows",
        )


def load_rows(
    source: Source,
    *,
    action: str,
    column_map: Mapping[str, str] | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> InputRows:
    """The rows of ``source``, read lazily (see :class:`InputRows`); a CSV header is checked now.

    :param source: a list of dicts, or a path/URI of a ``.csv`` or ``.jsonl`` file.
    :param action: ``book``, ``reschedule`` or ``cancel``: decides the fields.
    :param column_map: ``{input column: field}`` for columns whose names differ from the fields.
    :param max_rows: the most rows the source may have.
    """
    return InputRows(source, action=action, column_map=column_map, max_rows=max_rows)


def same_file(a: Any, b: Any) -> bool:
    """Whether two paths name one file: the same inode for local files (so a symlink or hard link to
    the input counts), else the same protocol and resolved path."""
    left, right = local_path(as_path(a)), local_path(as_path(b))
    if left is not None and right is not None:
        with contextlib.suppress(OSError):
            return os.path.samefile(left, right)
        return left.resolve() == right.resolve()
    if left is not None or right is not None:
        return False
    pa, pb = as_path(a), as_path(b)
    key_a = (getattr(pa, "protocol", None), str(getattr(pa, "path", pa)).rstrip("/"))
    key_b = (getattr(pb, "protocol", None), str(getattr(pb, "path", pb)).rstrip("/"))
    return key_a == key_b


def check_results_path(results_path: Any, source: Any) -> None:
    """Refuse a ``results_path`` that is the input file itself (it would be overwritten)."""
    if results_path is None or source is None:
        return
    if _is_file(source) and same_file(results_path, source):
        raise QmaticConfigError(
            f"results_path {describe(as_path(results_path))} is the input file: writing the outcomes "
            "would overwrite the rows; choose another results_path",
            field="results_path",
        )


# -- writing -------------------------------------------------------------------------------------


def _neutralise(value: Any) -> Any:
    """A cell a spreadsheet would run as a formula, made text with a leading ``'`` (OWASP)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def render_outcomes(outcomes: Iterable[Mapping[str, Any]], fmt: str) -> Iterator[str]:
    """Outcomes as CSV (with header, formula-like cells neutralised) or JSON Lines text, in pieces."""
    if fmt == "jsonl":
        for o in outcomes:
            yield json.dumps({k: o.get(k) for k in OUTCOME_COLUMNS}) + "\n"
        return
    buffer = io.StringIO(newline="")
    # CRLF (RFC 4180): the writer then quotes any value holding a CR or LF, so none splits a record.
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(OUTCOME_COLUMNS)
    for o in outcomes:
        writer.writerow(["" if o.get(k) is None else _neutralise(o.get(k)) for k in OUTCOME_COLUMNS])
        if buffer.tell() > 1 << 16:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def write_outcomes(path: str | os.PathLike[str] | PathLike, outcomes: Iterable[Mapping[str, Any]]) -> str:
    """Write outcomes to ``path`` (format by extension); returns the path as shown in messages.

    Locally through an exclusively created temporary file in the target's directory, renamed over
    the target (see the module documentation); elsewhere through the store's own upload.
    """
    target = as_path(path)
    fmt = file_format(target, what="results_path")
    local = local_path(target)
    if local is not None:
        _replace_atomically(local, render_outcomes(outcomes, fmt))
        return describe(local)
    parent = getattr(target, "parent", None)
    mkdir = getattr(parent, "mkdir", None)
    if callable(mkdir):
        with contextlib.suppress(OSError, NotImplementedError, TypeError):
            mkdir(parents=True, exist_ok=True)  # object stores have no directories
    with target.open("wb") as handle:
        for piece in render_outcomes(outcomes, fmt):
            handle.write(piece.encode("utf-8"))
    return describe(target)


def _replace_atomically(target: Path, pieces: Iterable[str]) -> None:
    """Write ``pieces`` to a new file beside ``target`` and rename it over ``target``.

    ``mkstemp`` creates the file with ``O_CREAT | O_EXCL | O_NOFOLLOW`` under a random name, mode
    0600: a symlink or file planted in the directory can neither be followed nor reused. An existing
    target's permission bits are kept; a new results file stays 0600 (private to this user).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            info = os.stat(target, follow_symlinks=False)
            if not os.path.islink(target):
                os.fchmod(fd, info.st_mode & 0o777)
        with os.fdopen(fd, "wb") as handle:
            for piece in pieces:
                handle.write(piece.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    with contextlib.suppress(OSError):  # the rename itself, on disk
        dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
