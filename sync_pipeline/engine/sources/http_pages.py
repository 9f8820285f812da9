"""Reading an entity's records from a paginated JSON API, page by page, as `read_pages` reads a table.

The paginator is data (`Pagination`): page numbers, offsets or a next link (a URL or a cursor token)
found in the body. Every page is one call through the retry loop, each attempt reported to the
caller's hook. A page shorter than the page size ends a page-number or offset read, so a full last
page costs one more request, answered empty (a page increment that never stops is airbyte#28226),
unless the body says whether more follow (`more_path`, Praxedo's result code);
an API that answers the same records again, a next link already followed, or more pages than
`max_pages` stops the read with `SourceUnavailable` instead of looping.

Each JSON object becomes a row in the entity's field order, typed as a driver would return it:
JSON carries text, numbers and booleans, so only DATETIME (ISO-8601 text) and DECIMAL written as
text are converted. An item that is not an object, or a value that cannot be converted, is an
`UnreadableRow`; an object without its key counts as a NULL key. The other rows go on.

Records come in the API's order, not key order: batching catches copies of an ID only when they
are neighbours.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import orjson

from sync_pipeline.engine.columns import values_of
from sync_pipeline.engine.http.api import ApiResponse
from sync_pipeline.engine.http.retry import Attempt, RetryPolicy, call_with_retries
from sync_pipeline.engine.sources.sql_table import SourcePage, SourceRefused, SourceUnavailable, UnreadableRow
from sync_pipeline.specs.model import Field, FieldType, Pagination

SHOWN_VALUE_LENGTH = 40
"""Characters of a value that cannot be converted quoted in its reason: enough to see it, no dump."""


class HttpPagesSource:
    """One entity's records read from a paginated GET endpoint as `SourcePage`s, in the fields' order.

    `get` makes one attempt (raising `ApiCallFailed`/`ApiUnreachable` without an answer); every page
    goes through `call_with_retries` with `retry`, and `on_attempt` sees each attempt.
    """

    def __init__(
        self,
        url: str,
        pagination: Pagination,
        fields: Sequence[Field],
        key_field: str,
        get: Callable[[str], ApiResponse],
        on_attempt: Callable[[Attempt], None],
        params: Mapping[str, str] | None = None,
        since: tuple[str, str] | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        too_many: tuple[str, object] | None = None,
        key_param: str | None = None,
    ) -> None:
        names = [field.name for field in fields]
        if key_field not in names:
            raise ValueError(f"key field {key_field!r} is not one of the fields {', '.join(names)}")
        self._url = url
        self._pagination = pagination
        self._key_field = key_field
        self._get = get
        self._on_attempt = on_attempt
        self._params = dict(params or {})
        """Sent on every request: the fixed parameters and the since filter."""
        if since is not None:
            since_param, since_value = since
            self._params[since_param] = since_value
        self._fields = tuple(fields)
        self._fixed = dict(params or {})
        self._key_param = key_param
        """Where `by_keys` sends the keys it reads, comma-separated (None: the API reads no record by key)."""
        self._too_many = too_many
        """(path, value): an answer holding it says the query matches more than the API pages through."""
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._names = names
        self._key_position = names.index(key_field)
        self._converters = [
            (index, field.name, convert)
            for index, field in enumerate(fields)
            if (convert := _CONVERTERS.get(field.type)) is not None
        ]
        """The fields whose JSON values are converted, by position: the others go as found."""
        self._total: object = None
        self._total_seen = False

    def describe(self) -> str:
        """What this source reads, for logs: `GET <url> (<style>, <n> per page)`."""
        return f"GET {self._url} ({self._pagination.style}, {self._pagination.page_size} per page)"

    def count(self) -> int | None:
        """The total the API gives at `pagination.total_path` on its first page; None without one.

        Read from the first page `pages()` fetched, or else by one GET of it (with the since filter).
        """
        path = self._pagination.total_path
        if path is None:
            return None
        if not self._total_seen:
            self._see_total(self._fetch(self._page_url(0, None)))
        total = self._total
        if total is None:
            return None
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise SourceRefused(
                f"GET {self._url}: pagination.total_path {path!r} holds {_shown(total)}, not a count of records"
            )
        return total

    @property
    def page_size(self) -> int:
        """Records a full page holds."""
        return self._pagination.page_size

    @property
    def reads_by_key(self) -> bool:
        """Whether the API is asked for records by key (`source.key_param`)."""
        return self._key_param is not None

    def by_keys(self, entity_ids: Sequence[str]) -> Iterator[SourcePage]:
        """The records of these EntityIds, a page size of keys per read (`key_param=k1,k2,…`), whatever the
        mark; raises `SourceRefused` when the API reads no record by key."""
        if self._key_param is None:
            raise SourceRefused(
                f"GET {self._url}: no source.key_param, so the records of the retry queue cannot be read"
            )
        size = self._pagination.page_size
        for start in range(0, len(entity_ids), size):
            chosen = {**self._fixed, self._key_param: ",".join(entity_ids[start : start + size])}
            keyed = HttpPagesSource(
                self._url,
                self._pagination,
                self._fields,
                self._key_field,
                self._get,
                self._on_attempt,
                params=chosen,
                retry=self._retry,
                sleep=self._sleep,
                too_many=self._too_many,
                key_param=self._key_param,
            )
            yield from keyed.pages()

    def pages(self) -> Iterator[SourcePage]:
        """Yield each page's rows, unreadable items and objects without a key, until the last page."""
        pagination = self._pagination
        url: str | None = self._page_url(0, None)
        followed: set[str] = set()
        previous: list[Any] | None = None
        requests = 0
        while url is not None:
            if requests == pagination.max_pages:
                raise SourceRefused(
                    f"GET {self._url}: more than pagination.max_pages ({pagination.max_pages}) pages; "
                    f"stopped before {url}"
                )
            followed.add(url)
            body = self._fetch(url)
            requests += 1
            if self._too_many is not None and _at_path(body, self._too_many[0]) == self._too_many[1]:
                raise TooManyResults(f"GET {url}: the API answered that the query matches more results than it pages")
            if requests == 1:
                self._see_total(body)
            items = self._records(body, url)
            if items and items == previous:
                raise SourceRefused(
                    f"GET {url} answered the same {len(items)} records as the page before: the API ignores "
                    f"{pagination.advanced_by}; stopped instead of reading them again"
                )
            previous = items
            if items:
                yield self._page(items, requests)
            url = self._next_url(url, body, requests, len(items))
            if url is not None and url in followed:
                raise SourceRefused(
                    f"GET {self._url}: the next link {url} was already followed; stopped instead of paging in a loop"
                )

    def _page_url(self, done: int, cursor: str | None) -> str:
        """The request URL after `done` pages: the fixed parameters, the size, and the style's position."""
        pagination = self._pagination
        params = dict(self._params)
        if pagination.size_param:
            params[pagination.size_param] = str(pagination.page_size)
        if pagination.style == "page_number":
            params[pagination.page_param] = str(pagination.first_page + done)
        elif pagination.style == "offset":
            params[pagination.offset_param] = str(done * pagination.page_size)
        elif cursor is not None and pagination.cursor_param:
            params[pagination.cursor_param] = cursor
        return _with_params(self._url, params, replace=True)

    def _next_url(self, url: str, body: object, done: int, found: int) -> str | None:
        """The next page's URL, or None after the last page."""
        pagination = self._pagination
        if pagination.more_path is not None:
            more = found > 0 and _at_path(body, pagination.more_path) == pagination.more_value
            return self._page_url(done, None) if more else None
        if pagination.style != "next_link":
            return self._page_url(done, None) if found >= pagination.page_size else None
        link = _at_path(body, pagination.next_path)
        if link is None or link == "":
            return None
        if pagination.cursor_param and isinstance(link, str | int) and not isinstance(link, bool):
            return self._page_url(done, str(link))
        if not isinstance(link, str):
            raise SourceRefused(
                f"GET {url}: pagination.next_path {pagination.next_path!r} holds a JSON {_json_kind(link)}, "
                f"not {'a cursor' if pagination.cursor_param else 'a link'}"
            )
        # The API's link carries its own query; parameters it lacks (the since filter) are added.
        return _with_params(urllib.parse.urljoin(url, link), self._params, replace=False)

    def _fetch(self, url: str) -> object:
        return fetch_json(url, self._get, self._retry, self._on_attempt, self._sleep)

    def _see_total(self, body: object) -> None:
        if self._pagination.total_path is not None:
            self._total = _at_path(body, self._pagination.total_path)
        self._total_seen = True

    def _records(self, body: object, url: str) -> list[Any]:
        items = _at_path(body, self._pagination.records_path)
        if not isinstance(items, list):
            path = self._pagination.records_path
            where = f"pagination.records_path {path!r}" if path else "the body (pagination.records_path '')"
            found = "nothing" if items is None else f"a JSON {_json_kind(items)}"
            raise SourceRefused(f"GET {url}: no list of records at {where}, {found} instead")
        return items

    def _page(self, items: Sequence[Any], number: int) -> SourcePage:
        """The page's rows, a column at a time when every item is an object with its key and every value
        converts (the usual page: one pass in C per field); else item by item, each problem kept."""
        columns = self._columns(items)
        if columns is not None:
            return SourcePage(list(map(list, zip(*columns, strict=True))))
        return self._page_item_by_item(items, number)

    def _columns(self, items: Sequence[Any]) -> list[list[Any]] | None:
        """The items' values field by field, converted; None if an item is not an object, lacks its key or
        holds a value that does not convert (and `_page_item_by_item` says which)."""
        if set(map(type, items)) != {dict}:
            return None
        columns = [values_of(items, name) for name in self._names]
        if None in columns[self._key_position]:
            return None
        for index, _, convert in self._converters:
            values = columns[index]
            texts = _TEXTS_CONVERTERS.get(convert)
            try:
                if texts is not None and set(map(type, values)) == {str}:
                    columns[index] = list(map(texts, values))
                else:
                    columns[index] = [value if value is None else convert(value) for value in values]
            except ValueError:
                return None
        return columns

    def _page_item_by_item(self, items: Sequence[Any], number: int) -> SourcePage:
        rows: list[list[Any]] = []
        unreadable: list[UnreadableRow] = []
        null_keys = 0
        for position, item in enumerate(items, start=1):
            if not isinstance(item, dict):
                reason = f"item {position} of page {number} is a JSON {_json_kind(item)}, not an object"
                unreadable.append(UnreadableRow(None, reason))
                continue
            key = item.get(self._key_field)
            if key is None:
                null_keys += 1
                continue
            row = [item.get(name) for name in self._names]
            for index, name, convert in self._converters:
                if row[index] is None:
                    continue
                try:
                    row[index] = convert(row[index])
                except ValueError as exc:
                    unreadable.append(UnreadableRow(key, f"field {name}: {exc}"))
                    break
            else:
                rows.append(row)
        return SourcePage(rows, unreadable, null_keys)


