"""The web page at `/` in Debian's headless Chromium, driven by selenium as a person would use it.

Screenshots of each step are kept in .run/screenshots/ to be looked at.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from inference_client import Client
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from sklearn.datasets import load_breast_cancer

from tests.integration.conftest import ADMIN_KEY, KEY, Api
from tests.shipping import feature_names, own_stack, small_forest
from tools.stack import Stack, wait_until

SHOTS = Path(__file__).resolve().parents[2] / ".run" / "screenshots"
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    DRIVER is None or shutil.which("chromium") is None, reason="chromium and chromium-driver: make browser"
)
WAIT_S = 60
ROWS = 100_000


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return the folder the browser saves downloads in."""
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[WebDriver]:
    """Start headless Chromium under chromium-driver for this module's tests."""
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--no-first-run")
    options.add_argument("--window-size=1280,1000")
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    allowed = {"behavior": "allow", "downloadPath": str(downloads)}
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", allowed)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser: WebDriver, api: Api) -> WebDriver:
    """Open the page afresh, without a key, on the session's API."""
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    browser.get(api.base + "/healthz")  # the origin's storage, without the page that would use it
    browser.execute_script("sessionStorage.clear()")
    browser.get(api.base + "/")
    return browser


def _shot(driver: WebDriver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    width = driver.execute_script("return window.innerWidth")
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500},
    )
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def _until(driver: WebDriver, check: Any, what: str) -> Any:
    return WebDriverWait(driver, WAIT_S).until(lambda d: check(d), what)


def _text(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def _use_key(driver: WebDriver, key: str) -> None:
    field = driver.find_element(By.ID, "key")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.ID, "use-key").click()


def _signed_in(driver: WebDriver, model: str = "iris", feature: str = "sepal_length") -> None:
    _use_key(driver, KEY)
    chip = _until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f"[data-model='{model}']"), "the models")
    chip[0].click()
    _until(driver, lambda d: d.find_elements(By.ID, f"field-{feature}"), f"{model}'s form")


def test_the_page_loads_its_own_files_only_under_a_strict_policy(page: WebDriver, api: Api) -> None:
    """/ answers HTML with a self-only Content-Security-Policy; the page asks for a key and logs no error."""
    answer = api.request("GET", "/", key=None)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/html")
    policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self'" in policy
    assert "http" not in answer.text, "the page loads nothing from elsewhere"
    assert page.title == "Inference service"
    assert page.find_element(By.ID, "key").is_displayed()
    assert not page.find_element(By.ID, "workspace").is_displayed()
    # The /healthz page the fixture passed through asks for a favicon the API does not serve.
    logged = page.get_log("browser")
    errors = [e for e in logged if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]
    assert errors == []
    _shot(page, "01-page-loaded")


def test_a_wrong_key_is_refused_with_the_words_of_the_error(page: WebDriver) -> None:
    """A wrong key shows the 401 error body's message and code, and nothing of the workspace."""
    _use_key(page, "not-a-key")
    _until(page, lambda d: d.find_element(By.ID, "error").is_displayed(), "the error")
    said = _text(page, "error")
    assert "The API key is not valid." in said
    assert "401 unauthorized" in said
    assert not page.find_element(By.ID, "workspace").is_displayed()
    assert page.execute_script("return sessionStorage.length") == 0
    _shot(page, "02-wrong-key")


def test_a_form_made_from_iris_schema_submits_and_shows_the_outputs(page: WebDriver) -> None:
    """The iris form has one number field per feature; predicting shows the job end and its output."""
    _signed_in(page)
    fields = page.find_elements(By.CSS_SELECTOR, "#record-form input")
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert [f.get_attribute("name") for f in fields] == names
    assert {f.get_attribute("type") for f in fields} == {"number"}
    for field, value in zip(fields, ("5.1", "3.5", "1.4", "0.2"), strict=True):
        field.send_keys(value)
    page.find_element(By.ID, "predict-record").click()
    _until(page, lambda d: d.find_elements(By.ID, "outputs-table"), "the outputs")
    assert _text(page, "job-status") == "succeeded"
    assert "1 of 1 records" in _text(page, "job-progress-text")
    assert "setosa" in _text(page, "outputs-table")
    _until(page, lambda d: "succeeded" in _text(d, "jobs"), "the job in the list")
    _shot(page, "03-form-predicted")


def _breast_cancer_csv(path: Path, rows: int) -> None:
    data = load_breast_cancer()
    names = [n.replace(" ", "_") for n in data.feature_names]
    table = np.resize(data.data, (rows, data.data.shape[1]))
    lines = [",".join(names), *(",".join(f"{v:g}" for v in row) for row in table)]
    path.write_text("\n".join(lines) + "\n")


