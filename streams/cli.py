"""The `presale` command: worker, replay, report, reset, seeds, and (in
streams/cli_recordings.py) record, expect, rehearse."""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from streams.errors import PresaleError
from streams.report import MAX_MINUTES
from streams.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.load(
        settings_file=getattr(args, "settings", None),
        kafka_bootstrap=getattr(args, "bootstrap", None),
        redis_url=getattr(args, "redis_url", None),
        campaign_id=getattr(args, "campaign", None),
    )


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bootstrap", help="Kafka bootstrap servers (PRESALE_KAFKA_BOOTSTRAP)"
    )
    p.add_argument("--redis-url", help="Redis URL (PRESALE_REDIS_URL)")
    p.add_argument("--campaign", help="campaign id (PRESALE_CAMPAIGN_ID)")
    p.add_argument(
        "--settings",
        metavar="FILE",
        help="a recording's settings JSON, over the environment",
    )


async def _report(
    settings: Settings, top: int | None, minutes: int | None = None
) -> dict[str, Any]:
    from streams.kafka import lag, log_end_offsets
    from streams.store import RedisStore

    store = RedisStore.from_settings(settings)
    try:
        await store.ping()
        # In this order: Kafka's end offsets, then what Redis applied, then the
        # counters. If the applied offsets reach the ends, every record published
        # before the first read is in the counters read last: lag 0 is true.
        ends = await log_end_offsets(settings, ("clicks", "carts", "orders"))
        applied = await store.applied_offsets(ends)
        if minutes is None:
            report = await store.report(top=top)
        else:
            report = await store.report(top=top, minutes=minutes)
        report["consumer_lag"] = lag(ends, applied)
        return report
    finally:
        await store.close()


def cmd_report(args: argparse.Namespace) -> int:
    settings = _settings(args)
    report = asyncio.run(_report(settings, args.top, args.minutes))
    if args.json:
        sys.stdout.write(
            orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n"
        )
    else:
        from rich.console import Console

        from streams.report import table

        # Into a file or a pipe, rich would lay the tables out for 80 columns
        # and squeeze the brand ids; 160 holds every column of them.
        console = Console() if sys.stdout.isatty() else Console(width=160)
        console.print(table(report))
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    from streams.top import run_top

    return asyncio.run(run_top(_settings(args), args.top, args.interval, args.once))


def _top_n(text: str) -> int:
    from streams.live import MAX_TOP

    if not text.isdigit() or not 1 <= int(text) <= MAX_TOP:
        msg = f"--top must be a whole number from 1 to {MAX_TOP}, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return int(text)


def _report_top(text: str) -> int:
    # `-1` once read every brand (a 0-based cut of -1), `0` every one too.
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        msg = f"--top must be a whole number of 1 or more, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return int(text)


def _minutes_n(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= MAX_MINUTES:
        msg = f"--minutes must be a whole number from 0 to {MAX_MINUTES}, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return int(text)


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        msg = f"--interval must be a number of seconds, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from exc
    if not 0.2 <= value <= 3600:
        msg = "--interval must be between 0.2 and 3600 seconds"
        raise argparse.ArgumentTypeError(msg)
    return value


def cmd_check(args: argparse.Namespace) -> int:
    from streams.check import check

    settings = _settings(args)
    try:
        with open(args.expected, "rb") as f:
            want = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError) as exc:
        msg = f"cannot read expected report {args.expected}: {exc}"
        raise PresaleError(msg) from exc
    live = asyncio.run(_report(settings, None))
    if live["consumer_lag"]:
        print(
            f"note: consumer_lag is {live['consumer_lag']:,}: the state is not complete"
        )
    problems = check(live, want)
    for line in problems[:50]:
        print(line)
    if problems:
        print(f"{len(problems):,} differences from {args.expected}")
        return 1
    print(f"the report equals {args.expected} (buyers within 2%)")
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    from streams.store import RedisStore

    settings = _settings(args)

    async def run() -> int:
        store = RedisStore.from_settings(settings)
        try:
            await store.ping()
            return await store.reset()
        finally:
            await store.close()

    deleted = asyncio.run(run())
    print(f"campaign {settings.campaign_id}: deleted {deleted:,} Redis keys")
    return 0


