"""A local Praxedo on 127.0.0.1: its customer, contact and business-event managers, for the demo and the tests.

It answers the JSON rendering of Praxedo's operations that `connectors/praxedo` speaks (`POST
<base>/<Manager>/<operation>`, see `connectors/praxedo/operations.py`) as the real service behaves:
HTTP Basic on every call (401 otherwise), records under the id the client chose, a create of an id it
holds refused with ID_ALREADY_USED (never a second copy), an update of an unknown id refused with
UNKNOWN_ID, required fields checked (INVALID_FIELD naming the field), contacts and events pointing at
a customer it does not hold refused (UNKNOWN_REFERENCE), a business event NEW when created and its
status Praxedo's own after. `searchEvents` pages at most 50 events a call by `firstResultIndex` (result
code 200 while more follow, 0 on the last page) and answers 155 when a search matches more than 2,000;
events are ordered by their last modification, which every create, update and completion stamps.
`complete` plays the technician: an event COMPLETED or VALIDATED, with a completion date or without
(a cancellation, as Praxedo's clients read it), possibly stamped in the past (a late commit).
Tests choose records to refuse, calls to fail (5xx, SOAP faults, one quoting the credentials back) and
a password change mid-run, and read what it holds, every result and every search.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

from sync_pipeline.connectors.praxedo.operations import MANAGERS, Manager, ResultCode
from sync_pipeline.demo.receiver import BackgroundServer, send_json

SERVICES_PATH = "/eTech/services/cxf/v6"
"""Where the managers are, below the host (as on Praxedo's hosts)."""
REQUIRED = {
    "CustomerManager": ("id", "name"),
    "ContactManager": ("id", "customerId", "lastName"),
    "BusinessEventManager": ("id", "customerId", "title"),
}
"""The fields each manager's records must carry."""
NEW_EVENT_STATUS = "NEW"
"""A business event's status when created; it moves in Praxedo (scheduling, the technician), never by an update."""
POINTS_AT_A_CUSTOMER = ("ContactManager", "BusinessEventManager")
PRAXEDO_OWNED = ("status", "completionDate")
"""An event's fields that move in Praxedo only: an update from the client leaves them as they are."""
MAX_BATCH_SIZE = 50
"""Events one searchEvents call answers at most."""
MAX_SEARCH_RESULTS = 2000
"""Events a search may match before it is answered TOO_MANY_RESULTS."""


@dataclass(frozen=True)
class OperationResult:
    """One entity's outcome of one operation, as answered."""

    manager: str
    operation: str
    record_id: str
    result_code: int


@dataclass
class _State:
    held: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {name: {} for name in MANAGERS})
    results: list[OperationResult] = field(default_factory=list)
    refused: dict[tuple[str, str], str] = field(default_factory=dict)
    failing: list[tuple[int, bool]] = field(default_factory=list)
    unauthorized: int = 0
    rotation: tuple[int, str] | None = None
    """Calls still answered with the current password, and the one that replaces it after them."""
    searches: list[dict[str, Any]] = field(default_factory=list)
    """Every searchEvents request, in order."""


