"""A local Zuora on 127.0.0.1: the OAuth token endpoint and the Workflow API, for the demo and the tests.

It answers as Zuora's v1 API reference shows (developer.zuora.com, "Create an OAuth token", "List
workflows", "Export a workflow version", "Rate limits"): tokens by client credentials that expire and
can be revoked, a token endpoint rate-limited per IP, pages of workflows with a `pagination` object
whose `next_page` links the next one (`page_length` 20 when not sent, at most 50), exports as
`{linkages, tasks, workflow}`, and a request budget per tenant announced in `RateLimit-*` headers and
enforced with 429. Several tenants, each with its own credentials and workflows; counters a test reads.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import secrets
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

from sync_pipeline.demo.receiver import BackgroundServer, send_json

TOKEN_PATH = "/oauth/token"
API_PREFIX = "/v1"
WORKFLOWS_PATH = f"{API_PREFIX}/workflows"
DEFAULT_PAGE_LENGTH = 20
"""What Zuora uses when `page_length` is not sent."""
MAX_PAGE_LENGTH = 50
"""The largest `page_length` Zuora's reference allows for List workflows."""
TOKEN_LIFETIME_SECONDS = 3599
"""The `expires_in` of Zuora's token answers."""
FIRST_UPDATE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
"""When the first change to the simulator's workflows happened; each later change is one second on."""


@dataclass(frozen=True)
class ZuoraTenant:
    """A tenant's OAuth client as its customer record holds it: name, client id and secret."""

    name: str
    client_id: str
    client_secret: str = field(repr=False)


def new_credentials(name: str) -> ZuoraTenant:
    """Credentials of Zuora's form (a 36-character client id, a secret of at most 42 characters) that
    no simulator knows until they are given to `ZuoraSimulator.add_tenant`."""
    return ZuoraTenant(name, str(uuid.uuid4()), secrets.token_urlsafe(30))


@dataclass
class ZuoraCounts:
    """What reached the simulator: token requests per client id, API calls, 401s and 429s per path."""

    token_requests: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    unauthorized: Counter[str] = field(default_factory=Counter)
    throttled: Counter[str] = field(default_factory=Counter)


@dataclass
class _Window:
    """A fixed rate-limit window: how many requests it allows, how many it has taken, when it ends."""

    limit: int
    seconds: float
    ends_at: float = 0.0
    used: int = 0

    def take(self, now: float) -> bool:
        """Count one request; False when the window had none left."""
        if now >= self.ends_at:
            self.ends_at, self.used = now + self.seconds, 0
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def headers(self, now: float) -> dict[str, str]:
        """Zuora's rate-limit headers for this window."""
        reset = max(1, math.ceil(self.ends_at - now))
        return {
            "RateLimit-Limit": f"{self.limit}, {self.limit};w={self.seconds:g}",
            "RateLimit-Remaining": str(max(0, self.limit - self.used)),
            "RateLimit-Reset": str(reset),
        }


@dataclass
class _TenantState:
    tenant: ZuoraTenant
    budget: _Window
    workflows: dict[int, dict[str, Any]] = field(default_factory=dict)
    failing_exports: dict[int, tuple[int, bool]] = field(default_factory=dict)
    failing_pages: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Issued:
    client_id: str
    expires_at: float


