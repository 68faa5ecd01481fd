"""The batch-predict pipeline: input files, in chunks, through RunInference, into result
and error shards.

    Create(patterns) -> MatchAll -> ReadMatches -> Reshuffle -> ranges -> Reshuffle
        -> chunks -> parse -> RunInference -> lines -> WriteToText (results, errors)

The first Reshuffle spreads the files over the workers, which cut them into ranges. The
second Reshuffle spreads the byte ranges of one big file over every worker, which reads its
own ranges: the records themselves never pass through the shuffle, and each is read once
(records.Opener). A worker numbers the lines of a range from 1; each range's count of lines
comes out beside its chunks, and the error lines take their line numbers in the file from
those counts (a side input) once every range is read. Every record ends in exactly one line
of the results or of the errors; the counters below say how many.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, RunInference

from . import records
from .handler import CprModelHandler, Failure

NAMESPACE = "cpr_function"
RESULTS = "prediction.results"
ERRORS = "prediction.errors"
# The counters the summary reads.
READ, UNPARSABLE, PREDICTED, FAILED = "records_read", "unparsable", "predicted", "failed"


def build(
    pipeline: beam.Pipeline,
    handler: CprModelHandler,
    *,
    input_paths: Sequence[str],
    data_format: str,
    output_path: str,
    batch_size: int,
) -> None:
    """Adds the job's transforms to `pipeline`."""
    from apache_beam.io import fileio
    from apache_beam.io.filesystems import FileSystems

    # The input's reads get the job's own options (how to reach Cloud Storage).
    opener = records.Opener(pipeline.options.get_all_options(drop_default=True))

    read = (
        pipeline
        | "Patterns" >> beam.Create(list(input_paths))
        | "Match" >> fileio.MatchAll()
        | "Open" >> fileio.ReadMatches()
        # Many files are cut on many workers (cutting one reads its first bytes).
        | "SpreadFiles" >> beam.Reshuffle()
        | "Cut" >> beam.FlatMap(records.ranges, data_format, batch_size, opener)
        | "Spread" >> beam.Reshuffle()
        | "Chunk"
        >> beam.ParDo(_Read(data_format, batch_size, opener)).with_outputs("lines", main="chunks")
    )
    before = beam.pvalue.AsDict(
        read.lines
        | "AllCounts" >> beam.combiners.ToList()
        | "LinesBefore" >> beam.FlatMap(records.lines_before)
    )
    parsed = read.chunks | "Parse" >> beam.ParDo(_Parse(binary=data_format != "text")).with_outputs(
        "unparsable", main="instances"
    )
    lines = (
        parsed.instances
        | "Predict" >> RunInference(_Chunks(handler))
        | "Lines" >> beam.ParDo(_Lines()).with_outputs("errors", main="results")
    )
    _ = lines.results | "WriteResults" >> beam.io.WriteToText(
        FileSystems.join(output_path, RESULTS)
    )
    _ = (
        (
            parsed.unparsable
            | "NumberUnparsable" >> beam.Map(_numbered_lines, records.unparsable_line, before),
            lines.errors | "NumberErrors" >> beam.Map(_numbered_lines, records.error_line, before),
        )
        | "AllErrors" >> beam.Flatten()
        | "WriteErrors" >> beam.io.WriteToText(FileSystems.join(output_path, ERRORS))
    )


class _Read(beam.DoFn):
    """A range into chunks of its records; and, for a byte range, how many lines it held,
    as `(path, (start, lines))` on the "lines" output."""

    def __init__(self, data_format: str, size: int, opener: records.Opener):
        self._format, self._size, self._opener = data_format, size, opener

    def process(self, where):
        reading = records.Reading(where, self._format, self._opener)
        yield from records.chunks(reading, self._size)
        path, start, end = where
        if end is not None:
            yield beam.pvalue.TaggedOutput("lines", (path, (start, reading.lines)))


