"""Run a benchmark suite: ``python -m benchmarks SUITE [--report-only] [--episodes N] [--out DIR]``.

Each finished row is cached (``benchmarks/cache/<suite>/``), so an
interrupted run resumes where it stopped, and ``--report-only`` rebuilds the
page from the rows already measured. ``--list`` names the suites and their
sizes. The smoke suite writes into its cache folder; the others into
``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("suite", nargs="?", help="the suite to run (--list names them)")
    parser.add_argument("--list", action="store_true", help="name every suite, its rows and its question")
    parser.add_argument("--report-only", action="store_true", help="write the page from the cached rows, run nothing")
    parser.add_argument("--episodes", type=int, default=None, help="another episode count (other cache keys)")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args(argv)

    from benchmarks.harness import CACHE_ROOT, RESULTS_DIR, Runner
    from benchmarks.reporter import write_page
    from benchmarks.suites import SUITES, suite, with_episodes

    if args.list or not args.suite:
        for s in SUITES.values():
            print(f"{s.name:14} {len(s.rows()):4} rows  {s.question}")
        return 0 if args.list else 2
    from adc.utils.errors import AdcError

    try:
        chosen = suite(args.suite)
        if args.episodes is not None:
            if args.episodes < 1:
                raise AdcError(f"--episodes must be at least 1, got {args.episodes}")
            chosen = with_episodes(chosen, args.episodes)
    except AdcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(max(1, args.threads))
    command = "python -m benchmarks " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    runner = Runner(chosen, log=lambda m: print(m, flush=True))
    print(f"suite {chosen.name}: {len(chosen.rows())} rows, cache {runner.cache}", flush=True)
    started = time.perf_counter()
    records = runner.run(report_only=args.report_only)
    out = args.out or (CACHE_ROOT / chosen.name / "results" if chosen.name == "smoke" else RESULTS_DIR)
    written = write_page(chosen, records, command=command, elapsed_s=time.perf_counter() - started, out_dir=out)
    print("wrote " + ", ".join(str(p) for p in written), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
