"""`make demo`: start a worker, replay a recorded presale stream, print the report.

Uses the committed `first-hour` recording (135k records, calibrated to the 2025
first presale hour at 1/10,000 scale) unless DEMO_RECORDING names another.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STREAMS = ROOT / "seeds" / "streams"
PRESALE = [sys.executable, "-m", "streams.cli"]
sys.path.insert(0, str(ROOT))

from streams.replay import count_records  # noqa: E402


def main() -> int:
    name = os.environ.get("DEMO_RECORDING", "first-hour")
    settings = json.loads((STREAMS / f"{name}.settings.json").read_text())
    for csv_name in ("PRESALE_BASELINE_CSV", "PRESALE_CHANNEL_BASELINE_CSV"):
        if csv_name in settings:
            settings[csv_name] = str(STREAMS / settings[csv_name])
    settings["PRESALE_CAMPAIGN_ID"] = f"demo-{name}"
    env = {**os.environ, **settings}
    env["PRESALE_TOPIC_PREFIX"] = os.environ.get("PRESALE_TOPIC_PREFIX", f"demo-{name}")

    def presale(*args: str, capture: bool = False) -> str:
        done = subprocess.run(
            [*PRESALE, *args],
            env=env,
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE if capture else None,
        )
        if done.returncode != 0:
            raise SystemExit(done.returncode)
        return done.stdout or ""

    # A fresh demo each time: forget the campaign's state and its topics' history
    # by giving the replay new topics.
    env["PRESALE_TOPIC_PREFIX"] += f"-{int(time.time())}"
    presale("reset")
    log_path = ROOT / "var" / "log" / "demo-worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [*PRESALE, "worker", "--loglevel", "warning"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        print(f"worker started (log: var/log/demo-worker.log); replaying {name}")
        started = time.monotonic()
        presale("replay", str(STREAMS / f"{name}.jsonl.gz"))
        while True:
            if worker.poll() is not None:
                print(f"worker exited early; see {log_path}", file=sys.stderr)
                return 1
            report = json.loads(presale("report", "--json", "--top", "1", capture=True))
            if report["consumer_lag"] == 0:
                break
            time.sleep(0.2)
        seconds = time.monotonic() - started
        records = count_records([str(STREAMS / f"{name}.jsonl.gz")])
        presale("report", "--top", "10")
        print(
            f"\n{records:,} records replayed and applied in {seconds:.1f} s: "
            f"{records / seconds:,.0f} records/s end to end, replay included"
        )
        return 0
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
