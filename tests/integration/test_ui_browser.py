"""The UI in a real browser: Debian's headless Chromium driven by Selenium through Debian's
chromium-driver (nothing downloads a browser). Every page opens without a JavaScript console
error and without running injected markup; a person approves a waiting step and sees the run
finish on a real worker, rejects one and sees its downstream skipped, cancels and retries a run,
pauses a schedule. A screenshot of each page is saved (``FLOWSTONE_UI_SCREENSHOTS``: where; the
default is the test's temporary directory)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import ui_harness
from tests.integration.queue_harness import Pipeline, eventually
from tests.integration.ui_harness import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pipeline = ui_harness.pipeline  # the fixtures, by name
live = ui_harness.live


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are missing: `make browser` installs them")
        pytest.skip("chromium and chromium-driver are missing: `make browser` installs them")
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch a driver or a browser
    from selenium import webdriver  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _shots(tmp_path: Path) -> Path:
    target = Path(os.environ.get("FLOWSTONE_UI_SCREENSHOTS") or tmp_path / "screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


def _open(driver, url: str, shot: Path | None = None) -> None:
    driver.get(url)
    if shot is not None:
        driver.save_screenshot(str(shot))
    _assert_clean(driver)


def _assert_clean(driver) -> None:
    """No console error (a CSP violation is one), and no injected markup ran."""
    problems = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert problems == []
    assert driver.execute_script("return window.__pwned === undefined") is True


def _select_two_days_and_queue(driver, rt) -> None:
    """Shift-click selects days in the calendar; Queue sends them as one run."""
    from selenium.webdriver.common.action_chains import ActionChains  # noqa: PLC0415
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.common.keys import Keys  # noqa: PLC0415

    before = {r.run.run_id for r in rt.store.reports.runs(limit=50)}
    for key in ("2016-02-29", "2016-03-01"):  # shift-click selects days for the Queue button
        cell = driver.find_element(By.CSS_SELECTOR, f'.calendar rect[data-p="{key}"]')
        ActionChains(driver).key_down(Keys.SHIFT).click(cell).key_up(Keys.SHIFT).perform()
    assert driver.find_element(By.ID, "selected-list").text == "2016-02-29, 2016-03-01"
    driver.find_element(By.ID, "materialize").click()
    eventually(lambda: len(rt.store.reports.runs(limit=50)) > len(before), what="the selection to be queued")
    (queued,) = [r for r in rt.store.reports.runs(limit=50) if r.run.run_id not in before]
    assert sorted(s.partition_key for s in rt.run(queued.run.run_id).steps()) == [
        "d:2016-02-29",
        "d:2016-03-01",
    ]
    _assert_clean(driver)


def test_every_page_then_approve_and_see_the_run_finish(
    pipeline: Pipeline, live: LiveServer, browser, tmp_path
):
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    driver = browser
    rt = pipeline.runtime
    rt.materialize("broken", with_upstream=True, raise_on_error=False)
    rt.materialize("regional", "eu")
    rt.materialize("daily", "2024-12-24")
    pipeline.start_worker()
    gated = rt.submit("after_gate", with_upstream=True)
    assert gated.wait(timeout=60).status == "waiting_approval"
    shots = _shots(tmp_path)

    _open(driver, f"{live.url}/assets", shots / "ui-assets.png")
    driver.find_element(By.CSS_SELECTOR, 'a.node[data-asset="source"]').click()
    assert driver.find_element(By.TAG_NAME, "h1").text == "source"
    _assert_clean(driver)
    _open(driver, f"{live.url}/assets/daily", shots / "ui-asset.png")
    assert len(driver.find_elements(By.CSS_SELECTOR, ".calendar rect")) == 3653
    _select_two_days_and_queue(driver, rt)
    day = driver.find_element(By.CSS_SELECTOR, '.calendar rect[data-p="2024-12-24"]')
    assert day.get_attribute("class") == "c-succeeded"
    day.click()  # the script opens the day
    eventually(lambda: "partition=2024-12-24" in driver.current_url, what="the day to open")
    assert "Latest of 2024-12-24" in driver.find_element(By.TAG_NAME, "main").text
    _assert_clean(driver)
    _open(driver, f"{live.url}/assets/regional")
    _open(driver, f"{live.url}/runs", shots / "ui-runs.png")
    failed = rt.store.reports.runs(limit=10, status="failed")[0].run.run_id
    _open(driver, f"{live.url}/runs/{failed}", shots / "ui-run.png")
    assert "ValueError" in driver.find_element(By.CSS_SELECTOR, "details.error").text
    _open(driver, f"{live.url}/automation", shots / "ui-automation.png")

    _open(driver, f"{live.url}/approvals", shots / "ui-approvals.png")
    card = driver.find_element(By.CSS_SELECTOR, "article.approval")
    assert "ship it?" in card.text
    card.find_element(By.NAME, "reason").send_keys("numbers checked")
    card.find_element(By.CSS_SELECTOR, "button.approve").click()
    eventually(lambda: "Nothing waits" in driver.page_source, what="the inbox to empty")
    decided = driver.find_element(By.ID, "decided").text
    assert "approved" in decided
    assert "alice" in decided
    assert "numbers checked" in decided
    _assert_clean(driver)
    assert gated.wait(timeout=60).status == "succeeded"

    # the run page follows the run without a reload
    _open(driver, f"{live.url}/runs/{gated.run_id}")
    driver.execute_script("window.__same_page = true")
    eventually(
        lambda: "succeeded" in driver.find_element(By.CSS_SELECTOR, "h1 .badge").text, what="succeeded"
    )
    assert driver.execute_script("return window.__same_page === true") is True


def test_reject_cancel_retry_and_pause_in_the_browser(pipeline: Pipeline, live: LiveServer, browser):
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    driver = browser
    rt = pipeline.runtime
    pipeline.start_worker()
    gated = rt.submit("after_gate", with_upstream=True)
    assert gated.wait(timeout=60).status == "waiting_approval"

    _open(driver, f"{live.url}/approvals")
    card = driver.find_element(By.CSS_SELECTOR, "article.approval")
    card.find_element(By.NAME, "reason").send_keys("not today")
    card.find_element(By.CSS_SELECTOR, "button.reject").click()
    eventually(lambda: "Nothing waits" in driver.page_source, what="the inbox to empty")
    gated.wait(timeout=60)
    statuses = {s.asset: s.status for s in gated.steps()}
    assert statuses["gate"] == "rejected"
    assert statuses["after_gate"] == "skipped"

    # a run waiting for a decision is cancelled from its page, then retried
    waiting = rt.submit("guarded")
    eventually(lambda: rt.run(waiting.run_id).run().status == "waiting_approval", what="guarded to wait")
    _open(driver, f"{live.url}/runs/{waiting.run_id}")
    driver.find_element(By.ID, "cancel").click()
    eventually(lambda: rt.run(waiting.run_id).run().status == "cancelled", what="cancelled")
    _open(driver, f"{live.url}/runs/{waiting.run_id}")
    driver.find_element(By.ID, "retry").click()
    eventually(lambda: rt.run(waiting.run_id).run().status != "cancelled", what="retried")
    _assert_clean(driver)

    _open(driver, f"{live.url}/automation")
    driver.find_element(By.CSS_SELECTOR, "#schedules button").click()
    eventually(lambda: rt.schedules.list()[0].paused, what="paused")
    assert driver.find_element(By.CSS_SELECTOR, "#schedules button").text == "Resume"
    _assert_clean(driver)
