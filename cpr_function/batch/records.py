"""Input files into chunks of numbered records, and results and errors into JSON lines.

The workers are handed ranges of the input files, each read by the worker it lands on; a
chunk is one Beam element holding up to `--batch-size` records, so Beam's cost per
element is paid once a predict call, not once an instance.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

FORMATS = ("text", "tf-record", "tf-record-gzip")


# Where a record came from: its file, where the range that read it starts, and its line
# (or record) number from 1 in that range. A plain tuple: Beam's coder handles a chunk of
# them ten times faster than of NamedTuples. `numbered` makes the number the file's own.
Source = tuple[str, int, int]


# What a worker reads: a file and its byte range. `end` is None for the whole of a file
# that cannot be read from the middle (compressed text, TFRecords). A plain tuple, as
# Source.
Range = tuple[str, int, int | None]

# The lines of a text file are cut into ranges from its size alone, never read for it:
# at least _LEAST_RANGES a file, so that a small file still spreads over the workers, and
# at most _MOST_BYTES a range (a worker reads a range into memory) unless two chunks need
# more. A range's last chunk is usually short, so a range holds at least two chunks,
# judged from the length of the lines in the file's first _SAMPLE bytes.
_LEAST_RANGES = 16
_MOST_BYTES = 1 << 20
# In Cloud Storage (or any store but local files) a range is one request, answered after
# tens of milliseconds: up to 16 MB, as Beam's own reads from it are.
_MOST_REMOTE_BYTES = 16 << 20
_SAMPLE = 1 << 16
# The most read with a range past its end (an eighth of it in a smaller range).
_PAST = 1 << 16
_BLOCK = 1 << 20  # bytes read at a time when the last line goes on further
SHOWN = 1000  # the most bytes of an unparsable record its error line shows


class Opener:
    """Opens input files to read their bytes as stored. A Cloud Storage file's reads fetch
    what was asked for (at least `buffer` bytes), not Beam's 16 MB from wherever they
    start, which would fetch a file cut into ranges many times over.

    Made in the command with the job's pipeline options, which say how to reach Cloud
    Storage (credentials, impersonation), and pickled into the graph; each worker's copy
    makes its own client the first time it needs one.
    """

    def __init__(self, options: dict | None = None):
        self._options = dict(options or {})
        self._gcs = None

    def __getstate__(self) -> dict:
        return {"_options": self._options, "_gcs": None}

    def __call__(self, path: str, buffer: int):
        if not path.startswith("gs://"):
            from apache_beam.io.filesystem import CompressionTypes
            from apache_beam.io.filesystems import FileSystems

            return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
        if self._gcs is None:
            from apache_beam.io.gcp.gcsio import GcsIO
            from apache_beam.options.pipeline_options import PipelineOptions

            self._gcs = GcsIO(pipeline_options=PipelineOptions.from_dictionary(self._options))
        return self._gcs.open(path, "rb", read_buffer_size=buffer)


def ranges(
    readable_file, data_format: str, size: int, opener: Opener | None = None
) -> Iterator[Range]:
    """The file cut into byte ranges for chunks of `size` lines, or the whole file as one
    range when it cannot be read from the middle. Only the first _SAMPLE bytes are read
    here, to judge the length of a line; each worker reads its own ranges, once."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    path = readable_file.metadata.path
    compressed = CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED
    if data_format != "text" or compressed:
        yield path, 0, None
        return
    total = readable_file.metadata.size_in_bytes
    if not total:
        return
    with (opener or Opener())(path, _SAMPLE) as stream:
        sample = stream.read(_SAMPLE)
    line = len(sample) / max(1, sample.count(b"\n"))
    local = FileSystems.get_scheme(path) in (None, "file")
    most = _MOST_BYTES if local else _MOST_REMOTE_BYTES
    step = max(2 * size * line, min(total / _LEAST_RANGES, most))
    yield from byte_ranges(path, total, math.ceil(step))


def byte_ranges(path: str, total: int, step: int) -> Iterator[Range]:
    """`total` bytes in ranges of `step` (the last one shorter)."""
    for start in range(0, total, step):
        yield path, start, min(start + step, total)