class TooManyResults(SourceRefused):
    """The API answered that the query matches more results than it pages through: narrow the query."""


class NotFound(SourceRefused):
    """The API answered 404: what was asked for is not there (a deleted record's detail, say)."""


NOT_FOUND = 404


def fetch_json(
    url: str,
    get: Callable[[str], ApiResponse],
    retry: RetryPolicy,
    on_attempt: Callable[[Attempt], None],
    sleep: Callable[[float], None],
) -> object:
    """The JSON body of a 2xx answer to `GET url`, after retries; otherwise `SourceUnavailable` (no answer,
    or a transient status after the last retry), `NotFound` (404) or `SourceRefused` (any other status, a
    body not JSON)."""
    last = call_with_retries(lambda: get(url), retry, on_attempt, sleep)
    tries = f"{last.number} attempt{'s' if last.number > 1 else ''}"
    response = last.response
    if response is None:
        raise SourceUnavailable(f"GET {url}: no answer after {tries}: {last.failure}")
    if not response.is_2xx:
        refused = NotFound if response.status_code == NOT_FOUND else SourceRefused
        raise (SourceUnavailable if last.transient else refused)(
            f"GET {url} answered HTTP {response.status_code} after {tries}: {response.body_excerpt}"
        )
    try:
        body: object = _json(response.body)
    except ValueError:
        raise SourceRefused(
            f"GET {url} answered HTTP {response.status_code} with a body that is not JSON: {response.body_excerpt}"
        ) from None
    return body


