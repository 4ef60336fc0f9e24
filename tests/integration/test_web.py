"""The web page at `/` in Debian's headless Chromium, driven by selenium as a person would use it.

Screenshots of each step are kept in .run/screenshots/ to be looked at.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from sklearn.datasets import load_breast_cancer

from tests.integration.conftest import KEY, Api
from tools.stack import wait_until

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
