"""The model registry and the Open Inference Protocol through HTTP, against a real worker (SQLite
and PostgreSQL): register, alias, predict by name, move an alias, history, tenants; the V2 routes
driven by the official `tritonclient.http` client and by hand for the bad-input cases."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from werkzeug.serving import make_server

from service.app import create_app
from tests.conftest import auth
from tests.integration.conftest import Stack, submit
from tests.support import KEYS, TINY_SPEC, wait_for_job

pytestmark = pytest.mark.integration
ALICE, BOB = auth("alice"), auth("bob")
ROWS = [[0.0, 0.5], [1.0, -0.5], [2.0, 0.3]]
REGRESSION = {
    **TINY_SPEC,
    "dataset": {"builtin": "make_regression", "params": {"n_samples": 80, "n_features": 3}},
    "layers": [{"type": "dense", "units": 4, "activation": "relu"}, {"type": "dense", "units": 1}],
    "loss": "mse",
}


def trained(stack: Stack, spec: dict[str, Any] = TINY_SPEC) -> str:
    """Train `spec` on the real worker as alice; the model id."""
    job = wait_for_job(stack.client, submit(stack, spec)["id"], ALICE)
    assert job["status"] == "succeeded", job["error"]
    model_id: str = job["model_id"]
    return model_id


@pytest.fixture(scope="module")
def models(stack: Stack) -> dict[str, str]:
    """Two classification models (seeds 1 and 2) and a regression one, trained once per stack."""
    return {
        "v1": trained(stack, {**TINY_SPEC, "seed": 1}),
        "v2": trained(stack, {**TINY_SPEC, "seed": 2}),
        "reg": trained(stack, REGRESSION),
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def call(stack: Stack, method: str, path: str, status: int, **kwargs: Any) -> Any:
    headers = kwargs.pop("headers", ALICE)
    response = stack.client.open(path, method=method, headers=headers, **kwargs)
    assert response.status_code == status, (method, path, response.get_json())
    return response.get_json() if response.data else None


def predict_direct(stack: Stack, model_id: str) -> dict[str, Any]:
    body: dict[str, Any] = call(
        stack, "POST", f"/v1/models/{model_id}/predict", 200, json={"instances": ROWS}
    )
    return body


def test_register_alias_predict_move_and_history(stack: Stack, models: dict[str, str]) -> None:
    name = unique("moons")
    base = f"/v1/registered-models/{name}"
    created = call(
        stack, "POST", "/v1/registered-models", 201, json={"name": name, "description": "first"}
    )
    assert created["name"] == name and created["latest_version"] is None
    call(stack, "POST", "/v1/registered-models", 409, json={"name": name})
    one = call(stack, "POST", f"{base}/versions", 201, json={"model_id": models["v1"]})
    two = call(stack, "POST", f"{base}/versions", 201, json={"model_id": models["v2"]})
    assert (one["version"], two["version"]) == (1, 2)
    call(stack, "PUT", f"{base}/aliases/production", 200, json={"version": 1})
    body = {"instances": ROWS}

    # By alias and by version: the very answer of the model's own predict route.
    by_alias = stack.client.post(f"{base}@production/predict", json=body, headers=ALICE)
    assert by_alias.status_code == 200 and by_alias.headers["X-Model-Version"] == "1"
    assert by_alias.get_json() == predict_direct(stack, models["v1"])
    by_version = call(stack, "POST", f"{base}/versions/2/predict", 200, json=body)
    assert by_version == predict_direct(stack, models["v2"])
    assert by_version["probabilities"] != by_alias.get_json()["probabilities"]

    # Moving the alias: the next prediction by alias is version 2's.
    moved = call(stack, "PUT", f"{base}/aliases/production", 200, json={"version": 2})
    assert moved["aliases"] == [{"alias": "production", "version": 2}]
    assert call(stack, "POST", f"{base}@production/predict", 200, json=body) == by_version

    # An alias's version cannot be deleted; another can, and its number is not given again.
    conflict = call(stack, "DELETE", f"{base}/versions/2", 409)
    assert "production" in conflict["error"]["message"]
    call(stack, "DELETE", f"{base}/versions/1", 204)
    three = call(stack, "POST", f"{base}/versions", 201, json={"model_id": models["v1"]})
    assert three["version"] == 3
    listed = call(stack, "GET", f"{base}/versions", 200)["items"]
    assert [(v["version"], v["aliases"]) for v in listed] == [(2, ["production"]), (3, [])]

    # Aliases pointing nowhere are refused, and nothing is half-changed.
    missing = call(stack, "PUT", f"{base}/aliases/staging", 422, json={"version": 1})
    assert "no version 1" in missing["error"]["message"]
    call(stack, "POST", f"{base}@staging/predict", 404, json=body)
    call(stack, "POST", f"{base}/versions/1/predict", 404, json=body)
    for huge in (2**31, 10**30):  # past a 32-bit column: no such version, not a database error
        call(stack, "POST", f"{base}/versions/{huge}/predict", 404, json=body)
        call(stack, "GET", f"{base}/versions/{huge}", 404)
        call(stack, "DELETE", f"{base}/versions/{huge}", 404)
    call(stack, "DELETE", f"{base}/aliases/staging", 404)
    call(stack, "PATCH", base, 200, json={"description": "second"})

    history = call(stack, "GET", f"{base}/history", 200)["items"]
    actions = [e["action"] for e in reversed(history)]
    assert actions == [
        "created",
        "version_added",
        "version_added",
        "alias_set",
        "alias_set",
        "version_deleted",
        "version_added",
        "updated",
    ]
    assert all(e["tenant"] == "alice" and e["key_prefix"] == KEYS["alice"][:8] for e in history)
    assert history[3]["details"] == {"alias": "production", "version": 2, "previous": 1}
    page = call(stack, "GET", f"{base}/history?limit=3", 200)
    assert [e["id"] for e in page["items"]] == [e["id"] for e in history[:3]]
    rest = call(stack, "GET", f"{base}/history?limit=10&cursor={page['next_cursor']}", 200)
    assert [e["id"] for e in rest["items"]] == [e["id"] for e in history[3:]]

    call(stack, "DELETE", base, 204)
    call(stack, "GET", base, 404)
    call(stack, "GET", f"{base}/history", 404)
    predict_direct(stack, models["v1"])  # the trained models stay


def test_names_are_per_tenant(stack: Stack, models: dict[str, str]) -> None:
    name = unique("private")
    base = f"/v1/registered-models/{name}"
    call(stack, "POST", "/v1/registered-models", 201, json={"name": name})
    call(stack, "POST", f"{base}/versions", 201, json={"model_id": models["v1"]})
    call(stack, "PUT", f"{base}/aliases/production", 200, json={"version": 1})
    for method, path in (
        ("GET", base),
        ("PATCH", base),
        ("GET", f"{base}/versions"),
        ("GET", f"{base}/history"),
        ("POST", f"{base}@production/predict"),
        ("POST", f"{base}/versions/1/predict"),
        ("PUT", f"{base}/aliases/staging"),
        ("DELETE", f"{base}/versions/1"),
        ("DELETE", base),
    ):
        bodies = {"POST": {"instances": ROWS}, "PATCH": {"description": "x"}, "PUT": {"version": 1}}
        body = bodies.get(method)
        if method in ("DELETE", "GET"):
            call(stack, method, path, 404, headers=BOB)
        else:
            call(stack, method, path, 404, headers=BOB, json=body)
    assert name not in [
        m["name"] for m in call(stack, "GET", "/v1/registered-models", 200, headers=BOB)["items"]
    ]
    # Bob may use the same name for his own; alice's model is not his to register.
    call(stack, "POST", "/v1/registered-models", 201, json={"name": name}, headers=BOB)
    call(stack, "POST", f"{base}/versions", 404, json={"model_id": models["v1"]}, headers=BOB)
    assert call(stack, "GET", f"{base}/versions", 200, headers=BOB)["items"] == []
    assert call(stack, "GET", f"{base}/versions", 200)["items"][0]["model_id"] == models["v1"]


def test_bad_names_and_bodies_are_refused_whole(stack: Stack, models: dict[str, str]) -> None:
    model_id_shaped = models["v1"]  # a name must not read as a model id in /v2/models/{name}
    for bad in ("a/b", "x" * 300, "", "has space", "at@sign", "-lead", model_id_shaped):
        call(stack, "POST", "/v1/registered-models", 422, json={"name": bad})
    call(stack, "GET", f"/v1/registered-models/{'x' * 300}", 422)
    call(stack, "POST", "/v1/registered-models", 422, json={"name": "ok", "extra": 1})
    call(stack, "POST", "/v1/registered-models", 422, json=["not", "an", "object"])
    call(stack, "POST", "/v1/registered-models", 415, data="name=x")
    name = unique("whole")
    base = f"/v1/registered-models/{name}"
    call(stack, "POST", "/v1/registered-models", 201, json={"name": name})
    call(stack, "POST", f"{base}/versions", 404, json={"model_id": "no-such-model"})
    call(stack, "POST", f"{base}/versions", 422, json={"model_id": 7})
    call(stack, "PUT", f"{base}/aliases/Bad%20Alias", 422, json={"version": 1})
    call(stack, "PUT", f"{base}/aliases/production", 422, json={"version": 0})
    # None of the refusals above left a version, an alias or a history entry behind.
    assert call(stack, "GET", f"{base}/versions", 200)["items"] == []
    assert call(stack, "GET", base, 200)["aliases"] == []
    assert [e["action"] for e in call(stack, "GET", f"{base}/history", 200)["items"]] == ["created"]
    one = call(stack, "POST", f"{base}/versions", 201, json={"model_id": models["v1"]})
    assert one["version"] == 1  # the refused registrations took no number


# --- The Open Inference Protocol -------------------------------------------------------------


@pytest.fixture(scope="module")
def server(stack: Stack) -> Iterator[str]:
    """The stack's API on a real port (tritonclient speaks HTTP, not Flask's test client)."""
    httpd = make_server("127.0.0.1", 0, create_app(stack.settings), threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join(5)


@pytest.fixture(scope="module")
def served(stack: Stack, models: dict[str, str]) -> str:
    """A registered model whose production alias is version 2 (seed 2); version 1 is seed 1."""
    name = unique("served")
    base = f"/v1/registered-models/{name}"
    call(stack, "POST", "/v1/registered-models", 201, json={"name": name})
    for key in ("v1", "v2"):
        call(stack, "POST", f"{base}/versions", 201, json={"model_id": models[key]})
    call(stack, "PUT", f"{base}/aliases/production", 200, json={"version": 2})
    return name


def test_v2_with_tritonclient(
    stack: Stack, server: str, served: str, models: dict[str, str]
) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    headers = {"Authorization": ALICE["Authorization"]}
    client = httpclient.InferenceServerClient(url=server)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.get_server_metadata(headers=headers)["name"] == "trainsvc"
        assert client.is_model_ready(served, headers=headers)
        assert client.is_model_ready(served, "1", headers=headers)
        meta = client.get_model_metadata(served, headers=headers)
        assert meta["versions"] == ["1", "2"]
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 2]}]
        assert [(o["name"], o["shape"]) for o in meta["outputs"]] == [
            ("probabilities", [-1, 2]),
            ("predictions", [-1]),
        ]

        rows = np.asarray(ROWS, dtype=np.float32)
        tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=False)
        wanted = [
            httpclient.InferRequestedOutput("probabilities", binary_data=False),
            httpclient.InferRequestedOutput("predictions", binary_data=False),
        ]
        for version, key in (("", "v2"), ("1", "v1")):
            result = client.infer(
                served,
                [tensor],
                model_version=version,
                outputs=wanted,
                request_id="r-42",
                headers=headers,
            )
            expected = predict_direct(stack, models[key])
            np.testing.assert_allclose(
                result.as_numpy("probabilities"), expected["probabilities"], atol=1e-6
            )
            assert result.as_numpy("predictions").tolist() == expected["predictions"]
            response = result.get_response()
            assert response["id"] == "r-42"
            assert response["model_version"] == (version or "2")

        # By model id, with no outputs named (all of them), and only one asked for.
        by_id = client.infer(models["v1"], [tensor], headers=headers)
        assert (
            by_id.as_numpy("predictions").tolist()
            == predict_direct(stack, models["v1"])["predictions"]
        )
        only = client.infer(served, [tensor], outputs=wanted[1:], headers=headers)
        assert [o["name"] for o in only.get_response()["outputs"]] == ["predictions"]

        with pytest.raises(InferenceServerException) as refused:
            client.get_model_metadata(served, headers=BOB)
        assert refused.value.status() == "404"
        with pytest.raises(InferenceServerException) as unauthorized:
            client.get_model_metadata(served)
        assert unauthorized.value.status() == "401"
        binary = httpclient.InferInput("input", list(rows.shape), "FP32")
        binary.set_data_from_numpy(rows, binary_data=True)
        with pytest.raises(InferenceServerException) as raw:
            client.infer(served, [binary], headers=headers)
        assert raw.value.status() == "400" and "binary" in raw.value.message()
    finally:
        client.close()


def test_v2_regression_metadata_and_infer(stack: Stack, models: dict[str, str]) -> None:
    model_id = models["reg"]
    meta = call(stack, "GET", f"/v2/models/{model_id}", 200)
    assert meta["outputs"] == [{"name": "predictions", "datatype": "FP32", "shape": [-1]}]
    assert "versions" not in meta and meta["platform"] == "trainsvc_numpy"
    rows = [[0.1, 0.2, 0.3], [1.0, -1.0, 0.5]]
    nested = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [2, 3], "data": rows}]}
    answer = call(stack, "POST", f"/v2/models/{model_id}/infer", 200, json=nested)
    assert "id" not in answer and "model_version" not in answer
    expected = call(stack, "POST", f"/v1/models/{model_id}/predict", 200, json={"instances": rows})
    assert answer["outputs"][0]["shape"] == [2]
    np.testing.assert_allclose(answer["outputs"][0]["data"], expected["predictions"], rtol=1e-6)


def infer_body(**tensor: Any) -> dict[str, Any]:
    given = {"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [0.1, 0.2], **tensor}
    return {"inputs": [given]}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (infer_body(shape=[1, 3], data=[0.1, 0.2, 0.3]), "not [rows, 2]"),
        (infer_body(shape=[2, 2]), "needs 4 numbers"),
        (infer_body(shape=[2]), "not [rows, 2]"),
        (infer_body(datatype="INT32", data=[1, 2]), "datatype 'INT32'"),
        (infer_body(datatype="BYTES", data=["a", "b"]), "datatype 'BYTES'"),
        (infer_body(data=["0.1", "0.2"]), "data[0]"),
        (infer_body(data=[0.1, True]), "data[1]"),
        (infer_body(data=[[0.1], [0.2, 0.3]]), "data"),
        ({"inputs": []}, "missing input 'input'"),
        ({"id": "1"}, "'inputs'"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}, "'x'"),
        ({**infer_body(), "outputs": [{"name": "logits"}]}, "unknown output 'logits'"),
        ({**infer_body(), "id": 5}, "'id'"),
        ([1, 2], "JSON object"),
    ],
)
def test_v2_bad_input_is_a_400_with_the_protocols_error(
    stack: Stack, served: str, body: Any, says: str
) -> None:
    answer = call(stack, "POST", f"/v2/models/{served}/infer", 400, json=body)
    assert list(answer) == ["error"] and says in answer["error"], answer


def test_v2_nan_unreadable_json_and_unknown_models(stack: Stack, served: str) -> None:
    nan = b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [NaN, 1]}]}'
    answer = call(stack, "POST", f"/v2/models/{served}/infer", 400, data=nan)
    assert "data[0]" in answer["error"] and "finite" in answer["error"]
    assert "error" in call(stack, "POST", f"/v2/models/{served}/infer", 400, data=b"{nope")
    for path in (
        "/v2/models/no-such-model",
        "/v2/models/no-such-model/ready",
        f"/v2/models/{served}/versions/9",
        f"/v2/models/{served}/versions/abc/ready",
        f"/v2/models/{served}/versions/\u00b93",  # a digit to str.isdigit, not to int() (fuzzer)
    ):
        assert list(call(stack, "GET", path, 404)) == ["error"]
    unaliased = unique("unaliased")
    call(stack, "POST", "/v1/registered-models", 201, json={"name": unaliased})
    missing = call(stack, "POST", f"/v2/models/{unaliased}/infer", 404, json=infer_body())
    assert "production" in missing["error"]
    assert call(stack, "GET", "/v2/health/live", 200, headers={}) == {"live": True}
    assert call(stack, "GET", "/v2/health/ready", 200, headers={}) == {"ready": True}
    assert list(call(stack, "GET", "/v2", 401, headers={})) == ["error"]
