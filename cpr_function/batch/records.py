"""Input files into chunks of numbered records, and results and errors into JSON lines.

A chunk is one Beam element holding up to `--batch-size` records, so Beam's cost per
element is paid once a predict call, not once an instance.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import orjson

FORMATS = ("text", "tf-record", "tf-record-gzip")


# Where a record came from: its file, and its line (or record) number from 1. A plain
# tuple: Beam's coder handles a chunk of them ten times faster than of NamedTuples.
Source = tuple[str, int]


def chunks(readable_file, data_format: str, size: int) -> Iterator[list]:
    """The file's records in chunks of at most `size`, each `(source, record)`: text lines
    (blank ones skipped), or TFRecord records. A record that cannot be read is a string
    saying why, in its place.

    (Annotated as a plain list: Beam picks its coder from the hint, and one for bytes
    alone cannot carry that string.)"""
    path = readable_file.metadata.path
    if data_format == "text":
        records = _lines(readable_file)
    else:
        records = _tf_records(readable_file, gzip=data_format == "tf-record-gzip")
    chunk: list[tuple[Source, bytes | str]] = []
    for number, record in records:
        chunk.append(((path, number), record))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _lines(readable_file) -> Iterator[tuple[int, bytes]]:
    # open() decompresses by the file's extension (.gz, .bz2, ...), as ReadFromText does.
    with readable_file.open() as stream:
        for number, line in enumerate(stream, start=1):
            line = line.strip()
            if line:
                yield number, line


def _tf_records(readable_file, *, gzip: bool) -> Iterator[tuple[int, bytes]]:
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.tfrecordio import _TFRecordUtil

    compression = CompressionTypes.GZIP if gzip else CompressionTypes.UNCOMPRESSED
    with readable_file.open(compression_type=compression) as stream:
        number = 0
        while True:
            number += 1
            try:
                record = _TFRecordUtil.read_record(stream)
            except ValueError as exc:  # a corrupt record: nothing after it can be framed
                yield number, f"the TFRecord is corrupt ({exc}); the rest of its file is skipped"
                return
            if record is None:
                return
            yield number, record


def parse(record: bytes, *, binary: bool) -> tuple[bytes, Any]:
    """The JSON text to echo as the instance, and the instance.

    A text line must be JSON. A TFRecord record is JSON too, or else the serialized
    bytes themselves (a `tf.train.Example` for a SavedModel that takes one), sent as
    `{"b64": ...}` as a request would send them.

    Raises:
        ValueError: the record cannot be an instance; the message says why.
    """
    if isinstance(record, str):  # what the reader said of a record it could not read
        raise ValueError(record)
    try:
        return record, orjson.loads(record)
    except orjson.JSONDecodeError as exc:
        if not binary:
            raise ValueError(f"the line is not a JSON instance ({exc})") from None
    instance = {"b64": base64.b64encode(record).decode("ascii")}
    return orjson.dumps(instance), instance


def result_line(echo: bytes, prediction: Any) -> bytes:
    return b'{"instance":' + echo + b',"prediction":' + orjson.dumps(prediction) + b"}"


def error_line(source: Source, echo: bytes, status: int, message: str) -> bytes:
    error = orjson.dumps({"status": status, "message": message})
    path, line = source
    where = orjson.dumps({"path": path, "line": line})[1:-1]
    return b'{"instance":' + echo + b',"error":' + error + b"," + where + b"}"


def unparsable_line(source: Source, record: bytes | str, message: str) -> bytes:
    text = "" if isinstance(record, str) else record[:1000].decode("utf-8", "replace")
    path, line = source
    return orjson.dumps(
        {
            "path": path,
            "line": line,
            "text": text,
            "error": {"status": 400, "message": message},
        }
    )
