"""Fuzz the GitLab webhook receiver with about 2,000 requests and print the figures.

    .venv/bin/python benchmarks/webhook_fuzz.py [--profile long|ci]

The same generators and checks as tests/test_webhook_fuzz.py (real HTTP on loopback, the
receiver served as ``tminus webhook`` serves it, every 202 checked deliverable), under the
``webhook-fuzz-long`` hypothesis profile. Prints: requests, status histogram, 5xx count,
latency (median, p99, max), accepted and deliverable deliveries, the largest run parameters.
Exits 1 when a check failed (hypothesis prints the smallest failing request).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=["long", "ci"], default="long")
    args = parser.parse_args()
    # Refusals are logged one per request; the figures are what matters here.
    logging.disable(logging.WARNING)

    from tests.test_webhook_fuzz import fuzz, fuzz_target

    failed = False
    with tempfile.TemporaryDirectory() as state, fuzz_target(Path(state)) as (target, _):
        started = time.monotonic()
        try:
            fuzz(target, f"webhook-fuzz-{args.profile}")
        except Exception as exc:  # hypothesis re-raises the smallest failing example
            failed = True
            print(f"FAILED: {type(exc).__name__}: {exc}"[:2000], file=sys.stderr)
        elapsed = time.monotonic() - started
        figures = target.figures()
        latencies = sorted(target.latencies) or [0.0]

    print(f"requests:     {figures['requests']} in {elapsed:.1f} s")
    print("statuses:     " + ", ".join(f"{s}: {n}" for s, n in figures["statuses"].items()))
    print(f"5xx:          {figures['5xx']}")
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"latency:      median {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, max {figures['max_latency_s'] * 1000:.0f} ms"
        " (max includes the 1 s body and head deadlines)"
    )
    print(f"accepted:     {figures['accepted']} (202)")
    print(f"deliverable:  {figures['deliverable']} (rendered as the trigger does, Prefect-valid)")
    print(f"largest run parameters: {figures['largest_parameters_bytes']} bytes (limit 524288)")
    return 1 if failed or figures["5xx"] else 0


if __name__ == "__main__":
    sys.exit(main())
