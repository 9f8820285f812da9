"""An HTTP source's calls, audited like a sink's: one SchedulerLog row per attempt, each one counted; a
failed attempt's row is written at once, a successful one's with the next write.

The source runs each page's GET through the one retry loop; this is what it calls for one attempt
(the entity's lock is extended first when due, as before a sink's call) and what it tells of each
attempt afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sync_pipeline.engine.audit.scheduler_log import ApiCall
from sync_pipeline.engine.http.api import ApiResponse, RecordRequester, TokenRequestFailed, TokenRequestRefused
from sync_pipeline.engine.http.retry import Attempt
from sync_pipeline.engine.sources.sql_table import SourceRefused, SourceUnavailable
from sync_pipeline.engine.state.tracking import TrackingStore

TOO_MANY_REQUESTS = 429


class AuditedReads:
    """GETs of one entity's source API: each attempt written to SchedulerLog and counted."""

    def __init__(
        self,
        entity: str,
        api: RecordRequester,
        tracking: TrackingStore,
        before_each_attempt: Callable[[], None],
        written: bool = True,
    ) -> None:
        self.calls = 0
        self.retries = 0
        self.throttled = 0
        """Answers 429: the API's rate limit was reached (its wait is honoured by the retry loop)."""
        self.failed = 0
        """Attempts without a 2xx answer (none at all, or another status), retried or not."""
        self._written = written  # a dry run writes nothing: its attempts are counted only
        self._entity = entity
        self._api = api
        self._tracking = tracking
        self._before_each_attempt = before_each_attempt
        self._counting = threading.Lock()
        self._calling = threading.local()  # the URL of this thread's call: details are read in parallel

    def get(self, url: str) -> ApiResponse:
        """One attempt at `url`; raises `ApiUnreachable`/`ApiCallFailed` when no answer came back, and
        `SourceUnavailable` when no OAuth2 token could be had for it (the credentials, or the token endpoint)."""
        self._calling.url = url
        self._before_each_attempt()
        try:
            return self._api.request("GET", url, None)
        except TokenRequestRefused as exc:
            raise SourceRefused(str(exc)) from None
        except TokenRequestFailed as exc:  # the token endpoint was down or busy: worth trying later
            raise SourceUnavailable(str(exc)) from None

    def on_attempt(self, attempt: Attempt) -> None:
        """Write the attempt's SchedulerLog row (a failure with its status and excerpt, never a header)."""
        response = attempt.response
        status = response.status_code if response is not None else None
        if response is None:
            error: str | None = str(attempt.failure)
        elif response.is_2xx:
            error = None
        else:
            error = f"HTTP {response.status_code}: {response.body_excerpt}"
        with self._counting:
            self.calls += 1
            self.retries += attempt.number > 1
            self.throttled += status == TOO_MANY_REQUESTS
            self.failed += response is None or not response.is_2xx
        if self._written:  # a success waits to be logged with the write of what it read (`TrackingStore`)
            call = ApiCall(self._calling.url, 0, status, round(attempt.seconds * 1000), error, attempt.number)
            self._tracking.record_call(self._entity, call, deferred=call.ok)