class Reading:
    """A range's records, each `(number, record)` from 1: text lines (blank ones skipped,
    but numbered), or TFRecord records. A record that cannot be read is a string saying
    why, in its place. For a byte range, `lines` is how many lines it holds, blank ones
    included, known once its first record is read (`numbered` adds them up).

    A byte range holds the lines that start in it: a line begins the file or follows a
    line break. The last of them may go on past the range's end, and is read to its end.
    """

    def __init__(self, where: Range, data_format: str, opener: Opener | None = None):
        self.where, self.data_format, self.lines = where, data_format, 0
        self._open = opener or Opener()

    def __iter__(self) -> Iterator[tuple[int, bytes | str]]:
        path, _, end = self.where
        if self.data_format != "text":
            return _tf_records(path, gzip=self.data_format == "tf-record-gzip")
        if end is None:
            return self._whole()
        return self._range()

    def _whole(self) -> Iterator[tuple[int, bytes]]:
        from apache_beam.io.filesystems import FileSystems

        # Decompressed by the file's extension (.gz, .bz2, ...), as ReadFromText does.
        with FileSystems.open(self.where[0]) as stream:
            yield from _numbered(stream)

    def _range(self) -> Iterator[tuple[int, bytes]]:
        path, start, end = self.where
        before = max(0, start - 1)  # the byte before the range: a line break or not
        # Past the end, an eighth more: the last line most often ends there, in this read.
        past = min(_PAST, (end - start) // 8 + 1)
        with self._open(path, end - before + past) as stream:
            stream.seek(before)
            data = stream.read(end - before + past)
            # Offsets into `data`: the range's own bytes are [0, limit), or [1, limit) after
            # the byte before it. One copy is made, of the lines this range holds.
            limit = min(end - before, len(data))  # shorter only if the file shrank
            first = data.find(b"\n", 0, limit) + 1 if start else 0
            if start and not first:
                return  # inside one line that began before the range
            if first >= limit:
                return  # a line break ends the range (the next line is the next range's)
            if data[limit - 1] == ord("\n"):
                text = data[first : limit - 1]  # the next line starts the next range
            elif (at := data.find(b"\n", limit)) >= 0:
                text = data[first:at]  # the last line ends in what was read past the end
            else:  # it goes on further, or ends the file
                rest = [data[first:]]
                while block := stream.read(_BLOCK):
                    at = block.find(b"\n")
                    rest.append(block if at < 0 else block[:at])
                    if at >= 0:
                        break
                text = b"".join(rest)
        lines = text.split(b"\n")
        self.lines = len(lines)
        yield from _numbered(lines)


def _numbered(lines) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if line:
            yield number, line


def chunks(reading: Reading, size: int) -> Iterator[list]:
    """A range's records in chunks of at most `size`, each `(source, record)`."""
    path, start, _ = reading.where
    chunk: list[tuple[Source, bytes | str]] = []
    for number, record in reading:
        chunk.append(((path, start, number), record))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def lines_before(counts: Iterable[tuple[str, tuple[int, int]]]) -> Iterator[tuple]:
    """From each range's `(path, (start, lines))`, `((path, start), lines before it in its
    file)`: what makes a range's numbers the file's own (`numbered`). A range counted
    twice (a file matched by two input paths, read twice) counts once."""
    by_file: dict[str, dict[int, int]] = {}
    for path, (start, lines) in counts:
        by_file.setdefault(path, {})[start] = lines
    for path, sizes in by_file.items():
        before = 0
        for start in sorted(sizes):
            yield (path, start), before
            before += sizes[start]


def numbered(source: Source, before: dict) -> tuple[str, int]:
    """The file and the record's number in it. A file's first range, or a file read
    whole, has no lines before it; any other range is in `before`."""
    path, start, number = source
    return path, (before[(path, start)] if start else 0) + number


def _tf_records(path: str, *, gzip: bool) -> Iterator[tuple[int, bytes | str]]:
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


def error_line(where: tuple[str, int], echo: bytes, status: int, message: str) -> bytes:
    error = orjson.dumps({"status": status, "message": message})
    path, line = where
    where = orjson.dumps({"path": path, "line": line})[1:-1]
    return b'{"instance":' + echo + b',"error":' + error + b"," + where + b"}"


def unparsable_line(where: tuple[str, int], record: bytes | str, message: str) -> bytes:
    text = "" if isinstance(record, str) else record[:SHOWN].decode("utf-8", "replace")
    path, line = where
    return orjson.dumps(
        {
            "path": path,
            "line": line,
            "text": text,
            "error": {"status": 400, "message": message},
        }
    )
