"""`make bench` (`python -m bench [name ...]`): run each benchmark module's main() in turn; each prints its BENCH line.

Modules without a main() (shared helpers) are skipped; a benchmark that fails is reported and the others still run.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback
from pathlib import Path


def benchmarks() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_"))


def main() -> int:
    names = sys.argv[1:] or benchmarks()
    failed = []
    for name in names:
        run = getattr(importlib.import_module(f"bench.{name}"), "main", None)
        if run is None:
            continue
        sys.argv = [f"bench.{name}"]
        try:
            run()
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
    if failed:
        print(f"[bench] failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
