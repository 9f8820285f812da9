"""Test doubles that behave like the real things they stand in for."""

from __future__ import annotations

import decimal
import itertools
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from sync_pipeline.engine.http.api import ApiCallFailed, ApiResponse, ApiUnreachable
from sync_pipeline.resources.api_client import SyncApiClient

Record = dict[str, Any]
JSON = "application/json; charset=utf-8"


class ScriptedAnswer(dg.Config):
    """A scripted answer (by default a 500) to `times` calls from call number `call_number` (1 = first) to one URL."""

    url: str
    call_number: int
    times: int = 1
    status: int = 500
    body: str = '{"error": "internal server error"}'
    retry_after_seconds: float | None = None
    content_type: str = JSON


@dataclass(frozen=True)
class ReceivedCall:
    """One POST as the API saw it: its number, the decoded records and the status it answered."""

    number: int
    records: list[Record]
    status: int
    idempotency_key: str


@dataclass(frozen=True)
class ReceivedRequest:
    """One record call as the API saw it: its number at its URL, method, URL, decoded body and status."""

    number: int
    method: str
    url: str
    body: Record | None
    status: int
    idempotency_key: str | None


class RecordingApiClient(SyncApiClient):
    """A fake third-party API: decodes each batch, keeps it per URL and answers 200 unless scripted.

    Record calls (`request`) answer as a REST collection would: POST creates under a new id (201
    `{"id": ...}`), PUT replaces and PATCH merges the record at `<collection>/<id>` (200), an id it
    never gave is 404; a scripted answer for the URL and call number comes instead.
    """

    # Answers are config so they survive Dagster re-creating the resource at run start; what was
    # received is private state, so read it back only from an instance the test called directly.
    scripted_answers: list[ScriptedAnswer] = Field(default_factory=list)
    unreachable_urls: list[str] = Field(default_factory=list)
    _calls: dict[str, list[ReceivedCall]] = PrivateAttr(default_factory=dict)
    _requests: dict[str, list[ReceivedRequest]] = PrivateAttr(default_factory=dict)
    _collections: dict[str, dict[str, Record]] = PrivateAttr(default_factory=dict)
    _ids: Iterator[int] = PrivateAttr(default_factory=lambda: itertools.count(1))

    def post_batch(self, url: str, body: bytes, idempotency_key: str) -> ApiResponse:
        """Answer like the receiver would: 400 for a body that is not a JSON array of objects."""
        if url in self.unreachable_urls:
            raise ApiUnreachable(f"ConnectionError: connection refused by {url}")
        calls = self._calls.setdefault(url, [])
        number = len(calls) + 1
        records = json.loads(body.decode("utf-8"))
        if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
            calls.append(ReceivedCall(number, [], 400, idempotency_key))
            return ApiResponse(400, '{"error": "expected a JSON array of objects"}', content_type=JSON)
        answer = self._scripted(url, number)
        status = answer.status if answer else 200
        calls.append(ReceivedCall(number, records, status, idempotency_key))
        if answer:
            return ApiResponse(status, answer.body, answer.retry_after_seconds, answer.content_type)
        return ApiResponse(status, f'{{"accepted": {len(records)}}}', content_type=JSON)

    def request(self, method: str, url: str, body: bytes | None, idempotency_key: str | None = None) -> ApiResponse:
        """Answer a record call like a REST collection, or as scripted for this URL and call number."""
        if url in self.unreachable_urls:
            raise ApiUnreachable(f"ConnectionError: connection refused by {url}")
        requests = self._requests.setdefault(url, [])
        number = len(requests) + 1
        record = json.loads(body.decode("utf-8")) if body else None
        answer = self._scripted(url, number)
        if answer:
            response = ApiResponse(answer.status, answer.body, answer.retry_after_seconds, answer.content_type)
        else:
            response = self._as_a_collection(method, url, record)
        requests.append(ReceivedRequest(number, method, url, record, response.status_code, idempotency_key))
        return response

    def _as_a_collection(self, method: str, url: str, record: Any) -> ApiResponse:
        if not isinstance(record, dict):
            return ApiResponse(400, '{"error": "expected a JSON object"}', content_type=JSON)
        if method == "POST":
            new_id = str(next(self._ids))
            self._collections.setdefault(url, {})[new_id] = record
            return ApiResponse(201, json.dumps({"id": new_id}), content_type=JSON)
        collection, _, quoted_id = url.rpartition("/")
        stored = self._collections.get(collection, {})
        record_id = urllib.parse.unquote(quoted_id)
        if method not in ("PUT", "PATCH"):
            return ApiResponse(405, json.dumps({"error": f"{method} is not allowed"}), content_type=JSON)
        if record_id not in stored:
            return ApiResponse(404, json.dumps({"error": f"no record {record_id}"}), content_type=JSON)
        stored[record_id] = record if method == "PUT" else {**stored[record_id], **record}
        return ApiResponse(200, json.dumps({"id": record_id, **stored[record_id]}), content_type=JSON)

    def _scripted(self, url: str, number: int) -> ScriptedAnswer | None:
        """The answer scripted for call `number` to `url`, if any."""
        return next(
            (a for a in self.scripted_answers if a.url == url and a.call_number <= number < a.call_number + a.times),
            None,
        )

    def requests(self, url: str) -> list[ReceivedRequest]:
        """Every record call made to `url`, in order, whatever it answered."""
        return list(self._requests.get(url, []))

    def collection(self, url: str) -> dict[str, Record]:
        """The records created at the collection `url` (and updated since), by the id given to each."""
        return dict(self._collections.get(url, {}))

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


