"""The Praxedo client resource: the engine's creates, updates and reads sent as Praxedo's operations.

The per-record sink calls `request("POST", <base>/<Manager>, record)` to create and
`request("PUT", <base>/<Manager>/<id>, record)` to update; an HTTP source pages a search with
`request("GET", <base>/<Manager>?<constraints>&firstResultIndex=&batchSize=)`. This client sends the
manager's create operation with the record as a list of one, its update operation with the record, or
its search operation (`connectors/praxedo/operations.py`), through one `Transport` (keep-alive session, HTTP Basic,
deadline, rate limit, redaction), and answers with the HTTP status the result code stands for and
`{id, resultCode, message}`, so the sink's retries, refusals, 409 adoption and SchedulerLog rows work as
for any REST receiver. A status that is not 200 (401, 429, 5xx, a SOAP fault) is passed through as it came.
"""

from __future__ import annotations

import json

from pydantic import Field

from sync_pipeline.connectors.praxedo.operations import operation_call, operation_result, search_result
from sync_pipeline.engine.http.api import ApiCallFailed, ApiResponse
from sync_pipeline.engine.http.auth import Auth, BasicCredentials, is_header_value
from sync_pipeline.resources.api_client import TransportApiClient


class PraxedoApiClient(TransportApiClient):
    """Creates and updates Praxedo records through its managers' operations, one transport per run."""

    username: str = Field(description="The Praxedo web-service user (not a secret).")
    password: str = Field(
        description=(
            "The web-service user's password. Always `{env: PRAXEDO_PASSWORD}` (or the variable the settings "
            "name), read when the run starts; never paste it in the launchpad."
        ),
    )
    password_env_var: str = Field(default="PRAXEDO_PASSWORD", description="Where `password` comes from.")

    def post_batch(self, url: str, body: bytes, idempotency_key: str) -> ApiResponse:
        """Not Praxedo's way: its records go one call each (settings refuse a batch sink for it at load)."""
        raise ApiCallFailed(f"POST {url}: Praxedo records are created one by one (sink kind http_records)")

    def request(self, method: str, url: str, body: bytes | None, idempotency_key: str | None = None) -> ApiResponse:
        """A create (POST to the manager), an update (PUT or PATCH to the manager and an id) or a search (GET
        of the manager) as the manager's operation; its result read back as an HTTP status (see the module's
        docstring)."""
        call = operation_call(method, url, body)
        answer = self.transport_client().request("POST", call.url, json.dumps(call.request).encode())
        if answer.status_code != 200:
            return answer
        if method == "GET":
            return search_result(answer, call.operation)
        return operation_result(answer, call.record_id, call.operation)

    def _auth(self) -> Auth:
        if not is_header_value(self.password):
            raise ValueError(
                "password: not usable in an HTTP header (whitespace around it, a line break or another control "
                f"character); check the {self.password_env_var} environment variable"
            )
        return BasicCredentials(self.username, self.password)
