"""The command line: `python -m cpr_function predict ...`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import CprError
from .flags import positive


def main(argv: list[str] | None = None) -> int:
    """Runs one command; returns the exit status (2: bad input, 1: the prediction failed)."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "beam_args", None) is True:
        args.beam_args = extra  # batch-predict hands what it does not know to Beam
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.run(args)
    except _Usage as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except CprError as exc:
        print(f"error ({exc.status_code}): {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    installed = Path(sys.argv[0]).name == "cpr-function"
    parser = argparse.ArgumentParser(prog="cpr-function" if installed else "python -m cpr_function")
    commands = parser.add_subparsers(required=True, metavar="command")
    predict = commands.add_parser(
        "predict",
        help="predict JSON-lines instances against a function URL or a deployed model",
        description="Sends the instances in batches, concurrently, with retries; writes one "
        "prediction per line, in the instances' order.",
    )
    predict.add_argument(
        "--json-instances",
        required=True,
        metavar="FILE",
        help="one JSON instance per line, as gcloud's flag takes them ('-' for stdin)",
    )
    where = predict.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a function URL (or anything taking {instances})")
    where.add_argument(
        "--model",
        help="projects/P/models/M[/versions/V] (with --api-endpoint) or "
        "projects/P/locations/L/endpoints/E",
    )
    predict.add_argument("--api-endpoint", help="base URL for --model")
    predict.add_argument("--batch-size", type=positive, default=100)
    predict.add_argument("--concurrency", type=positive, default=16)
    predict.add_argument("--timeout", type=float, default=60.0, help="seconds per call")
    predict.add_argument("--retries", type=int, default=5)
    predict.add_argument(
        "--auth", choices=("auto", "access-token", "id-token", "none"), default="auto"
    )
    predict.add_argument("--output", metavar="FILE", help="write predictions here, not stdout")
    predict.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    predict.set_defaults(run=_predict)

    local = commands.add_parser(
        "local-predict",
        help="load a model directory and packages exactly as the function does, and predict",
        description="Like `gcloud ai-platform local predict`: downloads, unpacks and loads "
        "with the function's own code, then writes one prediction per line.",
    )
    _model_flags(local)
    local.add_argument("--json-instances", required=True, metavar="FILE")
    local.set_defaults(run=_local_predict)

    check = commands.add_parser(
        "check",
        help="validate a configuration: download, unpack, load, and predict one instance",
        description="Checks the model given by flags, or else every version the CPR_* "
        "environment configures, and reports each step with its time.",
    )
    _model_flags(check, required=False)
    check.add_argument("--instance", metavar="JSON", help="one instance to predict, as JSON")
    check.set_defaults(run=_check)

    serve = commands.add_parser(
        "serve", help="run the function locally with functions-framework (CPR_* from the env)"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=positive, default=8080)
    serve.add_argument("--workers", type=positive, help="gunicorn worker processes")
    serve.add_argument("--threads", type=positive, help="threads per worker")
    serve.add_argument("--debug", action="store_true", help="Flask's debug server instead")
    serve.set_defaults(run=_serve)

    init = commands.add_parser(
        "init",
        help="write a function's source: main.py and requirements.txt",
        description="Writes DIR/main.py (from cpr_function import predict) and "
        "DIR/requirements.txt (the package, with extras), never over existing files.",
    )
    init.add_argument("dir", metavar="DIR", type=Path)
    init.add_argument(
        "--extras", default="", help="comma-separated: xgboost, tensorflow, mlflow, frameworks"
    )
    init.add_argument("--wheel", type=Path, help="a built wheel to copy and name instead")
    init.set_defaults(run=_init)

    from . import batch

    batch.add_parser(commands).set_defaults(run=_batch_predict)
    return parser


def _batch_predict(args) -> int:
    from . import batch

    return batch.run(args, _Usage)


def _init(args) -> int:
    from . import init

    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    try:
        written = init.write(args.dir, extras=extras, wheel=args.wheel)
    except init.Refused as exc:
        raise _Usage(str(exc)) from exc
    for path in written:
        print(path)
    return 0


def _model_flags(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument(
        "--model-dir", required=required, help="gs://bucket/prefix, a local directory or file://"
    )
    parser.add_argument("--package-uris", help="comma-separated .tar.gz, .zip or .whl packages")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--prediction-class", help="module.Class of your predictor")
    kind.add_argument("--framework", help="scikit-learn, xgboost, tensorflow or mlflow")
    parser.add_argument("--cache-dir", help="cache root (CPR_CACHE_DIR's default otherwise)")
    parser.add_argument(
        "--install-dependencies", action="store_true", help="pip-install declared dependencies"
    )


def _predict(args) -> int:
    import orjson

    from ..remote import client

    texts, total = _instance_texts(args.json_instances)
    try:
        parts = client.predict_json(
            texts,
            total=total,
            url=args.url,
            model=args.model,
            api_endpoint=args.api_endpoint,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            timeout=args.timeout,
            retries=args.retries,
            auth=args.auth,
            progress=not args.no_progress,
        )
    except ValueError as exc:
        raise _Usage(str(exc)) from exc
    lines = (b"".join(orjson.dumps(p) + b"\n" for p in part) for part in parts)
    if args.output:
        _write_whole(Path(args.output), lines)
    else:
        # The predictions wait here (a few bytes each) so that a failure writes nothing.
        sys.stdout.buffer.write(b"".join(lines))
        sys.stdout.flush()
    return 0


def _write_whole(path: Path, chunks) -> None:
    """Writes the chunks to a file beside `path` as they come, and puts it in place only
    once all of them are written: a failure leaves `path` as it was."""
    import os

    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with partial.open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


_FLAGS = {
    "origin": "--model-dir",
    "package_uris": "--package-uris",
    "prediction_class": "--prediction-class",
    "framework": "--framework",
}


def _flag_config(args):
    """The configuration and the one version the model flags describe."""
    from .. import version_fields
    from ..config import Config
    from ..errors import ConfigError

    fields = {f: getattr(args, f.replace("origin", "model_dir")) for f in _FLAGS}
    try:
        spec = version_fields.version_spec("local", "v1", fields, lambda f: _FLAGS.get(f, f))
        config = Config.for_command(
            cache_dir=args.cache_dir,
            install_dependencies=args.install_dependencies,
            flag="--cache-dir",
        )
    except ConfigError as exc:
        raise _Usage(str(exc)) from exc
    return config, spec


def _local_predict(args) -> int:
    import orjson

    from .. import protocol
    from ..loading.storage import Storage
    from ..logs import configure
    from ..serving.model import LazyModel

    configure("text")
    config, spec = _flag_config(args)
    instances = _read_instances(args.json_instances)
    model = LazyModel(spec, config, Storage.configured(config))
    body = orjson.loads(protocol.encode(model.respond({"instances": instances})))
    if not isinstance(body, dict) or "predictions" not in body:
        raise _Usage(f'the model answered {str(body)[:200]}, not {{"predictions": ...}}')
    predictions = body["predictions"]
    # One line a prediction; what is not a list (AI Platform answered it too) is one line.
    lines = predictions if isinstance(predictions, list) else [predictions]
    sys.stdout.buffer.write(b"".join(orjson.dumps(p) + b"\n" for p in lines))
    sys.stdout.flush()
    return 0


def _check(args) -> int:
    import os

    import orjson

    from ..config import Config
    from ..errors import ConfigError
    from ..logs import configure
    from .check import report

    configure("text", level=30)  # the report says what happened; warnings still show
    instance = None
    if args.instance is not None:
        try:
            instance = orjson.loads(args.instance)
        except orjson.JSONDecodeError as exc:
            raise _Usage(f"--instance is not JSON ({exc}): {args.instance[:80]}") from None
    if args.model_dir:
        config, spec = _flag_config(args)
        specs = [spec]
    else:
        try:
            config = Config.from_env(os.environ)
            specs = None
        except ConfigError as exc:
            print(f"FAIL configuration: {exc}")
            return 1
    ok = report(config, specs, instance, sys.stdout)
    return 0 if ok else 1


def _serve(args) -> int:
    import os

    # The package's own entry point: no main.py needed, in a checkout or installed.
    package = Path(__file__).resolve().parents[1]
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(package.parent), os.environ.get("PYTHONPATH")) if p
    )
    entry = package / "function.py"
    command = [sys.executable, "-m", "functions_framework", "--target", "predict"]
    command += ["--source", str(entry), "--host", args.host, "--port", str(args.port)]
    if args.debug:
        command.append("--debug")
    if args.workers:
        os.environ["WORKERS"] = str(args.workers)
    if args.threads:
        os.environ["THREADS"] = str(args.threads)
    os.execv(sys.executable, command)
    return 0  # not reached


