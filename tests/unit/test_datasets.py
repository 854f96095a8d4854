"""Uploaded CSV datasets: parsing with clear errors, the HTTP routes, and training on an upload."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from sqlalchemy import delete

from core.db import Database
from core.models import Dataset
from core.uploads import CsvError, parse_csv
from tests.conftest import auth
from tests.unit.test_api import assert_error, small_spec
from worker.jobs import run_job

ALICE, BOB = auth("alice"), auth("bob")


def iris_like_csv(rows: int = 120, seed: int = 0) -> str:
    """Three separable classes with string labels, label column in the middle."""
    rng = np.random.default_rng(seed)
    lines = ["sepal_length,species,petal_length,petal_width"]
    names = ["setosa", "versicolor", "virginica"]
    for i in range(rows):
        k = i % 3
        a, b, c = rng.normal(loc=3.0 * k, scale=0.4, size=3)
        lines.append(f"{a:.3f},{names[k]},{b:.3f},{c:.3f}")
    return "\n".join(lines) + "\n"


def upload(
    client: FlaskClient, text: str, label: str = "species", headers: dict[str, str] = ALICE
) -> Any:
    return client.post(
        f"/v1/datasets?label={label}&name=flowers",
        data=text.encode(),
        content_type="text/csv",
        headers=headers,
    )


def test_parse_keeps_columns_and_types() -> None:
    parsed = parse_csv(b"a,b,y\n1,2.5,0\n3,4,1\n\n5,6e1,1\n", "y", max_rows=100)
    assert parsed.columns == ["a", "b", "y"]
    assert parsed.X.tolist() == [[1.0, 2.5], [3.0, 4.0], [5.0, 60.0]]
    assert parsed.label_kind == "int" and parsed.y.tolist() == [0, 1, 1]
    assert parse_csv(b"a,y\n1,0.5\n2,1.5\n", "y", max_rows=9).label_kind == "float"
    text = parse_csv("\ufeffa,y\n1,cat\n2,dog\n".encode(), "y", max_rows=9)
    assert text.label_kind == "str" and text.y.tolist() == ["cat", "dog"]


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        (b"a,b,y\n1,2,0\n1,2\n3,4,1\n", "line 3", "has 2 fields; the header has 3"),
        (b"a,b,y\n1,x,0\n3,4,1\n", "line 2", "column 'b': 'x' is not a finite number"),
        (b"a,b,y\n1,,0\n3,4,1\n", "line 2", "column 'b' is empty"),
        (b"a,b,y\n1,nan,0\n3,4,1\n", "line 2", "not a finite number"),
        (b"a,b,y\n1,2,\n3,4,1\n", "line 2", "the label column 'y' is empty"),
        (b"a,b,z\n1,2,0\n3,4,1\n", "label", "no column named 'y'; the columns are a, b, z"),
        (b"a,a,y\n1,2,0\n3,4,1\n", "line 1", "column names repeat: a"),
    ],
)
def test_parse_errors_name_line_and_column(raw: bytes, field: str, words: str) -> None:
    with pytest.raises(CsvError) as caught:
        parse_csv(raw, "y", max_rows=100)
    assert any(d["field"] == field and words in d["message"] for d in caught.value.details), (
        caught.value.details
    )


def test_parse_refuses_empty_short_long_and_binary_files() -> None:
    for raw, words in [
        (b"", "empty"),
        (b"a,y\n1,0\n", "at least two data rows"),
        (b"a,y\n" + b"1,0\n" * 6, "more than 5 rows"),
        (b"\xff\xfe\x00a", "not UTF-8"),
    ]:
        with pytest.raises(CsvError, match=words):
            parse_csv(raw, "y", max_rows=5)


def test_a_broken_file_reports_a_few_problems_not_all() -> None:
    raw = b"a,y\n" + b"x,1\n" * 500
    with pytest.raises(CsvError) as caught:
        parse_csv(raw, "y", max_rows=1000)
    assert len(caught.value.details) == 10
    assert "showing the first few" in str(caught.value)


def test_upload_as_text_csv_then_read_and_list(client: FlaskClient) -> None:
    response = upload(client, iris_like_csv())
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert response.headers["Location"] == f"/v1/datasets/{body['id']}"
    assert body["name"] == "flowers" and body["rows"] == 120
    assert body["columns"] == ["sepal_length", "species", "petal_length", "petal_width"]
    assert body["features"] == ["sepal_length", "petal_length", "petal_width"]
    assert body["label"] == "species" and body["label_kind"] == "str"
    assert body["label_counts"] == {"setosa": 40, "versicolor": 40, "virginica": 40}
    assert client.get(f"/v1/datasets/{body['id']}", headers=ALICE).get_json() == body
    listed = client.get("/v1/datasets", headers=ALICE).get_json()
    assert listed == {"items": [body], "next_cursor": None}


def test_upload_as_multipart_form(client: FlaskClient) -> None:
    response = client.post(
        "/v1/datasets",
        data={
            "file": (io.BytesIO(b"x1,x2,target\n0,1,0.5\n1,0,1.5\n2,2,2.5\n"), "t.csv"),
            "label": "target",
        },
        content_type="multipart/form-data",
        headers=ALICE,
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["name"] == "t.csv" and body["label_kind"] == "float"
    assert body["label_counts"] is None and body["rows"] == 3


def test_upload_errors(client: FlaskClient, app: Any) -> None:
    error = assert_error(upload(client, "a,b\n1,2\n1\n3,4\n", label="b"), 422, "invalid_dataset")
    assert error["details"] == [{"field": "line 3", "message": "has 1 fields; the header has 2"}]
    assert_error(upload(client, "a,b\n1,2\n3,4\n", label=""), 422, "invalid_dataset")
    plain = client.post("/v1/datasets?label=b", data=b"a,b\n1,2\n", headers=ALICE)
    assert_error(plain, 415, "unsupported_media_type")
    no_file = client.post(
        "/v1/datasets", data={"label": "b"}, content_type="multipart/form-data", headers=ALICE
    )
    assert_error(no_file, 422, "invalid_dataset")
    settings = app.config["TRAINSVC_SETTINGS"]
    app.config["TRAINSVC_SETTINGS"] = settings.with_overrides(max_dataset_bytes=100)
    assert_error(upload(client, iris_like_csv()), 413, "payload_too_large")
    assert_error(client.get("/v1/datasets?limit=0", headers=ALICE), 422, "validation_error")
    assert client.post("/v1/datasets?label=b", data=b"a,b\n").status_code == 401


def test_datasets_are_per_tenant(client: FlaskClient) -> None:
    dataset_id = upload(client, iris_like_csv()).get_json()["id"]
    assert_error(client.get(f"/v1/datasets/{dataset_id}", headers=BOB), 404, "not_found")
    assert client.get("/v1/datasets", headers=BOB).get_json()["items"] == []
    spec = iris_spec(dataset_id)
    error = assert_error(client.post("/v1/jobs", json=spec, headers=BOB), 422, "invalid_spec")
    assert error["details"] == [
        {"field": "dataset", "message": f"no dataset with id {dataset_id!r}"}
    ]


def iris_spec(dataset_id: str, **changes: Any) -> dict[str, Any]:
    spec = small_spec(dataset={"dataset_id": dataset_id}, epochs=30, **changes)
    spec["layers"] = [
        {"type": "dense", "units": 16, "activation": "relu"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]
    spec["optimizer"] = {"type": "adam", "learning_rate": 0.01}
    return spec


def test_spec_is_checked_against_the_upload(client: FlaskClient) -> None:
    dataset_id = upload(client, iris_like_csv()).get_json()["id"]
    dry = client.post("/v1/jobs?dry_run=true", json=iris_spec(dataset_id), headers=ALICE)
    assert dry.status_code == 200 and dry.get_json()["input_shape"] == [None, 3]
    wrong = iris_spec(dataset_id)
    wrong["layers"][-1]["units"] = 2
    error = assert_error(client.post("/v1/jobs", json=wrong, headers=ALICE), 422, "invalid_spec")
    assert error["details"][0]["field"] == "layers[1].units"
    regression = iris_spec(dataset_id, loss="mse")
    error = assert_error(
        client.post("/v1/jobs", json=regression, headers=ALICE), 422, "invalid_spec"
    )
    assert "holds text" in error["details"][0]["message"]


def test_a_job_trains_on_an_upload_and_predicts_its_labels(
    client: FlaskClient, database: Database
) -> None:
    dataset_id = upload(client, iris_like_csv()).get_json()["id"]
    job = client.post("/v1/jobs", json=iris_spec(dataset_id), headers=ALICE).get_json()
    assert run_job(database, job["id"], flush_seconds=0) == "succeeded"
    done = client.get(f"/v1/jobs/{job['id']}", headers=ALICE).get_json()
    assert done["metrics"]["test_accuracy"] >= 0.9
    model = client.get(f"/v1/models/{done['model_id']}", headers=ALICE).get_json()
    assert model["classes"] == ["setosa", "versicolor", "virginica"]
    assert model["n_features"] == 3
    answer = client.post(
        f"/v1/models/{done['model_id']}/predict",
        json={"instances": [[0.0, 0.0, 0.0], [6.0, 6.0, 6.0]]},
        headers=ALICE,
    ).get_json()
    assert answer["predictions"] == ["setosa", "virginica"]


def test_a_job_whose_dataset_is_gone_fails_with_the_reason(
    client: FlaskClient, database: Database
) -> None:
    dataset_id = upload(client, iris_like_csv()).get_json()["id"]
    job = client.post("/v1/jobs", json=iris_spec(dataset_id), headers=ALICE).get_json()
    with database.begin() as session:
        session.execute(delete(Dataset).where(Dataset.id == dataset_id))
    assert run_job(database, job["id"], flush_seconds=0) == "failed"
    error = client.get(f"/v1/jobs/{job['id']}", headers=ALICE).get_json()["error"]
    assert error == {
        "code": "invalid_spec",
        "message": f"dataset: no dataset with id {dataset_id!r}",
    }
