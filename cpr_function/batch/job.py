"""One `batch-predict` run: Beam's options and runner, checks before the run, the run, and
its summary."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from . import pipeline
from .handler import CprModelHandler, call_size

SUMMARY = "prediction.summary.json"
_LOCAL = {None, "DirectRunner", "FnApiRunner"}
# What makes Dataflow install this package (and the user's) on its workers.
_SHIPPING = ("extra_packages", "setup_file", "sdk_container_image", "requirements_file")


# Instances a predict call takes when --batch-size is not given and the model's check
# found no larger call size (`handler.call_size`): gcloud's default.
BATCH_SIZE = 64


@dataclasses.dataclass(frozen=True)
class Local:
    """Beam's FnApiRunner on this machine: its workers forked from this process (`forks`
    of them, which Beam reaches by running `command`), run in this process
    (`in_process`), or started by Beam as its options say. `call_size` is what the
    model's check found its predictor to take in one call (`handler.call_size`)."""

    forks: int = 0
    in_process: bool = False
    command: str | None = None
    call_size: int | None = None


class JobFailed(Exception):
    """The job cannot start, or ran but its result fails the caller's bar; exit status 1."""


@dataclasses.dataclass(frozen=True)
class Job:
    handler: CprModelHandler
    input_paths: tuple[str, ...]
    output_path: str
    data_format: str = "text"
    batch_size: int | None = None  # None: as the model's check finds (see batch_size)
    max_error_rate: float | None = None
    beam_args: tuple[str, ...] = ()


def options(beam_args: Sequence[str]):
    """Beam's pipeline options for the job, and the runner to run it with: a runner's name,
    or `Local`.

    With no runner named (or DirectRunner), the local FnApiRunner with one worker a core:
    in this process when that is one, else processes forked from this one (on Linux).
    Never Prism, which downloads a binary at run time.
    """
    from apache_beam.options.pipeline_options import (
        DirectOptions,
        PipelineOptions,
        StandardOptions,
    )

    opts = PipelineOptions(list(beam_args))
    runner = opts.view_as(StandardOptions).runner
    if runner not in _LOCAL:
        return opts, runner
    direct = opts.view_as(DirectOptions)
    given = {a.split("=")[0] for a in beam_args}
    if "--direct_num_workers" not in given:
        direct.direct_num_workers = os.cpu_count() or 1
    if "--direct_running_mode" not in given:
        if direct.direct_num_workers > 1 and sys.platform == "linux":
            # Each of Beam's own worker processes would import Beam again: fork them
            # instead (on Linux, where forking with these libraries loaded is safe).
            return opts, Local(forks=direct.direct_num_workers)
        # One worker runs in this process: no second process to start, import Beam in
        # and feed over gRPC (a fifth of the job on a 100-tree forest).
        many = direct.direct_num_workers > 1
        direct.direct_running_mode = "multi_processing" if many else "in_memory"
    return opts, Local(in_process=direct.direct_running_mode == "in_memory")


def is_local(runner) -> bool:
    return isinstance(runner, Local)


def check(job: Job, opts, runner) -> list[str]:
    """What is wrong before anything runs; the files each input pattern matches.

    Raises:
        JobFailed: the options, the inputs or the output folder are wrong.
    """
    from apache_beam.io.filesystems import FileSystems

    FileSystems.set_options(opts)
    if not is_local(runner):
        _check_remote(opts, runner)
    matched = []
    for pattern in job.input_paths:
        found = [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list]
        if not found:
            raise JobFailed(f"--input-paths: nothing matches {pattern}")
        matched += found
    existing = FileSystems.match([FileSystems.join(job.output_path, "prediction.*")])
    if existing and existing[0].metadata_list:
        raise JobFailed(
            f"--output-path {job.output_path} already holds the output of a job "
            f"({existing[0].metadata_list[0].path}); give a new folder"
        )
    return matched


def _check_remote(opts, runner: str) -> None:
    from apache_beam.options.pipeline_options import GoogleCloudOptions, SetupOptions
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator

    if runner == "DataflowRunner":
        cloud = opts.view_as(GoogleCloudOptions)
        for flag in ("temp_location", "staging_location"):
            value = getattr(cloud, flag)
            # Beam would spend minutes looking for a default bucket otherwise.
            if value is not None and not value.startswith("gs://"):
                raise JobFailed(f"--{flag} must be a gs:// path on Dataflow; got {value}")
        if cloud.temp_location is None and cloud.staging_location is None:
            raise JobFailed("--temp_location gs://BUCKET/tmp is needed on Dataflow")
        setup = opts.view_as(SetupOptions)
        if not any(getattr(setup, name, None) for name in _SHIPPING):
            raise JobFailed(
                "Dataflow's workers need this package: build its wheel (pip wheel --no-deps "
                ". -w dist) and pass --extra_package dist/cpr_function-<version>-py3-none-any"
                ".whl, with --requirements_file for framework extras (docs/batch.md)"
            )
    from apache_beam.runners.runner import create_runner

    errors = PipelineOptionsValidator(opts, create_runner(runner)).validate()
    if errors:
        raise JobFailed("Beam's options are not valid: " + "; ".join(errors))


def staged_files(opts) -> list[str]:
    """The files Dataflow's stager would upload, found without uploading them."""
    import tempfile

    from apache_beam.portability.api import beam_runner_api_pb2
    from apache_beam.runners.portability.stager import Stager

    with tempfile.TemporaryDirectory() as temp:
        artifacts = Stager.create_job_resources(opts, temp)
    role = beam_runner_api_pb2.ArtifactStagingToRolePayload
    return sorted(role.FromString(a.role_payload).staged_name for a in artifacts)


