"""Write docs/errors.md from the error catalogue, so the document always says what the product says.

Run `python scripts/errors_doc.py > docs/errors.md` after changing dashboard/sync/errors.py; a test checks it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dashboard.sync.errors import CATALOGUE  # noqa: E402

HEADER = """# Error catalogue

Every problem PTI Sync reports, with the words staff read on a rental or customer page, in a Storeganise task
and in `flask sync status`. *Retried* problems pass on their own: the product retries with backoff and only
parks the customer as failed after several attempts. The others need a person: fix the cause, then press
Resync (or Retry all for the cause on the Failures page, Retry failed customers on the site page, or
`flask sync requeue-failed --cause REASON`).

Generated from `dashboard/sync/errors.py` by `scripts/errors_doc.py`; do not edit by hand.

| Reason | What happened | What to do | Retried |
|---|---|---|---|
"""


def render() -> str:
    rows = [f"| `{p.reason}` | {p.message} | {p.fix} | {'yes' if p.retryable else 'no'} |"
            for p in sorted(CATALOGUE.values(), key=lambda p: (p.retryable, p.reason))]
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