def _numbered_lines(failures: list, line, before: dict) -> bytes:
    """A chunk's failures, each `(source, *what line() shows)`, as error lines, each with
    its record's number in its file."""
    return b"\n".join(line(records.numbered(source, before), *shown) for source, *shown in failures)


class _Parse(beam.DoFn):
    """A chunk of records into a chunk of ((source, echo), instance); unparsable records
    go out as `(source, record, message)`, a chunk's worth at once, to be numbered."""

    def __init__(self, *, binary: bool):
        self._binary = binary
        self._read = beam.metrics.Metrics.counter(NAMESPACE, READ)
        self._unparsable = beam.metrics.Metrics.counter(NAMESPACE, UNPARSABLE)

    def process(self, chunk):
        parsed, bad = [], []
        for source, record in chunk:
            try:
                echo, instance = records.parse(record, binary=self._binary)
            except ValueError as exc:
                # At most what an error line shows of it (records.unparsable_line).
                shown = record if isinstance(record, str) else record[: records.SHOWN]
                bad.append((source, shown, str(exc)))
                continue
            parsed.append(((source, echo), instance))
        self._read.inc(len(chunk))
        if bad:
            self._unparsable.inc(len(bad))
            yield beam.pvalue.TaggedOutput("unparsable", bad)
        if parsed:
            yield parsed


class _Chunks(ModelHandler):
    """The handler with a chunk for its element: one predict call (or a few, to isolate
    a bad instance) and one output element a chunk, so Beam's cost is per chunk."""

    def __init__(self, handler: CprModelHandler):
        super().__init__()
        self._handler = handler

    def load_model(self):
        import logging

        # Each failure is a line of the error shards; a traceback for every step of
        # isolating it would bury the job's output.
        logging.getLogger("cpr_function.serving.model").setLevel(logging.CRITICAL)
        return self._handler.load_model()

    def run_inference(self, batch, model, inference_args: dict[str, Any] | None = None):
        keys, instances = zip(*batch, strict=True)
        results = self._handler.run_inference(instances, model, inference_args)
        return [[(key, result.inference) for key, result in zip(keys, results, strict=True)]]

    def get_num_bytes(self, batch) -> int:
        return sum(len(echo) for (_, echo), _ in batch)

    def get_metrics_namespace(self) -> str:
        return self._handler.get_metrics_namespace()

    def validate_inference_args(self, inference_args) -> None:
        self._handler.validate_inference_args(inference_args)

    def should_skip_batching(self) -> bool:
        return True  # a chunk is a batch already


class _Lines(beam.DoFn):
    """A chunk's outcomes into its result lines, one element, and its failures as
    `(source, echo, status, message)`, another, to be numbered; and a progress line on
    stderr every few seconds."""

    PROGRESS_SECONDS = 10.0

    def __init__(self):
        self._predicted = beam.metrics.Metrics.counter(NAMESPACE, PREDICTED)
        self._failed = beam.metrics.Metrics.counter(NAMESPACE, FAILED)

    def setup(self):
        self._done = 0
        self._started = self._shown = time.monotonic()

    def process(self, outcomes):
        self._progress(len(outcomes))
        results, errors = [], []
        for (source, echo), outcome in outcomes:
            if isinstance(outcome, Failure):
                errors.append((source, echo, outcome.status, outcome.message))
            else:
                results.append(records.result_line(echo, outcome))
        if results:
            self._predicted.inc(len(results))
            yield b"\n".join(results)
        if errors:
            self._failed.inc(len(errors))
            yield beam.pvalue.TaggedOutput("errors", errors)

    def _progress(self, count: int) -> None:
        self._done += count
        now = time.monotonic()
        if now - self._shown >= self.PROGRESS_SECONDS:
            self._shown = now
            rate = self._done / (now - self._started)
            print(
                f"batch-predict: worker {os.getpid()}: {self._done} instances done, "
                f"{rate:.0f} a second",
                file=sys.stderr,
                flush=True,
            )