def _read_instances(name: str) -> list:
    return [value for _, value in _parsed(name)]


def _instance_texts(name: str) -> tuple[Iterator[bytes], int | None]:
    """The instances of a JSON-lines file as their JSON texts, read as they are sent, and
    how many there are. A regular file is read twice: once to check every line and count
    them, before anything is sent. Stdin ('-'), a pipe or a device is read once, as it
    comes: its count unknown, a line that is not JSON found when its batch is formed.

    Raises:
        _Usage: the file cannot be read, holds no instances, or has a line that is not
            JSON (for stdin or a pipe, while iterating).
    """
    import os
    import stat

    if name != "-":
        try:
            regular = stat.S_ISREG(os.stat(name).st_mode)
        except OSError as exc:
            raise _Usage(f"cannot read --json-instances {name}: {exc.strerror}") from exc
        if regular:
            total = sum(1 for _ in _parsed(name))
            return (text for _, text in _lines(name)), total
    return (text for text, _ in _parsed(name)), None


def _parsed(name: str) -> Iterator[tuple[bytes, Any]]:
    """Each instance of the file: its JSON text, and the value it holds."""
    import orjson

    for number, text in _lines(name):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            shown = text[:80].decode("utf-8", "replace")
            message = f"{name} line {number} is not a JSON instance ({exc}): {shown}"
            raise _Usage(message) from None
        yield text, value


def _lines(name: str) -> Iterator[tuple[int, bytes]]:
    """Each non-blank line of the file ('-': stdin), stripped, with its number."""
    found = False
    try:
        source = sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115
    except OSError as exc:
        raise _Usage(f"cannot read --json-instances {name}: {exc.strerror}") from exc
    with source:
        for number, line in enumerate(source, start=1):
            text = line.strip()
            if text:
                found = True
                yield number, text
    if not found:
        raise _Usage(f"{name} holds no instances; expected one JSON value per line")


class _Usage(Exception):
    """Input the command cannot use; exit status 2."""
