"""Run config of the sync assets and of the dry-run job's previews: which records a run selects.

The defaults are the nightly run (everything not tracked yet). An operator's resend is refused
without confirmation, except in a preview, which never sends. Launchpad / `dg launch --config-json`
example for one asset:

    ops:
      actual_org:
        config: {resend: ids, ids: ["3f2b…"], confirm: "resend actual_org"}
"""

import datetime as dt
from typing import Literal

import dagster as dg
from pydantic import Field

from sync_pipeline.engine.audit.log_queries import utc_naive
from sync_pipeline.engine.mapping.entity_ids import InvalidEntityId, canonical_entity_id
from sync_pipeline.engine.state.selection import SEND_UNTRACKED, Selection
from sync_pipeline.specs.model import EntitySpec, StateKind


class SyncRunConfig(dg.Config):
    """Which records one run of a sync asset (or its preview) selects; by default, what is not tracked yet."""

    resend: Literal["none", "all", "ids", "tracked_before"] = Field(
        default="none",
        description="Send again regardless of tracking: every record, only `ids`, or records tracked "
        "before `tracked_before`. Tracking rows of what is delivered are refreshed.",
    )
    ids: list[str] = Field(default_factory=list, description="EntityIds to resend, with resend: ids.")
    tracked_before: str | None = Field(
        default=None, description="ISO timestamp (UTC unless it has an offset), with resend: tracked_before."
    )
    confirm: str = Field(default="", description="'resend <asset name>' for a real resend (a preview needs none).")


def selection_from(config: SyncRunConfig, spec: EntitySpec, key_column: str, preview: bool = False) -> Selection:
    """The records this run sends (or previews); raises `dg.Failure`, sending nothing, for a bad resend
    or for a real resend without its confirmation."""
    if config.resend == "none":
        if config.ids or config.tracked_before:
            raise dg.Failure(description="ids and tracked_before only apply with resend: ids / tracked_before")
        return SEND_UNTRACKED
    if spec.state is not StateKind.NEVER_SENT:
        raise dg.Failure(
            description=f"resend: {config.resend} applies to entities sent once (state never_sent); "
            f"{spec.asset_name} keeps state {spec.state.value}: a changed record is sent on its own",
            allow_retries=False,
        )
    expected = f"resend {spec.asset_name}"
    if not preview and config.confirm != expected:
        raise dg.Failure(
            description=f"resend: {config.resend} sends records again regardless of tracking; "
            f"refused without confirm: '{expected}' (got {config.confirm!r})",
            allow_retries=False,
        )
    if config.resend == "ids":
        if not config.ids:
            raise dg.Failure(description="resend: ids needs a non-empty ids list", allow_retries=False)
        key_type = spec.field(key_column).type
        try:
            ids = frozenset(canonical_entity_id(value, key_type) for value in config.ids)
        except InvalidEntityId as exc:
            raise dg.Failure(description=f"ids: {exc}", allow_retries=False) from None
        return Selection(resend="ids", ids=ids)
    if config.resend == "tracked_before":
        try:
            when = dt.datetime.fromisoformat(str(config.tracked_before))
        except ValueError:
            raise dg.Failure(
                description=f"tracked_before: {config.tracked_before!r} is not an ISO timestamp, "
                "e.g. '2026-11-01T00:00:00'",
                allow_retries=False,
            ) from None
        return Selection(resend="tracked_before", tracked_before=utc_naive(when))
    return Selection(resend="all")
