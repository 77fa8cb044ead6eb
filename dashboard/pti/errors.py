"""What can go wrong when talking to PTI, as exceptions that carry a reason key of the error catalogue.

Retryable errors pass on their own (time-outs, 5xx, 429); permanent errors need a person and read as the
catalogue's message and fix. Neither ever holds a credential or an access code.
"""

from __future__ import annotations

from dashboard.sync.errors import problem


class PtiError(Exception):
    """A failed PTI call. `reason` is a key of dashboard.sync.errors.CATALOGUE.

    `uncertain` is True when PTI may have applied the write although we saw no answer (read time-out after the
    request was sent, dropped connection, 5xx): look the user up before creating it again. `detail` says in
    plain words what was wrong with an answer the client could not read (never a credential or an access code).
    """

    retryable = False

    def __init__(self, reason: str, *, operation: str, result_code: int | None = None,
                 http_status: int | None = None, target: str | None = None, uncertain: bool = False,
                 detail: str | None = None) -> None:
        self.reason = reason
        self.operation = operation
        self.result_code = result_code
        self.http_status = http_status
        self.target = target  # a unit name or PTI user id: never an access code or a credential
        self.uncertain = uncertain
        self.detail = detail
        entry = problem(reason)
        self.message = entry.message
        self.fix = entry.fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = f" {self.target}" if self.target else ""
        detail = f" {self.detail}" if self.detail else ""
        details = [f"reason={self.reason}"]
        if self.result_code is not None:
            details.append(f"result={self.result_code}")
        if self.http_status is not None:
            details.append(f"http={self.http_status}")
        if self.uncertain:
            details.append("uncertain")
        return f"PTI {self.operation}{where}: {self.message}{detail} ({', '.join(details)})"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(reason={self.reason!r}, operation={self.operation!r}, "
                f"result_code={self.result_code!r}, http_status={self.http_status!r}, target={self.target!r}, "
                f"uncertain={self.uncertain!r}, detail={self.detail!r})")


class PtiRetryableError(PtiError):
    """Time-out, connection error, 5xx or 429: the job layer retries with backoff (honouring `retry_after`)."""

    retryable = True

    def __init__(self, reason: str, *, operation: str, retry_after: float | None = None, **kwargs) -> None:
        self.retry_after = retry_after
        super().__init__(reason, operation=operation, **kwargs)

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text[:-1]}, retry_after={self.retry_after:g}s)" if self.retry_after is not None else text


class PtiPermanentError(PtiError):
    """PTI said no (a negative result code or a 4xx): retrying the same request gives the same answer."""


class PtiBadResponse(PtiPermanentError):
    """PTI answered, but not in the shape the contract describes (docs/pti-contract.md): reason `pti_bad_response`.

    `detail` says where the answer departs from the contract (e.g. "data.users[2].access_code is not a whole
    number"), never the value found there: it may be an access code. After a write the answer is `uncertain`:
    PTI may have applied it, so the next attempt looks the user up before creating again.
    """

    def __init__(self, *, operation: str, detail: str, **kwargs) -> None:
        super().__init__("pti_bad_response", operation=operation, detail=detail, **kwargs)
