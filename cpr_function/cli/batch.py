"""`python -m cpr_function batch-predict`: flags as `gcloud ai-platform jobs submit
prediction` took them; every flag it does not know goes to Beam."""

from __future__ import annotations

import argparse
import sys

from .flags import positive


def add_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "batch-predict",
        allow_abbrev=False,  # a Beam option must never pass for an abbreviated flag of ours
        help="predict files of instances with Apache Beam (locally, or on Dataflow)",
        description="Runs a model over JSON-lines or TFRecord files with Beam's RunInference, "
        "writing prediction.results-* and prediction.errors-* shards and a summary. Flags "
        "this command does not know are Beam's pipeline options (--runner DataflowRunner "
        "--project ... --region ... --temp_location gs://...).",
    )
    parser.add_argument("--model-dir", help="gs://bucket/prefix, a local directory or file://")
    parser.add_argument("--package-uris", help="comma-separated .tar.gz, .zip or .whl packages")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--prediction-class", help="module.Class of your predictor")
    kind.add_argument("--framework", help="scikit-learn, xgboost, tensorflow or mlflow")
    parser.add_argument("--models", help="a models file (CPR_MODELS otherwise), with --model")
    parser.add_argument("--model", help="a model of the models file (its default otherwise)")
    parser.add_argument("--version", help="a version of --model (its default otherwise)")
    parser.add_argument(
        "--input-paths", required=True, help="comma-separated files or globs, local or gs://"
    )
    parser.add_argument("--output-path", required=True, help="a new folder, local or gs://")
    parser.add_argument(
        "--data-format", choices=("text", "tf-record", "tf-record-gzip"), default="text"
    )
    parser.add_argument(
        "--batch-size",
        type=positive,
        help="instances per predict call, at most (64; for a model whose requests the "
        "function merges, such as the built-in scikit-learn and XGBoost adapters, the most it "
        "merges: 1024 or its models-file version's microbatch_max_size)",
    )
    parser.add_argument("--signature-name", help="the SavedModel signature to call")
    parser.add_argument(
        "--kwargs", metavar="JSON", help="request fields for predict(instances, **kwargs)"
    )
    parser.add_argument(
        "--max-error-rate",
        type=float,
        help="exit 1 when more than this fraction of instances failed (0 to 1)",
    )
    parser.add_argument("--cache-dir", help="cache root (CPR_CACHE_DIR's default otherwise)")
    parser.add_argument(
        "--install-dependencies", action="store_true", help="pip-install declared dependencies"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check everything, print Beam's options (and Dataflow's staged files), run nothing",
    )
    parser.set_defaults(beam_args=True)
    return parser


def run(args, usage) -> int:
    """Runs the command; `usage` is the exception class for bad flags (exit status 2)."""
    try:
        from ..batch import job
        from ..batch.handler import CprModelHandler
    except ImportError as exc:
        raise usage(
            f"batch-predict needs Apache Beam ({exc}); install the [batch] extra: "
            "pip install 'cpr-function[batch]'"
        ) from None
    from ..errors import ConfigError, CprError

    kwargs = _kwargs(args.kwargs, usage)
    if args.signature_name:
        kwargs["signature_name"] = args.signature_name
    if args.max_error_rate is not None and not 0 <= args.max_error_rate <= 1:
        raise usage(f"--max-error-rate must be between 0 and 1; got {args.max_error_rate:g}")
    handler = CprModelHandler(**_model(args, usage), kwargs=kwargs)
    batch_job = job.Job(
        handler=handler,
        input_paths=tuple(p.strip() for p in args.input_paths.split(",") if p.strip()),
        output_path=args.output_path.rstrip("/"),
        data_format=args.data_format,
        batch_size=args.batch_size,
        max_error_rate=args.max_error_rate,
        beam_args=tuple(args.beam_args),
    )
    try:
        handler.resolve()
        opts, runner = job.options(batch_job.beam_args)
        files = job.check(batch_job, opts, runner)
        if args.dry_run:
            return _dry_run(job, batch_job, opts, runner, files)
        with job.checked(batch_job, runner) as runner:
            job.run(batch_job, opts, runner, sys.stdout)
    except ConfigError as exc:
        raise usage(str(exc)) from exc
    except job.JobFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except CprError as exc:
        print(f"error ({exc.status_code}): the model cannot load: {exc}", file=sys.stderr)
        return 1
    return 0


def _dry_run(job, batch_job, opts, runner, files) -> int:
    name = "FnApiRunner" if job.is_local(runner) else runner
    print(f"runner: {name}")
    if job.is_local(runner) and runner.forks:
        print(f"workers: {runner.forks}, forked from this process")
    if not job.is_local(runner):  # locally, the model's check before the job decides
        print(f"batch size: {job.batch_size(batch_job, runner)}")
    print(f"input files: {len(files)}")
    for key, value in sorted(opts.get_all_options(drop_default=True).items()):
        print(f"option {key}: {value}")
    if name == "DataflowRunner":
        for staged in job.staged_files(opts):
            print(f"staged: {staged}")
    return 0


def _model(args, usage) -> dict:
    import os

    models = args.models or (None if args.model_dir else os.environ.get("CPR_MODELS"))
    if args.model_dir and models:
        raise usage("give the model as --model-dir or as --models with --model, not both")
    if not args.model_dir and not models:
        raise usage(
            "give the model: --model-dir (with --prediction-class or --framework), "
            "or --models/CPR_MODELS with --model"
        )
    where = {"cache_dir": args.cache_dir, "install_dependencies": args.install_dependencies}
    if models:
        for flag in ("package_uris", "prediction_class", "framework"):
            if getattr(args, flag):
                raise usage(
                    f"--{flag.replace('_', '-')} goes with --model-dir; the models "
                    "file names each version's own"
                )
        return {"models": models, "model": args.model, "version": args.version, **where}
    if args.model or args.version:
        raise usage("--model and --version name a version of a models file (--models)")
    return {
        "model_dir": args.model_dir,
        "package_uris": args.package_uris or (),
        "prediction_class": args.prediction_class,
        "framework": args.framework,
        **where,
    }


def _kwargs(text: str | None, usage) -> dict:
    import orjson

    if text is None:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise usage(f"--kwargs is not JSON ({exc}): {text[:80]}") from None
    if not isinstance(value, dict) or "instances" in value:
        raise usage(
            f"--kwargs must be a JSON object of request fields but instances; got {text[:80]}"
        )
    return value
