"""Reading labelled texts: rows (label, text, line) from a headerless SMS-style file or a CSV/TSV (with a
header row, or columns by position), and checking the labels. Every bad row is a DataError naming the file,
the line and the fix."""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Sequence

from gptft.data.base import DataError
from gptft.data.encoding import read_text

log = logging.getLogger(__name__)

SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}

Rows = list[tuple[str, str, int]]  # (label, text, first line of the row)


def read_rows(file: Path, sep: str | None = None, text_column: str | int | None = None,
              label_column: str | int | None = None, encoding: str = "auto", header: bool = True,
              report: dict | None = None) -> Rows:
    """A table (by `sep`, else by the file's ending) or, for any other file, `label<TAB>text` lines.
    `header=False`: the table has no header row and the columns are 0-based positions (label 0, text 1).
    `report` receives the encoding used and the count of lines that were not UTF-8."""
    sep = sep if sep is not None else SEPARATORS.get(file.suffix.lower())
    text, decoded = read_text(file, encoding)
    if report is not None:
        report.update(decoded)
    if sep is None:
        if text_column is not None or label_column is not None:
            raise DataError(
                f"{file}: data.text_column/label_column need a table; name the file .csv or .tsv, or set data.sep"
            )
        return read_label_tab_text(file, text)
    if not header:
        return read_table(file, text, sep, _position(text_column, 1, "text"), _position(label_column, 0, "label"),
                          header=False)
    return read_table(file, text, sep, str(text_column or "text"), str(label_column or "label"))


def _position(column, default: int, role: str) -> int:
    if column is None:
        return default
    if isinstance(column, bool) or not isinstance(column, int) or column < 0:
        raise DataError(f"data.{role}_column={column!r}: with data.header=false columns are positions "
                        f"(0 is the first); give an integer >= 0")
    return column


def read_label_tab_text(file: Path, text: str | None = None) -> Rows:
    """Rows of a headerless `label<TAB>text` file (`text`: its decoded content, else read here), with quoting
    off: quote characters are ordinary text (pandas' default quoting merges SMS lines)."""
    lines = (read_text(file)[0] if text is None else text).split("\n")  # only \n ends a line; a stray \r stays in the text
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(f"{file} is empty; expected one 'label<TAB>text' per line")
    rows = []
    for number, line in enumerate(lines, start=1):
        line = line[:-1] if line.endswith("\r") else line
        label, tab, text = line.partition("\t")
        if not tab:
            raise DataError(
                f"{file}, line {number}: no tab; expected 'label<TAB>text' (the SMS Spam Collection layout). "
                f"Fix the line, or give a .csv/.tsv file with a header row"
            )
        rows.append(_row(file, number, label.strip(), text))
    return rows


def read_table(file: Path, text: str, sep: str, text_column: str | int, label_column: str | int,
               header: bool = True) -> Rows:
    """Rows of a CSV/TSV, with a header row naming the columns or (header=False) none, columns by position.
    Tab-separated files are read with quoting off (quotes in messages are text) unless the file is quoted
    throughout (every header cell or every label in quotes); others with standard CSV quoting."""
    # no field can be longer than the file: a valid file with a long field (a 1 MB message) must parse
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    if sep == "\t":
        rows = _read_table(file, text, sep, csv.QUOTE_NONE, text_column, label_column, header, quoted_ok=True)
        if rows is not None:
            return rows
        log.info("%s: quoted throughout; reading it with CSV quoting", file)
    return _read_table(file, text, sep, csv.QUOTE_MINIMAL, text_column, label_column, header)


def _quoted(cell: str) -> bool:
    cell = cell.strip()
    return len(cell) >= 2 and cell[0] == cell[-1] == '"'


def _header_columns(file: Path, header: list[str], text_column: str, label_column: str) -> tuple[int, int]:
    header = [h.strip() for h in header]
    for role, column in (("text", text_column), ("label", label_column)):
        if column not in header:
            raise DataError(
                f"{file}, line 1: no column {column!r} in the header {header}; set data.{role}_column=NAME to "
                f"the column holding the {role}s, or data.header=false if the file has no header row"
            )
    return header.index(text_column), header.index(label_column)


