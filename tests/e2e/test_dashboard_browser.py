"""The dashboard end to end in headless Chromium, against gunicorn, a real worker and broker."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import KEYS
from tests.integration.conftest import Stack
from tests.live import chromium, gunicorn, require_chromium
from tests.support import ROOT

pytestmark = pytest.mark.integration
ARTIFACTS = ROOT / "test-artifacts"
EPOCHS = 400  # the seed job with more epochs, so that its progress can be watched arriving
# Pixels of the training curve's colour (#1f77b4) on a canvas: the curve was drawn.
CURVE_PIXELS = """(id) => {
  const canvas = document.getElementById(id);
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i] === 31 && data[i + 1] === 119 && data[i + 2] === 180) n++;
  }
  return n;
}"""


def sign_in(page: Page, base_url: str, key: str) -> None:
    page.goto(base_url + "/")
    expect(page).to_have_url(re.compile(r"/ui/login"))
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    expect(page).to_have_url(base_url + "/")


def submit_from_form(page: Page, change: dict[str, Any]) -> str:
    """Open the form, change the pre-filled seed spec, submit it; the new job's id."""
    page.click("nav >> text=New job")
    spec = json.loads(page.input_value("#spec"))
    assert spec["name"] == "seed-example"
    spec.update(change)
    page.fill("#spec", json.dumps(spec, indent=2))
    page.click("button[value=submit]")
    expect(page).to_have_url(re.compile(r"/ui/jobs/[0-9a-f-]{36}$"))
    return page.url.rsplit("/", 1)[-1]


def wait_until_finished(page: Page, timeout_ms: float = 120_000) -> None:
    page.wait_for_function(
        "() => document.getElementById('job').dataset.streamEnded === 'true'", timeout=timeout_ms
    )
    plot_loaded = """() => {
      const img = document.getElementById('plot');
      return img.src.includes('s=succeeded') && img.complete && img.naturalWidth > 0;
    }"""
    page.wait_for_function(plot_loaded, timeout=30_000)


def test_dashboard_sign_in_submit_watch_plot_and_predict(
    stack: Stack, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    require_chromium()  # before anything starts: a missing browser is the first thing to say
    problems: list[str] = []
    with gunicorn(stack.settings, tmp_path / "gunicorn.log") as server, chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        failed: list[tuple[int, str]] = []
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: (
                problems.append(msg.text)
                if msg.type == "error" and not msg.text.startswith("Failed to load resource")
                else None
            ),
        )
        page.on(
            "response",
            lambda r: (
                failed.append((r.status, urlsplit(r.url).path.rsplit("/", 1)[-1]))
                if r.status >= 400
                else None
            ),
        )

        page.goto(server.url + "/")
        page.fill("#api_key", "not-a-key")
        page.click("button[type=submit]")
        expect(page.locator(".error")).to_contain_text("not valid")
        sign_in(page, server.url, KEYS["alice"])

        # A spec that fails validation comes back with the field path of each problem.
        page.click("nav >> text=New job")
        bad = json.loads(page.input_value("#spec"))
        bad["layers"][0]["activation"] = "mish"
        page.fill("#spec", json.dumps(bad))
        page.click("button[value=submit]")
        expect(page.locator("#problems")).to_contain_text("layers[0].activation")

        job_id = submit_from_form(page, {"epochs": EPOCHS})
        # Live: epochs arrive while the job is still running.
        page.wait_for_function(
            """() => document.getElementById('status').textContent === 'running'
                  && Number(document.getElementById('epoch-count').textContent) > 0""",
            timeout=60_000,
        )
        wait_until_finished(page)
        expect(page.locator("#status")).to_have_text("succeeded")
        expect(page.locator("#epoch-count")).to_have_text(str(EPOCHS))
        expect(page.locator("#progress .count")).to_have_text(f"{EPOCHS}/{EPOCHS}")
        assert page.evaluate(CURVE_PIXELS, "chart-loss") > 50
        assert page.evaluate(CURVE_PIXELS, "chart-accuracy") > 50
        expect(page.locator("#cancel-form")).to_have_count(0)

        rows = [[round(0.1 * i - 1.0, 1) for i in range(20)], [0.0] * 20]
        page.fill("#instances", json.dumps(rows))
        page.click("#predict-button")
        expect(page.locator("#predictions tbody tr")).to_have_count(2)
        first = page.locator("#predictions tbody tr").first.locator("td")
        assert first.nth(1).inner_text() in ("0", "1", "2")
        assert abs(sum(float(first.nth(i).inner_text()) for i in (2, 3, 4)) - 1) < 0.01
        page.fill("#instances", "[[1, 2]]")
        page.click("#predict-button")
        expect(page.locator("#predict-error")).to_contain_text("instances[0]")

        shot = tmp_path / "dashboard.png"
        page.fill("#instances", json.dumps(rows))
        page.click("#predict-button")
        expect(page.locator("#predictions")).to_be_visible()
        page.screenshot(path=str(shot), full_page=True)
        ARTIFACTS.mkdir(exist_ok=True)
        backend = request.node.callspec.params.get("stack", "stack")
        shutil.copy(shot, ARTIFACTS / f"dashboard-{backend}.png")

        page.click("nav >> text=Jobs")
        row = page.locator(f"tr[data-job-id='{job_id}']")
        expect(row.locator(".badge")).to_have_text("succeeded")
        expect(row.locator(".count")).to_have_text(f"{EPOCHS}/{EPOCHS}")
    assert problems == []
    # Only the answers the test provoked: a wrong key, an invalid spec, a short instance.
    assert failed == [(401, "login"), (422, "new"), (422, "predict")]


