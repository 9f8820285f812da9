"""Praxedo's web services as this product speaks them: each manager's create and update operations, and
what their result codes mean.

Praxedo's interface is SOAP (`BusinessEventManager` v6: `createEvents` with a client-chosen id,
`updateEvent`, `searchEvents`; see FIELD_NOTES). The wire here is a JSON rendering of those
operations: `POST <base>/<Manager>/<operation>` with the request element as a JSON object, answered by
the response element as one. Every answer carries a `resultCode` (0: done); a create answers one
result per entity, in the order sent. The engine speaks create (POST to the endpoint), update (PUT
to `<endpoint>/<id>`) and search (GET of the endpoint, constraints and paging in the query);
`PraxedoApiClient` renders those as the manager's operations and reads the result codes back as the
HTTP statuses the engine already knows (`status_of`), a search's page codes (0, 200, 155) left for
the engine's paging and search window to read.

Only the BusinessEventManager operations come from Praxedo's public client code. The customer and
contact operations follow the same pattern, and the non-zero result codes below are this product's
reading: both are on the README's list of what a deployment checks against its tenant's WSDL.
"""

from __future__ import annotations

import enum
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from sync_pipeline.engine.http.api import ApiCallFailed, ApiResponse


@dataclass(frozen=True)
class Manager:
    """One Praxedo web service: its create operation (a list, under `items`), update (one, under `item`) and
    search, if it has one (paged by `firstResultIndex` and `batchSize`)."""

    create: str
    update: str
    items: str
    item: str
    search: str | None = None


MANAGERS = {
    "BusinessEventManager": Manager("createEvents", "updateEvent", "events", "event", "searchEvents"),
    "CustomerManager": Manager("createCustomers", "updateCustomer", "customers", "customer"),
    "ContactManager": Manager("createContacts", "updateContact", "contacts", "contact"),
}
"""The managers an entity's endpoint may name, by name."""


class ResultCode(enum.IntEnum):
    """The result codes of the operations, as this product reads them."""

    OK = 0
    ID_ALREADY_USED = 12
    """A create whose client-chosen id is taken: the record is there already."""
    UNKNOWN_ID = 13
    """An update of an id Praxedo does not hold."""
    INVALID_FIELD = 30
    """A field refused by Praxedo's validation; the message names it."""
    UNKNOWN_REFERENCE = 31
    """A record pointing at a customer (or another record) Praxedo does not hold."""
    MORE_RESULTS = 200
    """A search page with more pages after it."""
    TOO_MANY_RESULTS = 155
    """A search matching more than Praxedo pages through (2,000): narrow the date window."""


_STATUSES = {
    ResultCode.OK: 200,
    ResultCode.ID_ALREADY_USED: 409,
    ResultCode.UNKNOWN_ID: 404,
    ResultCode.INVALID_FIELD: 422,
    ResultCode.UNKNOWN_REFERENCE: 422,
}


def status_of(result_code: int) -> int:
    """The HTTP status the engine reads an operation's result code as: 200 done, 409 the id is taken,
    404 unknown, 422 refused (any code this product does not know is a refusal too: sent again next run,
    never retried in a loop)."""
    try:
        return _STATUSES[ResultCode(result_code)]
    except ValueError:
        return 422


@dataclass(frozen=True)
class OperationCall:
    """An engine call as the operation it stands for: where to POST it and its request element."""

    url: str
    request: dict[str, Any]
    operation: str
    record_id: Any


PAGING = ("firstResultIndex", "batchSize")
"""A search's paging parameters, sent beside its request element."""


def operation_call(method: str, url: str, body: bytes | None) -> OperationCall:
    """A create (POST to the manager), an update (PUT or PATCH to the manager and an id) or a search (GET of
    the manager with the constraints as query parameters) as the manager's operation; raises `ApiCallFailed`
    for any other call, naming the managers."""
    base, manager, record_id = _addressed(method, url)
    if method == "GET":
        return _search_call(base, manager, url)
    record = json.loads(body or b"{}")
    if record_id is None:
        return OperationCall(f"{base}/{manager.create}", {manager.items: [record]}, manager.create, record.get("id"))
    return OperationCall(
        f"{base}/{manager.update}", {manager.item: {**record, "id": record_id}}, manager.update, record_id
    )