def _read_table(file: Path, text: str, sep: str, quoting: int, text_column: str | int, label_column: str | int,
                header: bool = True, quoted_ok: bool = False) -> Rows | None:
    """The rows; with `quoted_ok` (a first pass without quoting) None when the file is quoted throughout."""
    rows = []
    prev = 0  # last physical line read; a failing record starts at prev + 1
    try:
        with io.StringIO(text, newline="") as f:
            reader = csv.reader(f, delimiter=sep, quoting=quoting, strict=True)
            width = None  # fields per row: the header's, else the first row's
            if header:
                first = next(reader, None)
                if not first:
                    raise DataError(f"{file} is empty; expected a header row naming columns "
                                    f"{text_column!r} and {label_column!r} (or set data.header=false)")
                if quoted_ok and all(_quoted(h) for h in first):
                    return None
                t, lab = _header_columns(file, first, text_column, label_column)
                width, what = len(first), "the header has"
            else:
                t, lab, what = text_column, label_column, "the first row has"
            prev = reader.line_num
            for row in reader:
                line, prev = prev + 1, reader.line_num  # first physical line of this record
                if not row:
                    continue
                width = width or len(row)
                if width <= max(t, lab):
                    raise DataError(f"{file}, line {line}: {width} fields, but data.text_column={t} and "
                                    f"data.label_column={lab} are positions counted from 0; fix them")
                if len(row) != width:
                    raise DataError(f"{file}, line {line}: {len(row)} fields, but {what} {width}; "
                                    f"fix the line (quote fields that contain {sep!r})")
                rows.append(_row(file, line, row[lab].strip(), row[t]))
    except csv.Error as err:
        raise DataError(f"{file}, line {prev + 1}: cannot parse ({err}); check the quoting of this line") from None
    if not rows:
        raise DataError(f"{file}: a header but no rows" if header else f"{file} is empty")
    if quoted_ok and all(_quoted(label) for label, _, _ in rows):
        return None
    return rows


def _row(file: Path, line: int, label: str, text: str) -> tuple[str, str, int]:
    if not label:
        raise DataError(f"{file}, line {line}: empty label; fix or remove the line")
    if not text.strip():
        raise DataError(f"{file}, line {line}: empty text; fix or remove the line")
    return label, text, line


MAX_CLASSES = 100  # data.max_classes' default: beyond it a label column is more likely free text than classes
FREE_TEXT_MIN_CLASSES = 10  # above this many classes, fewer than 2 rows per class looks like free text


def check_class_count(file: Path, rows: Rows, found: Sequence[str], max_classes: int, column: str | None) -> None:
    """Refuse a label column that looks like free text before anything is tokenized (10,000 'classes'
    would build a 10,000-way head, confusion matrices of 10^8 cells and run for minutes)."""
    n = len(found)
    free_text = n > FREE_TEXT_MIN_CLASSES and 2 * n > len(rows)
    if n <= max_classes and not free_text:
        return
    col = f"the label column {column!r}" if column else "the labels"
    why = (f"more than data.max_classes={max_classes}" if n > max_classes
           else "fewer than 2 rows per class on average")
    raise DataError(
        f"{file}: {col} has {n} distinct values in {len(rows)} rows ({why}; e.g. {list(found[:3])}): that looks "
        f"like free text, not class labels. Set data.label_column to the column holding the classes"
        + (", or raise data.max_classes if there really are that many" if n > max_classes and not free_text else "")
    )


def resolve_labels(file: Path, rows: Rows, given: Sequence[str] | None, positive_label: str | None,
                   max_classes: int = MAX_CLASSES, column: str | None = None) -> tuple[list[str], int | None]:
    """Class names (the given ones in their order, else the sorted labels found) and the index
    of the positive class for binary metrics: the given one, else the second name ("spam")."""
    found = sorted({label for label, _, _ in rows})
    check_class_count(file, rows, found, max_classes, column)
    if given is None:
        names = found
    else:
        names = list(given)
        if len(set(names)) != len(names):
            raise DataError(f"data.label_names has repeated names: {names}")
        for label, _, line in rows:
            if label not in names:
                raise DataError(
                    f"{file}, line {line}: label {label!r} is not one of data.label_names {names}; "
                    f"fix the line or add the label to data.label_names"
                )
        missing = [name for name in names if name not in found]
        if missing:
            raise DataError(f"{file}: no row has label {missing} from data.label_names; "
                            f"remove it from data.label_names")
    if len(names) < 2:
        raise DataError(f"{file}: every row has the label {names[0]!r}; a classifier needs at least 2 classes")
    if positive_label is None:
        return names, 1 if len(names) == 2 else None
    if str(positive_label) not in names:
        raise DataError(f"data.positive_label={positive_label!r} is not one of the labels {names}")
    return names, names.index(str(positive_label))