def test_a_csv_upload_shows_its_progress_moving_and_its_outputs_download(
    page: WebDriver, downloads: Path, tmp_path: Path
) -> None:
    """A 100,000-row CSV: the upload bar passes values short of done, the job ends, the CSV downloads."""
    _signed_in(page, "breast-cancer", "mean_radius")
    rows = tmp_path / "rows.csv"
    _breast_cancer_csv(rows, ROWS)
    # Every value the two bars take, as the page sets them.
    page.execute_script("""
        window.seen = {"upload-progress": [], "job-progress": []};
        for (const id of Object.keys(window.seen)) {
          const bar = document.getElementById(id);
          new MutationObserver(() => window.seen[id].push(Number(bar.value) / Number(bar.max)))
            .observe(bar, {attributes: true});
        }""")
    page.find_element(By.ID, "csv-file").send_keys(str(rows))
    _until(page, lambda d: _text(d, "job-status") == "succeeded", "the job's success")
    seen = page.execute_script("return window.seen")
    assert any(0 < share < 1 for share in seen["upload-progress"]), seen["upload-progress"]
    assert seen["job-progress"][-1] == 1
    assert f"{ROWS:,} of {ROWS:,} records" in _text(page, "job-progress-text")
    _shot(page, "04-csv-uploaded")
    page.find_element(By.ID, "download-csv").click()
    done = lambda: [p for p in downloads.glob("breast-cancer-*.csv") if p.stat().st_size > 0]  # noqa: E731
    wait_until(done, WAIT_S, "the downloaded outputs")
    wait_until(lambda: not list(downloads.glob("*.crdownload")), WAIT_S, "the download's end")
    lines = done()[0].read_text().splitlines()
    assert lines[0] == "label,probability_benign,probability_malignant"
    assert len(lines) == ROWS + 1


def test_at_a_phones_width_nothing_scrolls_sideways(page: WebDriver) -> None:
    """At 360 px wide, with a model's schema and a job's outputs shown, the page is no wider than that."""
    phone = {"width": 360, "height": 740, "deviceScaleFactor": 1, "mobile": True}
    page.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", phone)
    _signed_in(page)
    fields = page.find_elements(By.CSS_SELECTOR, "#record-form input")
    for field, value in zip(fields, ["6.2", "2.9", "4.3", "1.3"], strict=True):
        field.send_keys(value)
    page.find_element(By.ID, "predict-record").click()
    try:
        _until(page, lambda d: d.find_elements(By.ID, "outputs-table"), "the outputs")
        width = page.execute_script("return document.documentElement.scrollWidth")
        assert width <= 360, f"the page is {width} px wide"
    finally:
        _shot(page, "05-phone-width")


# The admin panel: on a stack of its own (tests/shipping.py), whose registry and routings nobody else reads.


@pytest.fixture(scope="module")
def shipping(
    stack_factory: Callable[..., Stack], registry_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Api, Path, Path]:
    """Return a client of a stack serving iris 1.0.0 and 1.1.0 (a small forest), and that forest's files."""
    folder = tmp_path_factory.mktemp("web-admin")
    api = Api(own_stack(stack_factory, registry_path, folder))
    artifact, reference = small_forest("iris", folder / "forest")
    metadata = {"version": "1.1.0", "task": "classification", "labels": ["setosa", "versicolor", "virginica"],
                "features": [{"name": f, "type": "number"} for f in feature_names("iris")]}  # fmt: skip
    with Client(api.base, ADMIN_KEY) as client:
        assert client.publish("iris", artifact, metadata, reference).wait(120).status == "succeeded"
    listed = lambda: "1.1.0" in api.request("GET", "/v1/models/iris").json()["versions"]  # noqa: E731
    wait_until(listed, 10, "iris 1.1.0 listed")
    return api, artifact, reference


@pytest.fixture
def admin_page(browser: WebDriver, shipping: tuple[Api, Path, Path]) -> Iterator[WebDriver]:
    """Open the shipping stack's page with the admin key on iris; route every job to 1.0.0 again after."""
    api = shipping[0]
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    browser.get(api.base + "/healthz")
    browser.execute_script("sessionStorage.clear()")
    browser.get(api.base + "/")
    _use_key(browser, ADMIN_KEY)
    _until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-model='iris']"), "the models")[
        0
    ].click()
    _until(browser, lambda d: d.find_element(By.ID, "admin-section").is_displayed(), "the admin panel")
    _until(browser, lambda d: d.find_elements(By.ID, "weight-1.1.0"), "the versions' weights")
    yield browser
    back = api.request("PUT", "/v1/models/iris/routing", key=ADMIN_KEY, json={"routes": {"1.0.0": 100}})
    assert back.status_code == 200, back.text


