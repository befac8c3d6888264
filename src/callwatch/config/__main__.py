"""``python -m callwatch.config --write-docs [ROOT]``: regenerate the example and the reference."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._docs import write


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m callwatch.config",
                                description="Regenerate config/callwatch.example.yaml and docs/configuration.md "
                                            "from the schema.")
    p.add_argument("--write-docs", action="store_true", required=True, help="write both files")
    p.add_argument("root", nargs="?", default=".", help="the repository's root (default: the current directory)")
    args = p.parse_args(argv)
    for path in write(Path(args.root)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
