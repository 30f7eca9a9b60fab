"""`python -m bench [--quick] [--only NAME] [--out DIR]`: run the benchmarks, print figures, write JSON and docs."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.common import machine_facts

BENCHMARKS = ("emulator_roundtrip", "fill_to_oco", "simultaneous_entries", "many_positions", "durable_events",
              "reconcile_orders", "stream_loss", "sim_day", "broker_distance")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples: the whole command in about 90 s")
    parser.add_argument("--only", action="append", choices=BENCHMARKS, metavar="NAME",
                        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results directory (default {DEFAULT_OUT})")
    return parser.parse_args(argv)


def run_one(name: str, quick: bool) -> dict[str, Any]:
    module = importlib.import_module(f"bench.{name}")
    started = time.perf_counter()
    try:
        result: dict[str, Any] = module.run(quick)
    except Exception as error:  # noqa: BLE001 - one failing benchmark must not hide the others' figures
        result = {"name": name, "quick": quick, "machine": machine_facts(),
                  "error": f"{type(error).__name__}: {error}"}
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    names = [n for n in BENCHMARKS if n in (args.only or BENCHMARKS)]
    machine = machine_facts()
    print(f"machine: {machine['cpu']}, {machine['cores_logical']} cores, Python {machine['python']}, "
          f"load {machine['load_avg_1m']}{' (quick mode)' if args.quick else ''}", flush=True)
    results = []
    for name in names:
        print(f"running {name} ...", flush=True)
        result = run_one(name, args.quick)
        path = report.write_json(args.out, result)
        print(f"  {'FAILED: ' + result['error'] if 'error' in result else 'done'} in {result['wall_s']} s → {path}",
              flush=True)
        results.append(result)
    print()
    print(report.table(results))
    summary = report.write_summary(args.out, report.markdown(results, machine, args.quick))
    print(f"\nsummary: {summary}")
    complete = report.full_results(args.out, list(BENCHMARKS)) if not args.quick else []
    if len(complete) == len(BENCHMARKS):
        report.regenerate_docs(report.markdown(complete, machine, quick=False))
        print(f"figures section regenerated: {report.DOCS}")
    elif not args.quick:
        # An --only run into a directory without the others' full results (--out elsewhere) would have replaced the
        # page's figures with its own alone.
        missing = [name for name in BENCHMARKS if name not in {r["name"] for r in complete}]
        print(f"figures section not regenerated: {args.out} has no full result of {', '.join(missing)}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
