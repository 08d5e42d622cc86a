"""Input fuzz figures: hostile launch files and playbooks through the CLI, counted.

    .venv/bin/python benchmarks/input_fuzz.py [--examples 200] [--seed 1]

Sends the generators of tests/test_input_fuzz.py (YAML bombs, bad encodings, extreme dates,
template abuse, random mutations of examples/*.yaml and of the default playbook) through
``tminus plan FILE`` and ``tminus playbook FILE`` in this process, and prints: inputs tried,
the exit-code histogram per kind, the slowest input and its time, and how many ended in a
traceback or did not end within 10 s. Figures, not assertions: tests/test_input_fuzz.py holds
the promise; this shows how far it is from breaking.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclass
class Stats:
    tried: int = 0
    crashes: list[str] = field(default_factory=list)
    slowest: tuple[float, str, str] = (0.0, "", "")


def run_kind(
    kind: str, command: str, strategy: Any, folder: Path, examples: int, seed_: int, stats: Stats
) -> Counter[str]:
    from hypothesis import HealthCheck, given, seed, settings

    from tests import test_input_fuzz as fuzz

    codes: Counter[str] = Counter()

    @seed(seed_)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(content=strategy)
    def run(content: Any) -> None:
        path = fuzz.write(folder, content)
        outcome = fuzz.run_cli([command, str(path)])
        stats.tried += 1
        codes["traceback" if outcome.crash else str(outcome.code)] += 1
        if outcome.crash:
            stats.crashes.append(f"{kind}: {path.name}: {outcome.crash.splitlines()[-1]}")
        if outcome.seconds > stats.slowest[0]:
            preview = path.read_bytes()[:120].decode("utf-8", "replace")
            stats.slowest = (outcome.seconds, kind, preview.replace("\n", "⏎"))

    run()
    return codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200, help="inputs per kind")
    parser.add_argument("--seed", type=int, default=1, help="hypothesis seed")
    args = parser.parse_args()
    for key in [k for k in os.environ if k.startswith("TMINUS_")]:
        del os.environ[key]

    from tests import test_input_fuzz as fuzz

    kinds: dict[str, tuple[str, Any]] = {
        "yaml bomb (plan)": ("plan", fuzz.yaml_bombs()),
        "bad encoding (plan)": ("plan", fuzz.bad_encodings(fuzz.EXAMPLE_TEXTS)),
        "extreme date (plan)": ("plan", fuzz.extreme_dates()),
        "mutated example (plan)": ("plan", fuzz.mutated(fuzz.EXAMPLE_TEXTS)),
        "template abuse (playbook)": ("playbook", fuzz.abusive_playbooks()),
        "mutated playbook (playbook)": ("playbook", fuzz.PLAYBOOK_INPUTS),
    }
    stats = Stats()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for kind, (command, strategy) in kinds.items():
            t0 = time.perf_counter()
            codes = run_kind(kind, command, strategy, Path(tmp), args.examples, args.seed, stats)
            histogram = ", ".join(f"exit {c}: {n}" for c, n in sorted(codes.items()))
            print(
                f"{kind:<30} {sum(codes.values()):>5} inputs  {histogram}  "
                f"({time.perf_counter() - t0:.1f} s)",
                flush=True,
            )
    print(f"\ninputs tried:      {stats.tried} in {time.perf_counter() - started:.1f} s")
    seconds, kind, preview = stats.slowest
    print(f"slowest input:     {seconds:.2f} s ({kind}): {preview[:100]!r}")
    print(f"tracebacks/hangs:  {len(stats.crashes)}")
    for line in stats.crashes[:20]:
        print(f"  {line}")


if __name__ == "__main__":
    main()