def _weight(driver: WebDriver, version: str, value: int) -> None:
    field = driver.find_element(By.ID, f"weight-{version}")
    field.clear()
    field.send_keys(str(value))


def test_an_admin_moves_a_routing_weight_and_the_service_keeps_it(
    admin_page: WebDriver, shipping: tuple[Api, Path, Path]
) -> None:
    """Weights of 90 and 10 are saved (GET routing says so); weights summing to 95 are refused in words."""
    api = shipping[0]
    _weight(admin_page, "1.0.0", 90)
    _weight(admin_page, "1.1.0", 10)
    admin_page.find_element(By.ID, "save-routing").click()
    _until(admin_page, lambda d: _text(d, "routing-status").startswith("Saved"), "the routing saved")
    routing = api.request("GET", "/v1/models/iris/routing").json()
    assert routing["routes"] == {"1.0.0": 90, "1.1.0": 10}
    assert "1.1.0 10 %" in _text(admin_page, "routing-status")
    _until(
        admin_page, lambda d: d.find_element(By.ID, "weight-1.1.0").get_attribute("value") == "10", "10 shown"
    )
    _shot(admin_page, "06-admin-routing-saved")

    admin_page.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    _weight(admin_page, "1.1.0", 5)
    admin_page.find_element(By.ID, "save-routing").click()
    _until(admin_page, lambda d: _text(d, "routing-status").startswith("Not saved"), "the refusal")
    assert "sum to 95, not 100" in _text(admin_page, "error")
    assert api.request("GET", "/v1/models/iris/routing").json()["routes"] == {"1.0.0": 90, "1.1.0": 10}
    _shot(admin_page, "07-admin-routing-refused")


def test_an_admin_publishes_a_version_from_the_page(
    admin_page: WebDriver, shipping: tuple[Api, Path, Path]
) -> None:
    """The publish form sends the forest as iris 1.2.0; its job succeeds and the version gets a weight."""
    api, artifact, reference = shipping
    admin_page.find_element(By.ID, "publish-version").send_keys("1.2.0")
    admin_page.find_element(By.ID, "publish-description").send_keys("Five small trees")
    admin_page.find_element(By.ID, "publish-artifact").send_keys(str(artifact))
    admin_page.find_element(By.ID, "publish-reference").send_keys(str(reference))
    admin_page.execute_script("""
        window.said = [];
        const status = document.getElementById("publish-status");
        new MutationObserver(() => window.said.push(status.textContent))
          .observe(status, {childList: true, characterData: true, subtree: true});""")
    admin_page.find_element(By.ID, "publish").click()
    ended = lambda d: _text(d, "publish-status").startswith(("Published", "Not published"))  # noqa: E731
    _until(admin_page, ended, "the publish job's end")
    assert _text(admin_page, "publish-status").startswith("Published iris 1.2.0, served with onnx.")
    said = admin_page.execute_script("return window.said")
    assert "Sent. Waiting for a worker…" in said, said  # each step is told as it comes
    described = api.request("GET", "/v1/models/iris/versions/1.2.0")
    assert described.status_code == 200, described.text
    assert described.json()["description"] == "Five small trees"
    _until(admin_page, lambda d: d.find_elements(By.ID, "weight-1.2.0"), "1.2.0 among the versions")
    assert admin_page.find_element(By.ID, "weight-1.2.0").get_attribute("value") == "0"
    _shot(admin_page, "08-admin-published")


def test_the_admin_panel_fits_a_phones_width(admin_page: WebDriver) -> None:
    """At 360 px wide the versions table, the shadow and the publish form scroll nowhere sideways."""
    phone = {"width": 360, "height": 740, "deviceScaleFactor": 1, "mobile": True}
    admin_page.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", phone)
    _until(admin_page, lambda d: d.find_element(By.ID, "admin-section").is_displayed(), "the admin panel")
    try:
        width = admin_page.execute_script("return document.documentElement.scrollWidth")
        assert width <= 360, f"the page is {width} px wide"
    finally:
        admin_page.execute_script("document.getElementById('admin-section').scrollIntoView()")
        _shot(admin_page, "09-admin-phone")


def test_a_user_key_sees_no_admin_panel(page: WebDriver, api: Api) -> None:
    """With a user key the page finds out it is not an admin key and shows no routing or publishing."""
    before = api.request("GET", "/v1/models/iris/routing").json()
    _signed_in(page)
    section = page.find_element(By.ID, "admin-section")
    _until(page, lambda d: section.get_attribute("data-scope") == "user", "the key's scope found out")
    assert not section.is_displayed()
    assert not page.find_element(By.ID, "save-routing").is_displayed()
    assert not page.find_element(By.ID, "publish-form").is_displayed()
    assert api.request("GET", "/v1/models/iris/routing").json() == before
    _shot(page, "10-user-no-admin")
