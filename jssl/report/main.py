"""The command line of ``python -m jssl.report``."""

from __future__ import annotations

import sys
import time


def main(argv: list[str] | None = None) -> int:
    """Returns the exit status: 0, or 1 after one ``error:`` line on stderr for a user error
    (``--traceback`` or ``-v 1`` raises it instead, with its traceback)."""
    from jssl import cli
    from jssl.report.build import MAP_METHODS, build_report

    parser = cli.ArgumentParser(
        prog="python -m jssl.report", description="A run report (HTML + PNGs)."
    )
    parser.add_argument(
        "--workdir", action="append", required=True, help="run folder; repeat to compare runs"
    )
    parser.add_argument("--out", default=None, help="report folder (default: WORKDIR/report)")
    parser.add_argument(
        "--cluster", action="append", default=[], help="a python -m jssl.cluster --out folder"
    )
    parser.add_argument("--map", choices=MAP_METHODS, default="pca", help="2-D embedding map")
    parser.add_argument("--traceback", action="store_true", help="on an error, the traceback")
    parser.add_argument("-v", "--verbosity", type=int, default=0, help="1: as --traceback")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        path = build_report(args.workdir, args.out, map_method=args.map, cluster=args.cluster)
    except cli.user_error_types() as e:
        if args.traceback or args.verbosity >= 1:
            raise
        cli.print_error(e)
        return 1
    print(path)
    print(f"report made in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0
