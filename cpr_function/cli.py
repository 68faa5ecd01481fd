"""The command line: `python -m cpr_function predict ...`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from .errors import CprError


def main(argv: list[str] | None = None) -> int:
    """Runs one command; returns the exit status (2: bad input, 1: the prediction failed)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except _Usage as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except CprError as exc:
        print(f"error ({exc.status_code}): {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cpr_function")
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
    predict.add_argument("--batch-size", type=_positive, default=100)
    predict.add_argument("--concurrency", type=_positive, default=16)
    predict.add_argument("--timeout", type=float, default=60.0, help="seconds per call")
    predict.add_argument("--retries", type=int, default=5)
    predict.add_argument(
        "--auth", choices=("auto", "access-token", "id-token", "none"), default="auto"
    )
    predict.add_argument("--output", metavar="FILE", help="write predictions here, not stdout")
    predict.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    predict.set_defaults(run=_predict)
    return parser


def _predict(args) -> int:
    from . import client

    instances = _read_instances(args.json_instances)
    try:
        predictions = client.predict(
            instances,
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
    lines = b"".join(orjson.dumps(p) + b"\n" for p in predictions)
    if args.output:
        Path(args.output).write_bytes(lines)
    else:
        sys.stdout.buffer.write(lines)
        sys.stdout.flush()
    return 0


def _read_instances(name: str) -> list:
    try:
        data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as exc:
        raise _Usage(f"cannot read --json-instances {name}: {exc.strerror}") from exc
    instances = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            instances.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            shown = line[:80].decode("utf-8", "replace")
            raise _Usage(f"{name} line {number} is not a JSON instance ({exc}): {shown}") from None
    if not instances:
        raise _Usage(f"{name} holds no instances; expected one JSON value per line")
    return instances


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number; got {text}")
    return value


class _Usage(Exception):
    """Input the command cannot use; exit status 2."""
