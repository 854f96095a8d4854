"""The dashboard's registry pages without a browser: register a job's model, promote a version
to an alias, see names, versions and aliases; refusals; another tenant's names stay unseen."""

from __future__ import annotations

from flask.testing import FlaskClient

from core.db import Database
from tests.conftest import auth
from tests.unit.test_api import small_spec
from tests.unit.test_dashboard import sign_in
from worker.jobs import run_job


def trained_job(client: FlaskClient, database: Database, tenant: str = "alice") -> str:
    job = client.post("/v1/jobs", json=small_spec(), headers=auth(tenant)).get_json()["id"]
    assert run_job(database, job) == "succeeded"
    return str(job)


def test_register_from_the_job_page_and_promote(client: FlaskClient, database: Database) -> None:
    first, second = trained_job(client, database), trained_job(client, database)
    token = sign_in(client)
    page = client.get(f"/ui/jobs/{first}").get_data(as_text=True)
    assert 'id="register-form"' in page and "registered-as" not in page

    done = client.post(
        f"/ui/jobs/{first}/register",
        data={"name": "churn", "alias": "production", "csrf_token": token},
    )
    assert done.status_code == 303 and done.headers["Location"].endswith("/ui/registry#model-churn")
    client.post(f"/ui/jobs/{second}/register", data={"name": "churn", "csrf_token": token})
    assert "churn v1</a> (production)" in client.get(f"/ui/jobs/{first}").get_data(as_text=True)

    api = client.get("/v1/registered-models/churn", headers=auth("alice")).get_json()
    assert api["latest_version"] == 2 and api["aliases"] == [{"alias": "production", "version": 1}]
    registry = client.get("/ui/registry").get_data(as_text=True)
    assert 'data-name="churn"' in registry and "production → v1" in registry

    moved = client.post(
        "/ui/registry/churn/alias",
        data={"alias": "production", "version": "2", "csrf_token": token},
    )
    assert moved.status_code == 303
    assert "production → v2" in client.get("/ui/registry").get_data(as_text=True)
    history = client.get("/v1/registered-models/churn/history", headers=auth("alice")).get_json()
    assert history["items"][0]["details"] == {"alias": "production", "version": 2, "previous": 1}
    assert history["items"][0]["key_prefix"] == "key-alic"  # the key signed in with


def test_registry_pages_refuse_bad_input_and_need_csrf(
    client: FlaskClient, database: Database
) -> None:
    job = trained_job(client, database)
    token = sign_in(client)
    bad = client.post(f"/ui/jobs/{job}/register", data={"name": "a/b", "csrf_token": token})
    assert bad.status_code == 422 and "name" in bad.get_data(as_text=True)
    assert client.post(f"/ui/jobs/{job}/register", data={"name": "ok"}).status_code == 403
    client.post(f"/ui/jobs/{job}/register", data={"name": "ok", "csrf_token": token})
    nowhere = client.post(
        "/ui/registry/ok/alias", data={"alias": "production", "version": "7", "csrf_token": token}
    )
    assert nowhere.status_code == 422 and "no version 7" in nowhere.get_data(as_text=True)
    assert "data-alias=" not in client.get("/ui/registry").get_data(as_text=True)


def test_another_tenants_names_are_not_shown(client: FlaskClient, database: Database) -> None:
    job = trained_job(client, database, "bob")
    client.post("/v1/registered-models", json={"name": "bobs"}, headers=auth("bob"))
    token = sign_in(client)
    assert "bobs" not in client.get("/ui/registry").get_data(as_text=True)
    refused = client.post(f"/ui/jobs/{job}/register", data={"name": "x", "csrf_token": token})
    assert refused.status_code == 404
    assert (
        client.post(
            "/ui/registry/bobs/alias", data={"alias": "a", "version": "1", "csrf_token": token}
        ).status_code
        == 404
    )