class ZuoraSimulator(BackgroundServer):
    """Zuora's token endpoint and Workflow API on 127.0.0.1, served while its `with` block runs.

    `clock` is the simulator's time (token expiry, rate-limit windows): a test shares a fake one with
    the client under test so that an hour passes at once.
    """

    def __init__(
        self,
        token_lifetime_seconds: int = TOKEN_LIFETIME_SECONDS,
        token_requests_per_window: int = 100,
        api_requests_per_window: int = 50_000,
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        port: int = 0,
    ) -> None:
        self.counts = ZuoraCounts()
        self._token_lifetime = token_lifetime_seconds
        self._api_budget = api_requests_per_window
        self._window_seconds = window_seconds
        self._token_limit = token_requests_per_window
        self._token_windows: dict[str, _Window] = {}
        self._clock = clock
        self._tenants: dict[str, _TenantState] = {}
        self._tokens: dict[str, _Issued] = {}
        self._token_faults: list[int] = []
        self._workflow_ids = itertools.count(1001)
        self._changes = itertools.count(0)
        self._lock = threading.Lock()
        super().__init__(_handler_for(self), port, name="zuora-simulator")

    @property
    def base_url(self) -> str:
        """The REST base URL a customer record holds (Zuora's `https://rest.zuora.com/v1` here)."""
        return self.address(API_PREFIX)

    @property
    def token_url(self) -> str:
        """Where client credentials are exchanged for a token."""
        return self.address(TOKEN_PATH)

    def add_tenant(
        self,
        name: str,
        workflows: int = 0,
        api_requests_per_window: int | None = None,
        credentials: ZuoraTenant | None = None,
    ) -> ZuoraTenant:
        """A new tenant with `workflows` workflows and its own request budget; its credentials are new, or
        `credentials` (a tenant the demo keeps from one run to the next)."""
        tenant = credentials or new_credentials(name)
        budget = _Window(api_requests_per_window or self._api_budget, self._window_seconds)
        with self._lock:
            state = self._tenants[tenant.client_id] = _TenantState(tenant, budget)
            for number in range(1, workflows + 1):
                self._store(state, next(self._workflow_ids), {"name": f"{name} workflow {number}"})
        return tenant

    def put_workflow(self, tenant: ZuoraTenant, workflow_id: int | None = None, **fields: Any) -> int:
        """Add a workflow (no id) or change one, bumping its `updatedAt` past every earlier change; its id."""
        with self._lock:
            state = self._tenants[tenant.client_id]
            if workflow_id is None:
                workflow_id = next(self._workflow_ids)
            elif workflow_id not in state.workflows:
                raise KeyError(f"tenant {tenant.name} has no workflow {workflow_id}")
            self._store(state, workflow_id, fields)
            return workflow_id

    def delete_workflow(self, tenant: ZuoraTenant, workflow_id: int) -> None:
        """Remove a workflow, as deleting it in Zuora does: it is no longer listed, its export is a 404."""
        with self._lock:
            del self._tenants[tenant.client_id].workflows[workflow_id]

    def workflows(self, tenant: ZuoraTenant) -> list[dict[str, Any]]:
        """Copies of the tenant's workflows, as the list pages them."""
        with self._lock:
            stored = self._tenants[tenant.client_id].workflows
            return [json.loads(json.dumps(stored[workflow_id])) for workflow_id in sorted(stored)]

    def load_workflows(self, tenant: ZuoraTenant, workflows: list[dict[str, Any]]) -> None:
        """Replace the tenant's workflows by these, exactly as given (`updatedAt` included): a Zuora kept
        from one run to the next. Later additions get ids past every id seen."""
        with self._lock:
            self._tenants[tenant.client_id].workflows = {int(workflow["id"]): dict(workflow) for workflow in workflows}
            highest = max([int(workflow["id"]) for workflow in workflows], default=0)
            self._workflow_ids = itertools.count(max(highest + 1, next(self._workflow_ids)))
            stamps = [dt.datetime.fromisoformat(workflow["updatedAt"]) for workflow in workflows]
            latest = max([int((stamp - FIRST_UPDATE).total_seconds()) for stamp in stamps], default=0)
            self._changes = itertools.count(max(latest + 1, next(self._changes)))  # later changes stay newer

    def workflow_ids(self, tenant: ZuoraTenant) -> list[int]:
        """The tenant's workflow ids in the order the list pages them."""
        with self._lock:
            return sorted(self._tenants[tenant.client_id].workflows)

    def fail_exports(
        self, tenant: ZuoraTenant, workflow_ids: Collection[int], status: int = 500, echo_headers: bool = False
    ) -> None:
        """Answer every export of these workflows with `status`; `echo_headers` puts the request's headers
        (the token among them) in the error body, as some gateways do."""
        with self._lock:
            state = self._tenants[tenant.client_id]
            state.failing_exports.update({workflow_id: (status, echo_headers) for workflow_id in workflow_ids})

    def restore_exports(self, tenant: ZuoraTenant, workflow_ids: Collection[int]) -> None:
        """Answer these workflows' exports again, as before `fail_exports`."""
        with self._lock:
            failing = self._tenants[tenant.client_id].failing_exports
            for workflow_id in workflow_ids:
                failing.pop(workflow_id, None)

    def fail_list_pages(self, tenant: ZuoraTenant, pages: Collection[int], status: int = 503) -> None:
        """Answer every request of these list pages (numbered from 1) with `status`, until called again with
        other pages (none: every page answers again)."""
        with self._lock:
            self._tenants[tenant.client_id].failing_pages = dict.fromkeys(pages, status)

    def fail_token_requests(self, *statuses: int) -> None:
        """Answer the next token requests with these statuses, one each, before any other check."""
        with self._lock:
            self._token_faults.extend(statuses)

    def revoke_tokens(self, tenant: ZuoraTenant) -> None:
        """Make every token issued to the tenant so far unknown: its next call with one is a 401."""
        with self._lock:
            self._tokens = {
                token: issued for token, issued in self._tokens.items() if issued.client_id != tenant.client_id
            }

    def _store(self, state: _TenantState, workflow_id: int, fields: dict[str, Any]) -> None:
        stamp = zuora_timestamp(FIRST_UPDATE + dt.timedelta(seconds=next(self._changes)))
        current = state.workflows.get(workflow_id) or _new_workflow(workflow_id, stamp)
        state.workflows[workflow_id] = {**current, **fields, "updatedAt": stamp}

    # What the handler asks; each returns the status, the JSON answer and extra headers.

    def issue_token(self, form: dict[str, str], client_ip: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        """`POST /oauth/token`: a bearer token for known client credentials, within the per-IP limit."""
        with self._lock:
            now = self._clock()
            client_id = form.get("client_id", "")
            self.counts.token_requests[client_id] += 1
            if self._token_faults:
                return self._token_faults.pop(0), {"error": "injected"}, {}
            window = self._token_windows.setdefault(client_ip, _Window(self._token_limit, self._window_seconds))
            if not window.take(now):
                self.counts.throttled[TOKEN_PATH] += 1
                headers = window.headers(now)
                return (
                    HTTPStatus.TOO_MANY_REQUESTS,
                    {"message": "Too Many Requests"},
                    {
                        **headers,
                        "Retry-After": headers["RateLimit-Reset"],
                    },
                )
            if form.get("grant_type") != "client_credentials":
                return HTTPStatus.BAD_REQUEST, {"error": "unsupported_grant_type"}, {}
            if not client_id or not form.get("client_secret"):
                return (
                    HTTPStatus.BAD_REQUEST,
                    {"error": "invalid_request", "error_description": "client_id and client_secret are required"},
                    {},
                )
            state = self._tenants.get(client_id)
            if state is None or not secrets.compare_digest(state.tenant.client_secret, form["client_secret"]):
                return (
                    HTTPStatus.UNAUTHORIZED,
                    {"error": "invalid_client", "error_description": "Bad client credentials"},
                    {},
                )
            token = secrets.token_hex(16)
            self._tokens[token] = _Issued(client_id, now + self._token_lifetime)
            answer = {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": self._token_lifetime,
                "scope": f"user.{uuid.uuid4().hex} tenant.{state.tenant.name} service.workflow.read",
                "jti": secrets.token_hex(16),
            }
            return HTTPStatus.OK, answer, {}

    def answer_api(
        self, path: str, query: dict[str, str], authorization: str, request_headers: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """A Workflow API call: its bearer token checked, its tenant's budget taken, then the answer."""
        route = path.rstrip("/")
        with self._lock:
            now = self._clock()
            self.counts.calls[route] += 1
            scheme, _, token = authorization.partition(" ")
            issued = self._tokens.get(token) if scheme.lower() == "bearer" else None
            if issued is None or now >= issued.expires_at:
                self.counts.unauthorized[route] += 1
                return HTTPStatus.UNAUTHORIZED, {"message": "Authentication error"}, {}
            state = self._tenants[issued.client_id]
            allowed = state.budget.take(now)
            limits = state.budget.headers(now)
            if not allowed:
                self.counts.throttled[route] += 1
                return (
                    HTTPStatus.TOO_MANY_REQUESTS,
                    {"message": "Too Many Requests"},
                    {
                        **limits,
                        "Retry-After": limits["RateLimit-Reset"],
                    },
                )
            status, answer = self._workflow_answer(state, path, query, request_headers)
            return status, answer, limits

    def _workflow_answer(
        self, state: _TenantState, path: str, query: dict[str, str], request_headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        if path == WORKFLOWS_PATH:
            return self._page(state, query)
        workflow_id, _, action = path.removeprefix(WORKFLOWS_PATH + "/").partition("/")
        if action != "export" or not workflow_id.isdigit():
            return HTTPStatus.NOT_FOUND, {"message": f"no such resource: {path}"}
        workflow = state.workflows.get(int(workflow_id))
        if workflow is None:
            return HTTPStatus.NOT_FOUND, {"message": "Workflow version is not found."}
        failing = state.failing_exports.get(int(workflow_id))
        if failing is not None:
            status, echo = failing
            error: dict[str, Any] = {"message": "injected export failure"}
            if echo:
                error["request_headers"] = request_headers
            return status, error
        return HTTPStatus.OK, _export(workflow)

    def _page(self, state: _TenantState, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        page, page_length = query.get("page", "1"), query.get("page_length", str(DEFAULT_PAGE_LENGTH))
        if not (page.isdigit() and int(page) >= 1):
            return HTTPStatus.BAD_REQUEST, {"message": f"page must be a whole number from 1, not {page!r}"}
        if not (page_length.isdigit() and 1 <= int(page_length) <= MAX_PAGE_LENGTH):
            return HTTPStatus.BAD_REQUEST, {
                "message": f"page_length must be a whole number from 1 to {MAX_PAGE_LENGTH}, not {page_length!r}"
            }
        number, length = int(page), int(page_length)
        if number in state.failing_pages:
            return state.failing_pages[number], {"message": "injected list failure"}
        ids = sorted(state.workflows)
        start = (number - 1) * length
        data = [state.workflows[workflow_id] for workflow_id in ids[start : start + length]]
        more = start + length < len(ids)
        next_page = self.address(f"{WORKFLOWS_PATH}?page={number + 1}&page_length={length}") if more else None
        return HTTPStatus.OK, {
            "data": data,
            "pagination": {"next_page": next_page, "page": number, "page_length": length},
        }


def _new_workflow(workflow_id: int, created: str) -> dict[str, Any]:
    """A workflow as List workflows shows it, with an active version."""
    return {
        "id": workflow_id,
        "name": f"workflow {workflow_id}",
        "description": "",
        "status": "Active",
        "calloutTrigger": False,
        "ondemandTrigger": True,
        "scheduledTrigger": False,
        "interval": None,
        "timezone": None,
        "createdAt": created,
        "updatedAt": created,
        "active_version": {
            "id": workflow_id * 10,
            "description": "",
            "status": "Active",
            "type": "Workflow::Setup",
            "version": "0.0.1",
        },
        "latest_inactive_verisons": [],  # sic: Zuora's own spelling of the field
    }


def _export(workflow: dict[str, Any]) -> dict[str, Any]:
    """A workflow's definition as Export a workflow version returns it: linkages, tasks and the workflow."""
    workflow_id = workflow["id"]
    task_id = workflow_id * 10 + 1
    return {
        "linkages": [
            {
                "linkage_type": "Start",
                "source_task_id": None,
                "source_workflow_id": workflow_id,
                "target_task_id": task_id,
            }
        ],
        "tasks": [
            {
                "id": task_id,
                "name": f"{workflow['name']} callout",
                "action_type": "Callout",
                "call_type": "REST",
                "concurrent_limit": 9999999,
                "parameters": {"method": "GET", "url": "https://example.invalid/echo"},
                "priority": "Medium",
                "tags": [],
            }
        ],
        "workflow": {
            "id": workflow_id,
            "name": workflow["name"],
            "description": workflow["description"],
            "callout_trigger": workflow["calloutTrigger"],
            "ondemand_trigger": workflow["ondemandTrigger"],
            "scheduled_trigger": workflow["scheduledTrigger"],
            "interval": workflow["interval"],
            "timezone": workflow["timezone"],
            "priority": "Medium",
            "type": "Workflow::Setup",
            "version": workflow["active_version"]["version"],
            "data": {},
            "parameters": {},
        },
    }


def _handler_for(simulator: ZuoraSimulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Zuora
        disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stall per answer

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if urllib.parse.urlsplit(self.path).path != TOKEN_PATH:
                return self._answer(HTTPStatus.NOT_FOUND, {"message": f"no such resource: {self.path}"}, {})
            form = {name: values[0] for name, values in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items()}
            self._answer(*simulator.issue_token(form, self.client_address[0]))

        def do_GET(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            query = {name: values[0] for name, values in urllib.parse.parse_qs(parts.query).items()}
            if not parts.path.startswith(WORKFLOWS_PATH):
                return self._answer(HTTPStatus.NOT_FOUND, {"message": f"no such resource: {parts.path}"}, {})
            headers = dict(self.headers.items())
            self._answer(*simulator.answer_api(parts.path, query, self.headers.get("Authorization", ""), headers))

        def _answer(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
            track_id = self.headers.get("Zuora-Track-Id")
            send_json(self, status, payload, {**headers, **({"Zuora-Track-Id": track_id} if track_id else {})})

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests read `counts` instead."""

    return Handler


class ObservedZuoraSimulator(ZuoraSimulator):
    """A `ZuoraSimulator` for fault tests: it keeps every token it issued, revoked ones included (to search
    outputs for them), runs the test's `after_page` between serving a page of workflows and answering
    with it (to change the workflows, revoke tokens or kill the client between two page reads), and lets
    another client of a tenant use up its request window (a 429 storm not of the client's making)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.after_page: Callable[[ZuoraTenant, int], None] | None = None
        """Called with the tenant and the page number after each page of workflows served, before it is sent."""
        self._issued_tokens: list[str] = []

    def issued_secrets(self) -> list[str]:
        """Every tenant's client secret and every access token issued so far: what no output may contain."""
        with self._lock:
            return [state.tenant.client_secret for state in self._tenants.values()] + self._issued_tokens

    def use_up_window(self, tenant: ZuoraTenant) -> None:
        """Another client of the tenant opens a new request window and takes all of it: until it ends, the
        tenant's calls are answered 429 with a Retry-After of the window's length."""
        with self._lock:
            budget = self._tenants[tenant.client_id].budget
            budget.ends_at, budget.used = self._clock() + budget.seconds, budget.limit

    def issue_token(self, form: dict[str, str], client_ip: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        """As Zuora's token endpoint answers; an issued token is kept."""
        status, answer, headers = super().issue_token(form, client_ip)
        if status == HTTPStatus.OK:
            with self._lock:
                self._issued_tokens.append(answer["access_token"])
        return status, answer, headers

    def answer_api(
        self, path: str, query: dict[str, str], authorization: str, request_headers: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """As the Workflow API answers; after a page of workflows is served, `after_page` runs."""
        with self._lock:  # whose token it is, before a hook can revoke it
            issued = self._tokens.get(authorization.partition(" ")[2])
            tenant = self._tenants[issued.client_id].tenant if issued else None
        status, answer, headers = super().answer_api(path, query, authorization, request_headers)
        hook = self.after_page
        if hook and tenant and status == HTTPStatus.OK and path.rstrip("/") == WORKFLOWS_PATH:
            hook(tenant, int(answer["pagination"]["page"]))
        return status, answer, headers


def zuora_timestamp(moment: dt.datetime) -> str:
    """A moment as Zuora writes `updatedAt`: ISO-8601 in UTC, milliseconds, `Z`."""
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def listed_workflow(workflow_id: int, updated_at: dt.datetime, **fields: Any) -> dict[str, Any]:
    """A workflow as List workflows shows it after a change at `updated_at` setting `fields`: the simulator's
    own record, for a benchmark that renders its pages once instead of serving them from a simulator."""
    stamp = zuora_timestamp(updated_at)
    return {**_new_workflow(workflow_id, zuora_timestamp(FIRST_UPDATE)), **fields, "updatedAt": stamp}
