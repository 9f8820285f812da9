"""Zuora customers are data: secrets encrypted at rest, every active customer checked before any call."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from sync_pipeline.connectors.zuora.customers import (
    CustomerCredentials,
    CustomerProblem,
    SecretBox,
    active_customers,
    checked_customer,
    customers_metadata,
    customers_table,
)
from sync_pipeline.engine.sources.sql_table import SourceUnavailable

KEY_VAR = "ZUORA_SECRET_KEY"
SECRET = "s3cr3t-Value_0123"


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(Fernet.generate_key().decode(), KEY_VAR)


def customer(box: SecretBox, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "CustomerId": "acme",
        "Name": "Acme",
        "ClientId": "3f1c2b7a-9d4e-4c1b-8a2f-0e5d6c7b8a91",
        "ClientSecretEncrypted": box.encrypt(SECRET),
        "BaseUrl": "https://rest.apisandbox.zuora.com/",
        "Active": True,
    }
    return {**row, **changes}


def test_a_complete_customer_on_a_zuora_host_is_ready_and_its_environment_is_known(box: SecretBox) -> None:
    checked = checked_customer(customer(box), box)
    assert isinstance(checked, CustomerCredentials)
    assert checked.client_secret == SECRET
    assert (checked.environment, checked.data_center) == ("sandbox", "US API Sandbox (Cloud 2)")
    assert checked.token_url == "https://rest.apisandbox.zuora.com/oauth/token"
    assert SECRET not in repr(checked)
    production = checked_customer(customer(box, BaseUrl="https://rest.eu.zuora.com"), box)
    assert isinstance(production, CustomerCredentials) and production.environment == "production"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"ClientId": None}, "client_id: is missing"),
        ({"ClientId": "a b"}, "client_id: must be 8 to 64 letters"),
        ({"ClientSecretEncrypted": ""}, "client_secret: is missing"),
        (
            {"ClientSecretEncrypted": "gAAAA-not-a-token"},
            "client_secret: cannot be decrypted with the key in ZUORA_SECRET_KEY",
        ),
        ({"BaseUrl": "http://rest.zuora.com"}, "base_url: 'http://rest.zuora.com' must use https"),
        (
            {"BaseUrl": "https://rest.zuora.example.com"},
            "base_url: 'rest.zuora.example.com' is not one of Zuora's API hosts",
        ),
        ({"BaseUrl": "https://rest.zuora.com/v1"}, "base_url: must be only https://<host>"),
        ({"BaseUrl": None}, "base_url: is missing"),
    ],
)
def test_a_bad_customer_is_reported_by_what_is_wrong_never_with_its_secret(
    box: SecretBox, changes: dict[str, Any], reason: str
) -> None:
    checked = checked_customer(customer(box, **changes), box)
    assert isinstance(checked, CustomerProblem)
    assert reason in checked.describe()
    assert checked.describe().startswith("customer acme: ")
    assert SECRET not in checked.describe()


def test_every_problem_of_a_customer_is_listed_at_once(box: SecretBox) -> None:
    checked = checked_customer(customer(box, ClientId="", BaseUrl="ftp://x", ClientSecretEncrypted=None), box)
    assert isinstance(checked, CustomerProblem) and len(checked.reasons) == 3


def test_a_secret_encrypted_with_another_key_is_refused_naming_the_key_variable(box: SecretBox) -> None:
    other = SecretBox(Fernet.generate_key().decode(), KEY_VAR)
    checked = checked_customer(customer(box, ClientSecretEncrypted=other.encrypt(SECRET)), box)
    assert isinstance(checked, CustomerProblem)
    assert checked.reasons == (
        "client_secret: cannot be decrypted with the key in ZUORA_SECRET_KEY (another key, or not a Fernet token)",
    )


def test_a_key_that_is_not_a_fernet_key_is_refused_naming_its_variable() -> None:
    with pytest.raises(ValueError, match="ZUORA_SECRET_KEY: not a Fernet key"):
        SecretBox("too-short", KEY_VAR)


def test_the_local_simulator_is_accepted_over_http_only_on_the_loopback_interface(box: SecretBox) -> None:
    local = checked_customer(customer(box, BaseUrl="http://127.0.0.1:8123"), box, simulator="127.0.0.1:8123")
    assert isinstance(local, CustomerCredentials) and local.environment == "sandbox"
    elsewhere = checked_customer(customer(box, BaseUrl="http://10.0.0.5:8123"), box, simulator="10.0.0.5:8123")
    assert isinstance(elsewhere, CustomerProblem) and "loopback" in elsewhere.describe()
    unnamed = checked_customer(customer(box, BaseUrl="http://127.0.0.1:8123"), box)
    assert isinstance(unnamed, CustomerProblem) and "must use https" in unnamed.describe()


def test_only_active_customers_are_read_each_checked_and_the_secret_is_stored_encrypted(
    box: SecretBox, tmp_path: Path
) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    customers_metadata.create_all(engine)
    now = dt.datetime(2026, 12, 1)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(customers_table),
            [
                {**customer(box, CustomerId="acme"), "ModifiedOn": now},
                {**customer(box, CustomerId="beta", BaseUrl="https://nowhere.example"), "ModifiedOn": now},
                {**customer(box, CustomerId="gone", Active=False), "ModifiedOn": now},
            ],
        )
        stored = conn.execute(sa.select(customers_table.c.ClientSecretEncrypted)).scalars().all()
    assert all(SECRET not in token for token in stored)
    checked = list(active_customers(engine, box))
    assert [c.customer_id for c in checked] == ["acme", "beta"]
    assert isinstance(checked[0], CustomerCredentials) and isinstance(checked[1], CustomerProblem)
    engine.dispose()


def test_a_customers_table_that_cannot_be_read_is_named(box: SecretBox) -> None:
    with pytest.raises(SourceUnavailable, match="cannot read ZUORA_CUSTOMER"):
        list(active_customers(sa.create_engine("sqlite://"), box))