def _speed(text: str) -> float | None:
    from streams.cli_recordings import positive_number

    if text == "max":
        return None
    return positive_number(text, "--speed", "a number or 'max'")


def cmd_replay(args: argparse.Namespace) -> int:
    from streams.replay import replay

    settings = _settings(args)
    try:
        result = asyncio.run(
            replay(
                settings, args.files, args.speed, not args.quiet, args.keep_timestamps
            )
        )
    except KeyboardInterrupt:
        print("replay interrupted before it finished", file=sys.stderr)
        return 130
    rate = result.published / result.seconds if result.seconds else 0.0
    if result.interrupted:
        print(
            f"replay interrupted: {result.published:,} of {result.total:,} records "
            f"published (the first {result.published:,} in file order); "
            f"{result.total - result.published:,} not sent",
            file=sys.stderr,
        )
        return 130
    print(
        f"published {result.published:,} records in {result.seconds:.1f} s "
        f"({rate:,.0f} records/s)"
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from streams.app import run_worker

    return run_worker(_settings(args), args.loglevel)


def cmd_seeds(args: argparse.Namespace) -> int:
    # The generator (seeds/generate.py) runs as a program of its own: the
    # service does not import seeds/.
    return subprocess.call([sys.executable, "-m", "seeds.generate", *args.rest])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="presale", description=__doc__)
    p.add_argument("--traceback", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    w = sub.add_parser("worker", help="run the stream processor (Faust worker)")
    _common(w)
    w.add_argument("--loglevel", default="info", choices=["debug", "info", "warning"])
    w.set_defaults(func=cmd_worker)

    r = sub.add_parser("replay", help="publish recorded streams to the input topics")
    _common(r)
    r.add_argument("files", nargs="+", metavar="FILE", help="JSON lines, .gz allowed")
    r.add_argument(
        "--speed", type=_speed, default=None, help="max (default) or N x event time"
    )
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument(
        "--keep-timestamps",
        action="store_true",
        help="send a recording's Kafka timestamps (default: now)",
    )
    r.set_defaults(func=cmd_replay)

    from streams.cli_recordings import add_commands

    add_commands(sub, _common, _settings, _speed)  # record, expect, rehearse

    rep = sub.add_parser("report", help="print the campaign state from Redis")
    _common(rep)
    rep.add_argument(
        "--json", action="store_true", help="the JSON object of CONTRACT s7"
    )
    rep.add_argument(
        "--top", type=_report_top, default=None, help="only the N biggest brands"
    )
    rep.add_argument(
        "--minutes",
        type=_minutes_n,
        default=None,
        help="the latest N minutes of the GMV curve (default 60)",
    )
    rep.set_defaults(func=cmd_report)

    t = sub.add_parser("top", help="the live view in the terminal, refreshing")
    _common(t)
    t.add_argument("--top", type=_top_n, default=15, help="brands shown (1-100)")
    t.add_argument(
        "--interval", type=_interval, default=1.0, help="seconds between frames"
    )
    t.add_argument("--once", action="store_true", help="print one frame and exit")
    t.set_defaults(func=cmd_top)

    c = sub.add_parser("check", help="compare the live report with an expected one")
    _common(c)
    c.add_argument(
        "expected", help="an expected report, e.g. seeds/streams/X.expected.json"
    )
    c.set_defaults(func=cmd_check)

    z = sub.add_parser("reset", help="delete one campaign's state in Redis")
    _common(z)
    z.set_defaults(func=cmd_reset)

    s = sub.add_parser(
        "seeds", help="generate recorded streams (seeds generate --help)"
    )
    s.add_argument("rest", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_seeds)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command != "worker":  # the worker's logging is Faust's
        logging.basicConfig(level=logging.WARNING, format="presale: %(message)s")
        # aiokafka logs each retried produce (a new topic's leader still being
        # elected) and each failed connect; they are retried or reported by us.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return int(args.func(args))
    except PresaleError as exc:
        print(f"presale: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("presale: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an unforeseen failure still gets one line
        if args.traceback:
            raise
        name = exc.__class__.__name__
        msg = f"presale: error: {name}: {exc} (--traceback shows where)"
        print(msg, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