class PraxedoSimulator(BackgroundServer):
    """Praxedo in a background thread; `base_url` is its services URL, managers below it."""

    def __init__(
        self,
        username: str,
        password: str,
        port: int = 0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._username = username
        self._password = password
        self._clock = clock
        self._state = _State()
        self._lock = threading.Lock()
        super().__init__(_handler_for(self), port, name="praxedo")

    @property
    def base_url(self) -> str:
        """The services URL; an entity's endpoint is a manager's name below it."""
        return self.address(f"{SERVICES_PATH}/")

    def held(self, manager: str) -> dict[str, dict[str, Any]]:
        """What the manager holds, by id (a copy)."""
        with self._lock:
            return {record_id: dict(record) for record_id, record in self._state.held[manager].items()}

    def results(self, manager: str | None = None) -> list[OperationResult]:
        """Every entity result answered so far (of one manager, if named), in order."""
        with self._lock:
            return [r for r in self._state.results if manager is None or r.manager == manager]

    def operations(self) -> Counter[str]:
        """How many entity results each operation gave."""
        return Counter(r.operation for r in self.results())

    @property
    def unauthorized(self) -> int:
        """Calls answered 401."""
        with self._lock:
            return self._state.unauthorized

    def searches(self) -> list[dict[str, Any]]:
        """Every searchEvents request answered (not refused for its credentials), in order."""
        with self._lock:
            return [dict(search) for search in self._state.searches]

    def complete(
        self,
        event_ids: Iterable[str],
        status: str = "COMPLETED",
        completed_on: dt.datetime | None = None,
        modified_on: dt.datetime | None = None,
    ) -> None:
        """The technician's side: these events move to `status` (COMPLETED or VALIDATED) with `completed_on`
        as completion date (None: none, which clients read as a cancellation), last modified at
        `modified_on` (the clock's now by default; an earlier time is a late commit)."""
        with self._lock:
            stamp = _iso(modified_on or self._clock())
            for event_id in event_ids:
                event = self._state.held["BusinessEventManager"][event_id]
                event.update(status=status, completionDate=_iso(completed_on) if completed_on else None)
                event["lastModificationDate"] = stamp

    def put(self, manager: str, record: dict[str, Any]) -> None:
        """Hold a record as if made in Praxedo by hand (or by a run whose answer was lost)."""
        with self._lock:
            self._state.held[manager][str(record["id"])] = dict(record)

    def refuse(self, manager: str, record_ids: Iterable[str], message: str = "refused by validation") -> None:
        """Refuse these records' creates and updates with INVALID_FIELD and `message`."""
        with self._lock:
            for record_id in record_ids:
                self._state.refused[(manager, record_id)] = message

    def stop_refusing(self, manager: str, record_ids: Iterable[str]) -> None:
        """Accept these records again (their data, or Praxedo's rules, were fixed)."""
        with self._lock:
            for record_id in record_ids:
                self._state.refused.pop((manager, record_id), None)

    def fail_next_calls(self, *statuses: int, echo_credentials: bool = False) -> None:
        """Answer the next calls with these HTTP statuses, as SOAP faults, one each, in order; with
        `echo_credentials` the fault quotes the request's Authorization header, as a careless gateway does."""
        with self._lock:
            self._state.failing.extend((status, echo_credentials) for status in statuses)

    def stop_failing(self) -> None:
        """Answer every call again (the maintenance is over): the faults not yet answered are dropped."""
        with self._lock:
            self._state.failing.clear()

    def change_password(self, password: str, after_calls: int = 0) -> None:
        """The web-service user's password changed (after `after_calls` more calls, as an admin rotating it
        while a run is under way): the old one is answered 401 from then on."""
        with self._lock:
            if after_calls:
                self._state.rotation = (after_calls, password)
            else:
                self._password = password

    def answer(self, path: str, authorization: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON answer of one call."""
        with self._lock:
            if self._state.rotation is not None:
                calls, password = self._state.rotation
                self._state.rotation = (calls - 1, password) if calls else None
                if not calls:
                    self._password = password
        if not self._authorized(authorization):
            with self._lock:
                self._state.unauthorized += 1
            return HTTPStatus.UNAUTHORIZED, {"message": "authentication required"}
        with self._lock:
            if self._state.failing:
                status, echo = self._state.failing.pop(0)
                fault = {"faultcode": "soap:Server", "faultstring": "service unavailable"}
                return status, {"fault": {**fault, **({"request": {"Authorization": authorization}} if echo else {})}}
        manager_name, _, operation = path.removeprefix(SERVICES_PATH + "/").partition("/")
        manager = MANAGERS.get(manager_name)
        if manager is None or operation not in (manager.create, manager.update, manager.search):
            return HTTPStatus.NOT_FOUND, {"fault": {"faultcode": "soap:Client", "faultstring": f"no {path}"}}
        try:
            request = json.loads(body)
        except ValueError:
            return HTTPStatus.BAD_REQUEST, {"fault": {"faultcode": "soap:Client", "faultstring": "unreadable request"}}
        with self._lock:
            if operation == manager.search:
                return HTTPStatus.OK, self._search(manager_name, request)
            if operation == manager.create:
                records = request.get(manager.items)
                if not isinstance(records, list):
                    return HTTPStatus.BAD_REQUEST, {"fault": {"faultstring": f"{manager.items}: a list is required"}}
                return HTTPStatus.OK, {
                    "resultCode": 0,
                    "entities": [self._create(manager_name, manager, record) for record in records],
                }
            return HTTPStatus.OK, self._update(manager_name, manager, request.get(manager.item))

    def _search(self, manager_name: str, request: dict[str, Any]) -> dict[str, Any]:
        self._state.searches.append(request)
        first, size = request.get("firstResultIndex", 0), request.get("batchSize", MAX_BATCH_SIZE)
        if not isinstance(size, int) or not 1 <= size <= MAX_BATCH_SIZE:
            return {"resultCode": int(ResultCode.INVALID_FIELD), "message": f"batchSize: 1 to {MAX_BATCH_SIZE}"}
        if not isinstance(first, int) or first < 0:
            return {"resultCode": int(ResultCode.INVALID_FIELD), "message": "firstResultIndex: 0 or more"}
        constraints = request.get("request", {}).get("constraints", [])
        found = sorted(
            (event for event in self._state.held[manager_name].values() if _matches(event, constraints)),
            key=lambda event: (event.get("lastModificationDate") or "", str(event["id"])),
        )
        if len(found) > MAX_SEARCH_RESULTS:
            return {"resultCode": int(ResultCode.TOO_MANY_RESULTS), "entities": []}
        page = [dict(event) for event in found[first : first + size]]
        more = first + size < len(found)
        return {"resultCode": int(ResultCode.MORE_RESULTS if more else ResultCode.OK), "entities": page}

    def _authorized(self, authorization: str) -> bool:
        scheme, _, encoded = authorization.partition(" ")
        try:
            given = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        return scheme == "Basic" and given == f"{self._username}:{self._password}"

    def _create(self, manager_name: str, manager: Manager, record: Any) -> dict[str, Any]:
        code, message = self._check(manager_name, record)
        record_id = str(record.get("id")) if isinstance(record, dict) else ""
        if code == ResultCode.OK and record_id in self._state.held[manager_name]:
            code, message = ResultCode.ID_ALREADY_USED, f"id {record_id} is already used"
        if code == ResultCode.OK:
            stamp = self._event_stamp(manager_name, {"status": NEW_EVENT_STATUS})
            self._state.held[manager_name][record_id] = {**record, **stamp}
        self._state.results.append(OperationResult(manager_name, manager.create, record_id, code))
        return {"id": record_id, "resultCode": int(code), "message": message}

    def _update(self, manager_name: str, manager: Manager, record: Any) -> dict[str, Any]:
        code, message = self._check(manager_name, record)
        record_id = str(record.get("id")) if isinstance(record, dict) else ""
        if code == ResultCode.OK and record_id not in self._state.held[manager_name]:
            code, message = ResultCode.UNKNOWN_ID, f"no record {record_id}"
        if code == ResultCode.OK:
            held = self._state.held[manager_name]
            kept = {name: held[record_id][name] for name in PRAXEDO_OWNED if name in held[record_id]}
            held[record_id] = {**record, **self._event_stamp(manager_name, kept)}
        self._state.results.append(OperationResult(manager_name, manager.update, record_id, code))
        return {"resultCode": int(code), "message": message}

    def _event_stamp(self, manager_name: str, fields: dict[str, Any]) -> dict[str, Any]:
        """What Praxedo sets on a business event it stores (its own fields and the modification time); nothing
        on another manager's record."""
        if manager_name != "BusinessEventManager":
            return {}
        return {**fields, "lastModificationDate": _iso(self._clock())}

    def _check(self, manager_name: str, record: Any) -> tuple[ResultCode, str]:
        if not isinstance(record, dict):
            return ResultCode.INVALID_FIELD, "a record must be an object"
        for name in REQUIRED[manager_name]:
            if record.get(name) in (None, ""):
                return ResultCode.INVALID_FIELD, f"{name}: required"
        refused = self._state.refused.get((manager_name, str(record["id"])))
        if refused is not None:
            return ResultCode.INVALID_FIELD, refused
        customer = record.get("customerId")
        if manager_name in POINTS_AT_A_CUSTOMER and str(customer) not in self._state.held["CustomerManager"]:
            return ResultCode.UNKNOWN_REFERENCE, f"customerId {customer}: no such customer"
        return ResultCode.OK, ""


def _iso(moment: dt.datetime) -> str:
    """A moment as Praxedo's JSON carries it: ISO-8601 in UTC."""
    return moment.astimezone(dt.UTC).isoformat()


def _matches(event: dict[str, Any], constraints: list[dict[str, Any]]) -> bool:
    """Whether an event meets every constraint: its value among `values`, or its date in [from, to)."""
    for constraint in constraints:
        value = event.get(constraint.get("name", ""))
        if "values" in constraint and str(value) not in constraint["values"]:
            return False
        if "from" in constraint or "to" in constraint:
            if value is None:
                return False
            moment = dt.datetime.fromisoformat(value)
            if "from" in constraint and moment < dt.datetime.fromisoformat(constraint["from"]):
                return False
            if "to" in constraint and moment >= dt.datetime.fromisoformat(constraint["to"]):
                return False
    return True


def _handler_for(simulator: PraxedoSimulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stall per answer

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, payload = simulator.answer(self.path, self.headers.get("Authorization", ""), body)
            challenge = {"WWW-Authenticate": 'Basic realm="Praxedo"'} if status == HTTPStatus.UNAUTHORIZED else {}
            send_json(self, status, payload, challenge)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests read the simulator's results instead."""

    return Handler
