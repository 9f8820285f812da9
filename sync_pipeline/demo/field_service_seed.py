"""CHR's side of the field-service syncs for the demo and the tests: its accounts, contacts and work orders
tables, filled with consistent made-up data, and the packaged declaration pointed at a local Praxedo."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg
import sqlalchemy as sa

from sync_pipeline.demo.packaged import merged, packaged_definitions, packaged_settings
from sync_pipeline.demo.seed import create_source_table
from sync_pipeline.engine.tables import DateTime2
from sync_pipeline.settings import parse_settings
from sync_pipeline.specs.sync import SyncSpec

SYNC = "field_service"
PRAXEDO_USER = "chr-sync"
"""The web-service user of the packaged settings."""
CREATED_ON = dt.datetime(2026, 11, 30, 9, 0)
"""When CHR last modified the made-up work orders (naive UTC, as CHR's DATETIME2 columns hold it)."""
STATUS_COLUMNS = (("Status", sa.Unicode(20)), ("CompletedOn", DateTime2))
"""CHR's work-order columns the sync back from Praxedo writes; the push to Praxedo does not read them."""
_CITIES = (("Lyon", "69002", "FR"), ("Lille", "59000", "FR"), ("Gent", "9000", "BE"), ("Nantes", "44000", "FR"))


@dataclass(frozen=True)
class ChrData:
    """How much CHR data to make: accounts, each with `contacts` and `work_orders`, and contacts whose account
    CHR does not have (yet): their reference dangles, so they are held back."""

    accounts: int
    contacts: int = 2
    work_orders: int = 3
    dangling_contacts: int = 0


def account_id(number: int) -> str:
    """The CHR id of account `number`."""
    return f"ACC-{number:05d}"


def chr_rows(data: ChrData) -> dict[str, list[dict[str, Any]]]:
    """The rows of each CHR table by entity name, the same on every machine."""
    accounts, contacts, orders = [], [], []
    for number in range(1, data.accounts + 1):
        city, postal_code, country = _CITIES[number % len(_CITIES)]
        accounts.append(
            {
                "AccountId": account_id(number),
                "Name": f"Customer {number} SARL",
                "Street": f"{number} rue de la Gare",
                "PostalCode": postal_code,
                "City": city,
                "Country": country,
                "Phone": f"+33 4 72 00 {number % 100:02d} {number % 97:02d}",
            }
        )
        for index in range(data.contacts):
            contacts.append(_contact(f"CON-{number:05d}-{index + 1}", account_id(number), index))
        for index in range(data.work_orders):
            orders.append(
                {
                    "WorkOrderId": f"WO-{number:05d}-{index + 1}",
                    "AccountId": account_id(number),
                    "Title": f"Boiler maintenance {index + 1}",
                    "Description": "Yearly check of the boiler and its safety valve",
                    "Priority": 1 + (number + index) % 3,
                    "RequestedFor": dt.datetime(2026, 12, 2 + index, 8, 0),
                    "ModifiedOn": CREATED_ON,
                    "Status": "Open",
                }
            )
    for index in range(data.dangling_contacts):
        contacts.append(_contact(f"CON-LATE-{index + 1}", account_id(data.accounts + 1 + index), 0))
    return {"Accounts": accounts, "Contacts": contacts, "WorkOrders": orders}


def _contact(contact_id: str, account: str, index: int) -> dict[str, Any]:
    return {
        "ContactId": contact_id,
        "AccountId": account,
        "FirstName": ("Claire", "Jonas", "Amira")[index % 3],
        "LastName": ("Martin", "Peeters", "Haddad")[index % 3],
        "Email": f"{contact_id.lower()}@example.com",
        "Phone": None,
    }


def seed_chr(engine: sa.Engine, sync: SyncSpec, settings: Mapping[str, Any], data: ChrData) -> dict[str, int]:
    """Create CHR's tables as the settings name them and fill them; the rows made per entity."""
    parsed = parse_settings(dict(settings), "field-service settings", sync)
    made = {}
    for name, rows in chr_rows(data).items():
        extra = STATUS_COLUMNS if name == "WorkOrders" else ()
        table = create_source_table(engine, sync.entity(name), parsed.entities[name], extra)
        with engine.begin() as conn:
            if rows:
                conn.execute(sa.insert(table), rows)
        made[name] = len(rows)
    return made


def field_service_settings(praxedo_base_url: str, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The packaged settings with Praxedo at `praxedo_base_url` (a local simulator), `changes` laid over them."""
    return merged(packaged_settings(SYNC, {"api": {"base_url": praxedo_base_url}}), changes or {})


def field_service_definitions(settings: Mapping[str, Any]) -> dg.Definitions:
    """The packaged field-service syncs' definitions under these settings."""
    return packaged_definitions(SYNC, settings)