def _search_call(base: str, manager: Manager, url: str) -> OperationCall:
    """`GET <Manager>?status=A,B&date.from=…&date.to=…&firstResultIndex=…&batchSize=…` as the search
    operation: `X.from`/`X.to` a date range constraint on X, any other parameter a constraint on its
    comma-separated values."""
    if manager.search is None:
        raise ApiCallFailed(f"GET {url}: {base.rsplit('/', 1)[-1]} has no search operation")
    query = urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True)
    ranges: dict[str, dict[str, str]] = {}
    constraints: list[dict[str, Any]] = []
    paging: dict[str, int] = {}
    for name, value in query:
        field, _, bound = name.rpartition(".")
        if name in PAGING:
            try:
                paging[name] = int(value)
            except ValueError:
                raise ApiCallFailed(f"GET {url}: {name} {value!r} is not a whole number") from None
        elif field and bound in ("from", "to"):
            ranges.setdefault(field, {})[bound] = value
        else:
            constraints.append({"name": name, "values": value.split(",")})
    constraints += [{"name": field, **bounds} for field, bounds in ranges.items()]
    return OperationCall(
        f"{base}/{manager.search}", {"request": {"constraints": constraints}, **paging}, manager.search, None
    )


def search_result(answer: ApiResponse, operation: str) -> ApiResponse:
    """A search's answer for the engine's paging: as it came (`resultCode` and `entities`) when its code is
    a page (0 the last, 200 more follow) or too many results (155); else the HTTP status the code stands for."""
    try:
        code = int(json.loads(answer.body)["resultCode"])
    except (ValueError, KeyError, TypeError):
        return ApiResponse(502, f"{operation}: Praxedo's answer holds no result code: {answer.body_excerpt}")
    if code in (ResultCode.OK, ResultCode.MORE_RESULTS, ResultCode.TOO_MANY_RESULTS):
        return answer
    return ApiResponse(status_of(code), answer.body, content_type=answer.content_type)


def _addressed(method: str, url: str) -> tuple[str, Manager, str | None]:
    """The manager's URL, the manager and the id (None for a create) that an engine call addresses."""
    parts = urllib.parse.urlsplit(url)
    segments = parts.path.rstrip("/").split("/")
    for position, segment in enumerate(segments):
        if segment in MANAGERS:
            rest = segments[position + 1 :]
            base = urllib.parse.urlunsplit(parts._replace(path="/".join(segments[: position + 1]), query=""))
            if method in ("POST", "GET") and not rest:
                return base, MANAGERS[segment], None
            if method in ("PUT", "PATCH") and len(rest) == 1:
                return base, MANAGERS[segment], urllib.parse.unquote(rest[0])
    raise ApiCallFailed(
        f"{method} {url}: not a Praxedo create (POST <base>/<Manager>), update (PUT <base>/<Manager>/<id>) or "
        "search (GET <base>/<Manager>?…); "
        f"the entity's endpoint must end in one of {', '.join(MANAGERS)}"
    )


def operation_result(answer: ApiResponse, record_id: Any, operation: str) -> ApiResponse:
    """The one entity's result of an operation's answer, as an HTTP status and `{id, resultCode, message}`."""
    try:
        found = json.loads(answer.body)
        result = found["entities"][0] if "entities" in found else found
        code, message = int(result["resultCode"]), str(result.get("message") or "")
    except (ValueError, KeyError, IndexError, TypeError):
        return ApiResponse(502, f"{operation}: Praxedo's answer holds no result code: {answer.body_excerpt}")
    given = result.get("id")  # Praxedo's id for the record, if it says; else the one we chose
    body = json.dumps({"id": given if given not in (None, "") else record_id, "resultCode": code, "message": message})
    return ApiResponse(status_of(code), body, content_type="application/json")
