"""An uploaded CSV trained on by a real worker, and its text labels served back by predictions."""

from __future__ import annotations

import json

import pytest

from tests.conftest import auth
from tests.integration.conftest import Stack, submit
from tests.support import ROOT, wait_for_job

pytestmark = pytest.mark.integration
ALICE = auth("alice")


def test_the_iris_example_trains_from_its_csv(stack: Stack) -> None:
    csv = (ROOT / "examples" / "iris.csv").read_bytes()
    upload = stack.client.post(
        "/v1/datasets?label=species&name=iris",
        data=csv,
        content_type="text/csv",
        headers=ALICE,
    )
    assert upload.status_code == 201, upload.get_json()
    dataset = upload.get_json()
    assert dataset["rows"] == 150 and dataset["label_kind"] == "str"
    assert dataset["label_counts"] == {"setosa": 50, "versicolor": 50, "virginica": 50}
    spec = json.loads((ROOT / "examples" / "iris_job.json").read_text())
    spec["dataset"] = {"dataset_id": dataset["id"]}
    job = wait_for_job(stack.client, submit(stack, spec)["id"], ALICE)
    assert job["status"] == "succeeded", job["error"]
    assert job["metrics"]["test_accuracy"] >= 0.9
    answer = stack.client.post(
        f"/v1/models/{job['model_id']}/predict",
        json={"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]},
        headers=ALICE,
    ).get_json()
    assert answer["predictions"] == ["setosa", "virginica"]
