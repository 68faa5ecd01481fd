"""Input files into chunks of numbered records, and results and errors into JSON lines.

The workers are handed ranges of the input files, each read by the worker it lands on; a
chunk is one Beam element holding up to `--batch-size` records, so Beam's cost per
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


# Where the workers start reading: a file and its byte range, and the number of the
# range's first line. `end` is None for the whole of a file that cannot be read from the
# middle (compressed text, TFRecords). A plain tuple, as Source.
Range = tuple[str, int, int | None, int]

_BLOCK = 1 << 20  # bytes read at a time while a file is cut into ranges
# A range holds whole chunks: one each while a file has fewer than 2 * _LEAST_RANGES, so
# that a small file still spreads over the workers, and at most about 512 lines (or 8
# chunks) in a big one, since the shuffle costs Beam about a tenth of a millisecond a
# range.
_LEAST_RANGES = 16
_MOST_LINES = 512


def ranges(readable_file, data_format: str, size: int) -> Iterator[Range]:
    """The file cut into ranges of whole chunks of `size` lines (the last one shorter), or
    the whole file as one range when it cannot be read from the middle. Only the line
    breaks are looked at here; each worker reads and parses its own ranges."""
    from array import array

    from apache_beam.io.filesystem import CompressionTypes

    path = readable_file.metadata.path
    compressed = CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED
    if data_format != "text" or compressed:
        yield path, 0, None, 1
        return
    starts = array("q", [0])  # where each chunk's first line starts
    seen = offset = 0
    with readable_file.open(compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        while block := stream.read(_BLOCK):
            at = 0
            while at := block.find(b"\n", at) + 1:
                seen += 1
                if seen == size:
                    starts.append(offset + at)
                    seen = 0
            offset += len(block)
    if starts[-1] == offset:  # the last chunk ended at the end of the file
        starts.pop()
    most = max(8, _MOST_LINES // size)
    step = max(1, min(most, len(starts) // _LEAST_RANGES))
    for i in range(0, len(starts), step):
        end = starts[i + step] if i + step < len(starts) else offset
        yield path, starts[i], end, 1 + i * size


def chunks(where: Range, data_format: str, size: int) -> Iterator[list]:
    """A range's records in chunks of at most `size`, each `(source, record)`: text lines
    (blank ones skipped), or TFRecord records. A record that cannot be read is a string
    saying why, in its place.

    (Annotated as a plain list: Beam picks its coder from the hint, and one for bytes
    alone cannot carry that string.)"""
    path = where[0]
    if data_format == "text":
        records = _lines(where)
    else:
        records = _tf_records(path, gzip=data_format == "tf-record-gzip")
    chunk: list[tuple[Source, bytes | str]] = []
    for number, record in records:
        chunk.append(((path, number), record))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _lines(where: Range) -> Iterator[tuple[int, bytes]]:
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    path, start, end, first = where
    if end is None:
        # Decompressed by the file's extension (.gz, .bz2, ...), as ReadFromText does.
        with FileSystems.open(path) as stream:
            yield from _numbered(stream, first)
        return
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        stream.seek(start)
        text = stream.read(end - start)
    yield from _numbered(text.split(b"\n"), first)


def _numbered(lines, first: int) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(lines, start=first):
        line = line.strip()
        if line:
            yield number, line


def _tf_records(path: str, *, gzip: bool) -> Iterator[tuple[int, bytes]]:
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.io.tfrecordio import _TFRecordUtil

    compression = CompressionTypes.GZIP if gzip else CompressionTypes.UNCOMPRESSED
    with FileSystems.open(path, compression_type=compression) as stream:
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