@contextlib.contextmanager
def checked(job: Job, runner):
    """Checks that the model loads on this machine before the job starts, so that one that
    cannot fails the command with the function's own message; yields `runner` with what
    the check found. With forks, they are forked first (once the model's framework
    libraries are imported here, to be shared) and the first of them checks (they end
    with the block); otherwise this process loads the model, keeping it for a worker
    that runs here and letting it go for Beam's own worker processes. A remote runner is
    yielded as it is: nothing is loaded here for it.

    Raises:
        CprError: the model could not be loaded.
    """
    if not is_local(runner):
        yield runner
    elif runner.forks:
        from ..serving import shared_imports
        from .forked_workers import forked

        # Its framework's libraries once, here, for the forks to share rather than each
        # import (the same rules as gunicorn's master: scikit-learn, XGBoost).
        _, spec = job.handler.resolve()
        shared_imports.choose([spec])
        shared_imports.import_now()
        with forked(runner.forks, job.handler.preload) as forks:
            found = forks.check()
            yield dataclasses.replace(runner, command=forks.command, call_size=found)
    elif runner.in_process:
        yield dataclasses.replace(runner, call_size=job.handler.preload())
    else:
        model = job.handler.load_model()
        found = call_size(model)
        model.unload()
        yield dataclasses.replace(runner, call_size=found)


def batch_size(job: Job, runner) -> int:
    """Instances a predict call takes: --batch-size; else, for a predictor that takes
    merged calls, the size the function merges its requests to (1024 unless its version
    says otherwise); else 64, gcloud's default. Locally the model's check found what it
    takes; for a runner elsewhere, which this command loads nothing for, the settings
    tell (the framework they name), or it is 64."""
    if job.batch_size is not None:
        return job.batch_size
    found = runner.call_size if is_local(runner) else job.handler.declared_call_size()
    return found or BATCH_SIZE


def run(job: Job, opts, runner, out: TextIO) -> dict:
    """Runs the job to the end; returns its summary, also written beside the results.

    Raises:
        JobFailed: nothing was read, or more failed than `max_error_rate` allows.
    """
    import apache_beam as beam

    # The local runner relays every worker's log lines, Beam's own warnings among them;
    # what the job has to say is in its output, its progress lines and its summary.
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
    logging.getLogger().addFilter(_beams_resource_warning)
    start = time.perf_counter()
    size = batch_size(job, runner)
    p = beam.Pipeline(runner=_beam_runner(runner), options=opts)
    pipeline.build(
        p,
        job.handler,
        input_paths=job.input_paths,
        data_format=job.data_format,
        output_path=job.output_path,
        batch_size=size,
    )
    result = p.run()
    result.wait_until_finish()
    summary = _summary(job, result, time.perf_counter() - start, size)
    _write_summary(job.output_path, summary)
    for key, value in summary.items():
        print(f"{key}: {value}", file=out)
    if summary["instancesRead"] == 0:
        raise JobFailed(f"no instance could be read from {', '.join(job.input_paths)}")
    rate = summary["failed"] / summary["instancesRead"]
    if job.max_error_rate is not None and rate > job.max_error_rate:
        raise JobFailed(
            f"{summary['failed']} of {summary['instancesRead']} instances failed "
            f"({rate:.2%}), more than --max-error-rate {job.max_error_rate:g}; "
            f"see {job.output_path}/{pipeline.ERRORS}-*"
        )
    return summary


def _beam_runner(runner):
    if not is_local(runner):
        return runner
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    if not runner.forks:
        return FnApiRunner()
    from apache_beam.transforms.environments import SubprocessSDKEnvironment

    # Beam warns that in_memory (its default mode, kept) runs one worker; the forks'
    # environment below is what runs them all.
    logging.getLogger("apache_beam.runners.portability.fn_api_runner.fn_runner").addFilter(
        _beams_in_memory_warning
    )
    worker = SubprocessSDKEnvironment.from_command_string(runner.command)
    return FnApiRunner(default_environment=worker)


def _beams_in_memory_warning(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("If direct_num_workers is not equal to 1")


def _beams_resource_warning(record: logging.LogRecord) -> bool:
    # Beam 2.78 says this at every model load when its optional ModelManager cannot be
    # imported (it then skips a memory metric); it says nothing about the job.
    return not record.getMessage().startswith("Resource module is not available")


def _summary(job: Job, result, seconds: float, size: int) -> dict:
    counts = dict.fromkeys(
        (pipeline.READ, pipeline.UNPARSABLE, pipeline.PREDICTED, pipeline.FAILED), 0
    )
    from apache_beam.metrics.metric import MetricsFilter

    query = result.metrics().query(MetricsFilter().with_namespace(pipeline.NAMESPACE))
    for counter in query["counters"]:
        if counter.key.metric.name in counts:
            counts[counter.key.metric.name] += counter.committed or 0
    failed = counts[pipeline.UNPARSABLE] + counts[pipeline.FAILED]
    return {
        "instancesRead": counts[pipeline.READ],
        "predicted": counts[pipeline.PREDICTED],
        "failed": failed,
        "unparsable": counts[pipeline.UNPARSABLE],
        "seconds": round(seconds, 3),
        "instancesPerSecond": round(counts[pipeline.READ] / seconds, 1) if seconds else 0.0,
        "batchSize": size,
        "inputPaths": list(job.input_paths),
        "outputPath": job.output_path,
    }


def _write_summary(output_path: str, summary: dict) -> None:
    import orjson
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(FileSystems.join(output_path, SUMMARY)) as stream:
        stream.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
