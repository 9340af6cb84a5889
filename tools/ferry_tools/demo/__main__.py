"""``python -m ferry_tools.demo --out DIR [--quick]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ferry_tools.demo import build


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="ferry demo", description="Build the demo data, models and registry."
    )
    parser.add_argument("--out", type=Path, default=Path("demo"), help="output directory (default: ./demo)")
    parser.add_argument("--quick", action="store_true", help="small, fast versions (for tests)")
    args = parser.parse_args(argv)
    build(args.out, quick=args.quick)


if __name__ == "__main__":
    main()
