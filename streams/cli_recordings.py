"""The `presale` commands of recorded streams: record, expect, rehearse."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from streams.settings import Settings

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

SettingsOf = Callable[[argparse.Namespace], Settings]


def time_ms(text: str) -> int:
    """--since/--until: epoch milliseconds, or an ISO 8601 time with its zone."""
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        msg = f"a time is epoch ms or ISO 8601 with a zone, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from exc
    if when.tzinfo is None:  # a naive time is a guess about the zone
        msg = f"give {text!r} a zone, e.g. {text}+08:00 or {text}Z"
        raise argparse.ArgumentTypeError(msg)
    # Exact: float seconds * 1000 lands 1 ms short for some times (0.6% of
    # random ones; 1974-04-14T00:30:43.510Z gives ...509).
    return (when - _EPOCH) // timedelta(milliseconds=1)


def positive_number(text: str, flag: str, unit: str = "a number") -> float:
    """A flag's value that must be a number above 0; one readable line if not."""
    try:
        value = float(text)
    except ValueError as exc:
        msg = f"{flag} must be {unit}, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from exc
    if value <= 0:
        msg = f"{flag} must be positive"
        raise argparse.ArgumentTypeError(msg)
    return value


def _seconds(text: str) -> float:
    return positive_number(text, "--timeout", "a number of seconds")


def cmd_record(args: argparse.Namespace) -> int:
    from streams.record import record

    settings = args.load(args)
    result = asyncio.run(
        record(settings, args.out, args.since, args.until, not args.quiet)
    )
    print(
        f"recorded {result.records:,} records of {result.partitions} partitions "
        f"({settings.topic_prefix}.clicks, .carts, .orders) into {result.path} "
        f"in {result.seconds:.1f} s"
    )
    return 0


def cmd_expect(args: argparse.Namespace) -> int:
    from streams.expect import expected_report

    report = expected_report(args.load(args), args.file)
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def cmd_rehearse(args: argparse.Namespace) -> int:
    from streams.rehearse import rehearse, verdict

    result = asyncio.run(
        rehearse(
            args.load(args),
            args.file,
            args.settings,
            speed=args.speed,
            timeout=args.timeout,
            progress=not args.quiet,
            keep=args.keep,
        )
    )
    for line in verdict(result, args.file):
        print(line)
    return 0 if result.passed else 1


def add_commands(
    sub: Any,
    common: Callable[[argparse.ArgumentParser], None],
    settings_of: SettingsOf,
    speed: Callable[[str], float | None],
) -> None:
    """Add record, expect and rehearse to the `presale` parser."""
    rec = sub.add_parser(
        "record", help="capture the input topics into a recording replay reads"
    )
    common(rec)
    rec.add_argument("out", metavar="OUT", help="the recording, e.g. x.jsonl.gz")
    rec.add_argument(
        "--since",
        type=time_ms,
        metavar="TIME",
        help="from the first record at or after TIME (epoch ms or ISO 8601)",
    )
    rec.add_argument(
        "--until",
        type=time_ms,
        metavar="TIME",
        help="up to the first record at or after TIME (default: the end now)",
    )
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    rec.set_defaults(func=cmd_record, load=settings_of)

    exp = sub.add_parser(
        "expect", help="the report the independent reference computes for FILE"
    )
    common(exp)
    exp.add_argument("file", metavar="FILE", help="a recording (any of its formats)")
    exp.set_defaults(func=cmd_expect, load=settings_of)

    reh = sub.add_parser(
        "rehearse",
        help="replay FILE into fresh topics with its own worker, compare with expect",
    )
    common(reh)
    reh.add_argument("file", metavar="FILE", help="a recording (any of its formats)")
    reh.add_argument(
        "--speed",
        type=speed,
        default=None,
        help="max (default) or N x the recorded time",
    )
    reh.add_argument(
        "--timeout",
        type=_seconds,
        default=900.0,
        metavar="SECONDS",
        help="seconds to wait for the worker to apply every record (900)",
    )
    reh.add_argument(
        "--keep", action="store_true", help="keep the topics, Redis keys and log"
    )
    reh.add_argument("--quiet", action="store_true", help="no progress bar")
    reh.set_defaults(func=cmd_rehearse, load=settings_of)