# Pixels of the first four colours of the sweep page's palette on a canvas (the four optimizers).
SWEEP_CURVE_PIXELS = """(id) => {
  const canvas = document.getElementById(id);
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const colours = [[214, 39, 40], [44, 160, 44], [148, 103, 189], [31, 119, 180]];
  const counts = colours.map(() => 0);
  for (let i = 0; i < data.length; i += 4) {
    colours.forEach(([r, g, b], k) => {
      if (data[i] === r && data[i + 1] === g && data[i + 2] === b) counts[k]++;
    });
  }
  return counts;
}"""


def test_dashboard_compare_optimizers_sweep(stack: Stack, tmp_path: Path) -> None:
    require_chromium()
    problems: list[str] = []
    with gunicorn(stack.settings, tmp_path / "gunicorn.log") as server, chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        failed: list[tuple[int, str]] = []
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: problems.append(msg.text) if msg.type == "error" else None,
        )
        page.on("response", lambda r: failed.append((r.status, r.url)) if r.status >= 400 else None)
        sign_in(page, server.url, KEYS["alice"])
        submit_from_form(page, {"epochs": 20})
        # The button appears once the job has finished, without reloading the page.
        expect(page.locator("#compare-form")).to_be_hidden()
        wait_until_finished(page)
        page.click("#compare-form button")
        expect(page).to_have_url(re.compile(r"/ui/sweeps/[0-9a-f-]{36}$"))
        sweep_id = page.url.rsplit("/", 1)[-1]
        expect(page.locator("h1")).to_have_text("compare-optimizers: seed-example")

        # The leaderboard fills as the trials run, and the page notices the sweep's end.
        page.wait_for_function(
            "() => document.getElementById('sweep').dataset.finished === 'true'", timeout=180_000
        )
        expect(page.locator("#status")).to_have_text("succeeded")
        expect(page.locator("#progress .count")).to_have_text("12/12")
        rows = page.locator("#leaderboard tbody tr[data-job-id]")
        expect(rows).to_have_count(12)
        expect(rows.locator(".badge.status-succeeded")).to_have_count(12)
        expect(rows.first).to_have_class("best")
        objectives = [float(v) for v in rows.locator("td:nth-child(5)").all_inner_texts()]
        assert objectives == sorted(objectives)
        expect(page.locator("#best")).to_contain_text("val_loss")
        legend = page.locator("#curve-legend")
        for optimizer in ("sgd(learning_rate=0.01)", "momentum=0.9", "rmsprop", "adam"):
            expect(legend).to_contain_text(optimizer)
        expect(page.locator("#curve-count")).to_have_text(str(12 * 20))
        for chart in ("chart-val_loss", "chart-val_accuracy"):
            assert min(page.evaluate(SWEEP_CURVE_PIXELS, chart)) > 20, chart
        page.wait_for_function(
            """() => { const img = document.getElementById('plot');
                       return img.src.includes('s=succeeded') && img.complete
                              && img.naturalWidth > 0; }""",
            timeout=30_000,
        )
        expect(page.locator("#cancel-form")).to_have_count(0)

        # Through to the best trial: an ordinary job page that links back to its sweep.
        best_job = rows.first.get_attribute("data-job-id")
        rows.first.locator("a").click()
        expect(page).to_have_url(f"{server.url}/ui/jobs/{best_job}")
        expect(page.locator("#trial-of")).to_contain_text("trial")
        wait_until_finished(page)
        expect(page.locator("#status")).to_have_text("succeeded")
        page.click("#trial-of a")
        expect(page).to_have_url(f"{server.url}/ui/sweeps/{sweep_id}")

        page.click("nav >> text=Sweeps")
        row = page.locator(f"tr[data-sweep-id='{sweep_id}']")
        expect(row.locator(".badge")).to_have_text("succeeded")
        expect(row.locator(".count")).to_have_text("12/12")
    assert problems == []
    assert failed == []


