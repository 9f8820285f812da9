"""Test doubles that behave like the real things they stand in for."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from sync_pipeline.engine.api import ApiResponse, ApiUnreachable
from sync_pipeline.resources.api_client import SyncApiClient

Record = dict[str, Any]


class ScriptedAnswer(dg.Config):
    """A non-2xx answer to `times` calls from call number `call_number` (1 = first) to one URL."""

    url: str
    call_number: int
    times: int = 1
    status: int = 500
    body: str = '{"error": "internal server error"}'
    retry_after_seconds: float | None = None


@dataclass(frozen=True)
class ReceivedCall:
    """One POST as the API saw it: its number, the decoded records and the status it answered."""

    number: int
    records: list[Record]
    status: int
    idempotency_key: str


class RecordingApiClient(SyncApiClient):
    """A fake third-party API: decodes each batch, keeps it per URL and answers 200 unless scripted."""

    # Answers are config so they survive Dagster re-creating the resource at run start; what was
    # received is private state, so read it back only from an instance the test called directly.
    scripted_answers: list[ScriptedAnswer] = Field(default_factory=list)
    unreachable_urls: list[str] = Field(default_factory=list)
    _calls: dict[str, list[ReceivedCall]] = PrivateAttr(default_factory=dict)

    def post_batch(self, url: str, body: bytes, idempotency_key: str) -> ApiResponse:
        """Answer like the receiver would: 400 for a body that is not a JSON array of objects."""
        if url in self.unreachable_urls:
            raise ApiUnreachable(f"ConnectionError: connection refused by {url}")
        calls = self._calls.setdefault(url, [])
        number = len(calls) + 1
        records = json.loads(body.decode("utf-8"))
        if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
            calls.append(ReceivedCall(number, [], 400, idempotency_key))
            return ApiResponse(400, '{"error": "expected a JSON array of objects"}')
        answer = next(
            (a for a in self.scripted_answers if a.url == url and a.call_number <= number < a.call_number + a.times),
            None,
        )
        status = answer.status if answer else 200
        calls.append(ReceivedCall(number, records, status, idempotency_key))
        if answer:
            return ApiResponse(status, answer.body, answer.retry_after_seconds)
        return ApiResponse(status, f'{{"accepted": {len(records)}}}')

    def calls(self, url: str) -> list[ReceivedCall]:
        """Every call made to `url`, in order, whatever it answered."""
        return list(self._calls.get(url, []))

    def call_sizes(self, url: str) -> list[int]:
        """The number of records in each call to `url`."""
        return [len(call.records) for call in self.calls(url)]

    def accepted_records(self, url: str) -> list[Record]:
        """The records of the calls to `url` that were answered with a 2xx."""
        return [record for call in self.calls(url) if 200 <= call.status < 300 for record in call.records]

    def accepted_ids(self, url: str) -> list[str]:
        """The `Id` of every accepted record at `url`, in the order received."""
        return [record["Id"] for record in self.accepted_records(url)]