class TransportFault(dg.Config):
    """No HTTP answer at all for `times` attempts from attempt `attempt_number` (1 = first) to one URL."""

    url: str
    attempt_number: int
    times: int = 1
    kind: Literal["timeout", "refused"] = "timeout"


class FlakyApiClient(RecordingApiClient):
    """The recording fake behind a flaky network: chosen attempts time out or are refused.

    Such an attempt never reaches the API, so what the API received is still exactly what it
    answered; `attempt_keys` shows every attempt's Idempotency-Key, answered or not.
    """

    transport_faults: list[TransportFault] = Field(default_factory=list)
    _attempt_keys: dict[str, list[str]] = PrivateAttr(default_factory=dict)

    def post_batch(self, url: str, body: bytes, idempotency_key: str) -> ApiResponse:
        """Raise what the real client raises for a scripted attempt; otherwise answer as the recording fake."""
        attempts = self._attempt_keys.setdefault(url, [])
        attempts.append(idempotency_key)
        number = len(attempts)
        fault = next(
            (
                f
                for f in self.transport_faults
                if f.url == url and f.attempt_number <= number < f.attempt_number + f.times
            ),
            None,
        )
        if fault is None:
            return super().post_batch(url, body, idempotency_key)
        if fault.kind == "refused":
            raise ApiUnreachable(f"ConnectionError: connection refused by {url}")
        raise ApiCallFailed(f"ReadTimeout: {url} did not answer in time")

    def attempt_keys(self, url: str) -> list[str]:
        """The Idempotency-Key of every attempt at `url`, in order, whether it got an answer or not."""
        return list(self._attempt_keys.get(url, []))


class ValidatingApiClient(RecordingApiClient):
    """The recording fake as a strict API: it refuses a whole batch that holds any of `refused_ids`.

    The refusal names the offending Ids, as real validating APIs do. Every body is also kept decoded
    with JSON numbers as exact `Decimal`s, so a test can check a value arrived without rounding.
    """

    refused_ids: list[str] = Field(default_factory=list)
    refusal_status: int = 422
    _exact_bodies: dict[str, list[Any]] = PrivateAttr(default_factory=dict)

    def post_batch(self, url: str, body: bytes, idempotency_key: str) -> ApiResponse:
        """Refuse a batch holding a refused Id with `refusal_status`; otherwise answer as the recording fake."""
        self._exact_bodies.setdefault(url, []).append(json.loads(body.decode("utf-8"), parse_float=decimal.Decimal))
        records = json.loads(body.decode("utf-8"))
        offending = [
            r["Id"]
            for r in (records if isinstance(records, list) else [])
            if isinstance(r, dict) and r.get("Id") in self.refused_ids
        ]
        if not offending:
            return super().post_batch(url, body, idempotency_key)
        calls = self._calls.setdefault(url, [])
        calls.append(ReceivedCall(len(calls) + 1, records, self.refusal_status, idempotency_key))
        errors = [{"Id": entity_id, "error": "fails validation"} for entity_id in offending]
        return ApiResponse(self.refusal_status, json.dumps({"errors": errors}), content_type=JSON)

    def exact_accepted_records(self, url: str) -> list[Record]:
        """The accepted records at `url` as the JSON text had them, numbers as `Decimal`."""
        return [
            record
            for call, exact in zip(self.calls(url), self._exact_bodies.get(url, []), strict=True)
            if 200 <= call.status < 300
            for record in exact
        ]


class InterceptingApiClient(RecordingApiClient):
    """The recording fake with a test's hook run as each call arrives, before it is answered.

    The hook can hold a call open while another run starts, or change the world mid-sync. Calls
    from several threads are answered one at a time, as a real API would record them.
    """

    _hook: Callable[[str], None] | None = PrivateAttr(default=None)
    _answering: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def on_each_call(self, hook: Callable[[str], None]) -> None:
        """Run `hook(url)` at the start of every call from now on."""
        self._hook = hook

    def post_batch(self, url: str, body: bytes, idempotency_key: str) -> ApiResponse:
        """Run the hook, then answer as the recording fake."""
        if self._hook is not None:
            self._hook(url)
        with self._answering:
            return super().post_batch(url, body, idempotency_key)


class MultiStatusApiClient(RecordingApiClient):
    """The recording fake as an API that answers 207 Multi-Status with each record's own result.

    Records in `refused_ids` get status 422 and an error naming them; those in `unanswered_ids` are
    left out of the results, as an API that dropped them would.
    """

    refused_ids: list[str] = Field(default_factory=list)
    unanswered_ids: list[str] = Field(default_factory=list)

    def post_batch(self, url: str, body: bytes, idempotency_key: str) -> ApiResponse:
        """Keep the call, then answer 207 with `{"results": [{"Id", "status", "error"?}, ...]}`."""
        super().post_batch(url, body, idempotency_key)
        results = [
            {"Id": r["Id"], "status": 422, "error": f"{r['Id']} fails validation"}
            if r["Id"] in self.refused_ids
            else {"Id": r["Id"], "status": 201}
            for r in json.loads(body.decode("utf-8"))
            if r["Id"] not in self.unanswered_ids
        ]
        return ApiResponse(207, json.dumps({"results": results}), content_type=JSON)