def test_dashboard_registers_a_model_and_promotes_it(stack: Stack, tmp_path: Path) -> None:
    """From a job's page: register its model with the production alias; on the registry page:
    register another version and promote it; predictions by alias follow the alias."""
    require_chromium()
    from tests.conftest import auth
    from tests.integration.conftest import submit
    from tests.support import TINY_SPEC, wait_for_job

    alice = auth("alice")
    jobs = [
        wait_for_job(stack.client, submit(stack, {**TINY_SPEC, "seed": s})["id"], alice)
        for s in (1, 2)
    ]
    assert all(job["status"] == "succeeded" for job in jobs)
    name = f"browser-{jobs[0]['id'][-8:]}"
    with gunicorn(stack.settings, tmp_path / "gunicorn.log") as server, chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        sign_in(page, server.url, KEYS["alice"])
        for job, alias in zip(jobs, ("production", ""), strict=True):
            page.goto(f"{server.url}/ui/jobs/{job['id']}")
            page.fill("#register-name", name)
            page.fill("#register-alias", alias)
            page.click("#register-form button[type=submit]")
            expect(page).to_have_url(re.compile(rf"/ui/registry#model-{name}$"))
        section = page.locator(f"section[data-name='{name}']")
        expect(section.locator("tr[data-version]")).to_have_count(2)
        expect(section.locator("[data-alias=production]")).to_have_text("production → v1")
        expect(section.locator("tr[data-version='1'] .aliases")).to_have_text("production")

        section.locator("select[name=version]").select_option("2")
        section.locator("form.promote button[type=submit]").click()
        section = page.locator(f"section[data-name='{name}']")
        expect(section.locator("[data-alias=production]")).to_have_text("production → v2")
        expect(section.locator("tr[data-version='2'] .aliases")).to_have_text("production")
        page.click("nav >> text=Jobs")
        page.goto(f"{server.url}/ui/jobs/{jobs[1]['id']}")
        expect(page.locator("#registered-as")).to_contain_text(f"{name} v2")
    assert problems == []
    by_alias = stack.client.post(
        f"/v1/registered-models/{name}@production/predict",
        json={"instances": [[0.5, 0.5]]},
        headers=alice,
    )
    assert by_alias.headers["X-Model-Id"] == jobs[1]["model_id"]