def _json(text: str) -> object:
    """The JSON value of `text`: by orjson, twice as fast on a page of records; by the standard library for
    what orjson refuses and it reads (NaN, integers past 64 bits, lone surrogates), so no answer reads
    differently."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _datetime(value: object) -> object:
    """ISO-8601 text as a datetime ('Z' is UTC), as a driver returns a DATETIME column."""
    if not isinstance(value, str):
        raise ValueError(f"expected ISO-8601 text, got a JSON {_json_kind(value)}")
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{_shown(value)} is not an ISO-8601 date-time") from None


def _decimal(value: object) -> object:
    """A decimal written as text (to keep its digits) as a Decimal; a JSON number stays as it is."""
    if not isinstance(value, str):
        return value
    try:
        number = decimal.Decimal(value)
    except decimal.InvalidOperation:
        raise ValueError(f"{_shown(value)} is not a decimal number") from None
    if not number.is_finite():
        raise ValueError(f"{_shown(value)} is not a finite number")
    return number


_CONVERTERS: dict[FieldType, Callable[[object], object]] = {FieldType.DATETIME: _datetime, FieldType.DECIMAL: _decimal}
"""The types JSON cannot carry; the others go as found, for the model to check."""

_TEXTS_CONVERTERS: dict[Callable[[object], object], Callable[[str], object]] = {_datetime: dt.datetime.fromisoformat}
"""What a converter does to a text, without its checks, where that is one call in C: for a column of
texts only, whose first value that does not convert raises ValueError (then the page is read again
item by item, with the reason)."""


def _at_path(body: object, path: str) -> object:
    """The value at a dotted path of JSON objects ("" is the body itself); None where there is none."""
    found = body
    for part in filter(None, path.split(".")):
        found = found.get(part) if isinstance(found, dict) else None
    return found


def _with_params(url: str, params: Mapping[str, str], replace: bool) -> str:
    """`url` with `params` in its query: replacing the ones it has, or only adding the ones it lacks."""
    parts = urllib.parse.urlsplit(url)
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    present = {name for name, _ in pairs}
    if replace:
        pairs = [(name, value) for name, value in pairs if name not in params] + list(params.items())
    elif present.issuperset(params):
        return url  # the API's own link, exactly as it wrote it
    else:
        pairs += [(name, value) for name, value in params.items() if name not in present]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(pairs)))


def _json_kind(value: object) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "boolean"
    return "null" if value is None else "number"


def _shown(value: object) -> str:
    """The value quoted, cut to a few characters: the reason says what is wrong, not the whole payload."""
    text = repr(value)
    return text if len(text) <= SHOWN_VALUE_LENGTH else f"{text[: SHOWN_VALUE_LENGTH - 3]}..."
