"""The sandbox's live page in a real headless browser (Debian's chromium, driven by selenium).

The browser and its driver come from Debian (``chromium``, ``chromium-driver``), both paths
passed explicitly, so nothing is downloaded at run time (selenium-manager never runs). Without
them these tests skip, saying how to install them; under ``CI=true`` they fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import posthog
import posthog.request
import pytest
import segment.analytics.request  # type: ignore[import-untyped]
from segment.analytics import Client as SegmentClient
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from router_core import Event, Router
from router_core.sandbox import Sandbox, mask_key

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1400,900",
)
WAIT_SECONDS = 30  # a ceiling for slow machines; every wait ends as soon as its condition holds

WRITE_KEY = "wk_page_0123456789abcdef"
WRONG_WRITE_KEY = "wk_wrong_0123456789ab0000"
API_KEY = "phc_page_0123456789abcdef"
OTHER_API_KEY = "phc_else_0123456789abc777"

T = TypeVar("T")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        message = f"the browser tests need {' and '.join(missing)}; install with: {INSTALL}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)  # CI must run these, not skip them
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in CHROMIUM_ARGS:
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(write_keys={WRITE_KEY}) as sandbox:
        yield sandbox


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as c:
        yield c


class Page:
    """The viewer open in the browser, with waits on what it shows."""

    def __init__(self, driver: WebDriver, url: str) -> None:
        self.driver = driver
        driver.get(f"{url}/")
        # A reload would lose this: checking it later proves the rows came in live.
        driver.execute_script("window.sandboxTestMarker = 'same page';")
        self.wait(lambda: self.text("status") == "live", "the page's first poll")

    def wait(self, condition: Callable[[], T | None], what: str) -> T:
        """``condition()`` once it is truthy (WebDriverWait checks it every 0.1 s)."""
        waiter = WebDriverWait(self.driver, WAIT_SECONDS, poll_frequency=0.1)
        result = waiter.until(lambda _driver: condition(), message=f"waiting for {what}")
        assert result is not None  # until() returns only a truthy value
        return result

    def text(self, element_id: str) -> str:
        return str(self.driver.find_element(By.ID, element_id).text)

    def rows(self) -> list[WebElement]:
        return list(self.driver.find_elements(By.CSS_SELECTOR, "#body tr.row"))

    def wait_for_rows(self, count: int, what: str) -> list[WebElement]:
        def rows_if_counted() -> tuple[list[WebElement]] | None:
            rows = self.rows()
            return (rows,) if len(rows) == count else None  # a tuple: truthy even when empty

        (found,) = self.wait(rows_if_counted, what)
        return found

    def first(self, selector: str, what: str) -> WebElement:
        """The first element matching a CSS ``selector``, once there is one."""

        def found() -> WebElement | None:
            return next(iter(self.driver.find_elements(By.CSS_SELECTOR, selector)), None)

        element: WebElement = self.wait(found, what)
        return element

    def row_for(self, message_id: str, vendor: str) -> WebElement:
        selector = f'#body tr.row[data-message-id="{message_id}"][data-vendor="{vendor}"]'
        return self.first(selector, f"the {vendor} row of {message_id}")

    def not_reloaded(self) -> bool:
        return bool(self.driver.execute_script("return window.sandboxTestMarker === 'same page'"))

    def visible_text(self) -> str:
        return str(self.driver.execute_script("return document.body.innerText"))

    def type_into(self, element_id: str, text: str) -> None:
        field = self.driver.find_element(By.ID, element_id)
        field.clear()
        if text:
            field.send_keys(text)
        else:  # clear() fires no input event
            self.driver.execute_script(
                "arguments[0].dispatchEvent(new Event('input', {bubbles: true}))", field
            )

    def choose(self, element_id: str, value: str) -> None:
        Select(self.driver.find_element(By.ID, element_id)).select_by_value(value)


@pytest.fixture
def sdk_sessions() -> Iterator[None]:
    yield
    # The SDKs pool keep-alive connections in module-level sessions: close them.
    segment.analytics.request._session.close()
    posthog.request.reset_sessions()


def segment_sdk(sb: Sandbox, key: str, errors: list[Any]) -> SegmentClient:
    return SegmentClient(
        key,
        host=sb.segment.url,
        max_retries=0,
        upload_interval=0.05,
        on_error=lambda error, batch: errors.append(error),
    )


def track(message_id: str, event: str, user: str, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "event": event, "userId": user, "messageId": message_id, **extra}


def send_segment(client: httpx.Client, sb: Sandbox, *messages: dict[str, Any]) -> None:
    response = client.post(
        f"{sb.segment.url}/v1/batch", json={"batch": list(messages)}, auth=(WRITE_KEY, "")
    )
    assert response.status_code == 200, response.text


def send_posthog(
    client: httpx.Client, sb: Sandbox, event: str, user: str, key: str = API_KEY
) -> None:
    body = {"api_key": key, "batch": [{"event": event, "distinct_id": user}]}
    assert client.post(f"{sb.posthog.url}/batch/", json=body).status_code == 200


# -- tests ------------------------------------------------------------------------------------


def test_events_from_the_sdks_and_the_router_appear_without_a_reload(
    browser: WebDriver, sb: Sandbox, sdk_sessions: None
) -> None:
    page = Page(browser, sb.viewer_url)
    errors: list[Any] = []

    seg = segment_sdk(sb, WRITE_KEY, errors)
    try:
        _queued, seg_message = seg.track("sdk_user", "Checkout Started", {"cart": 3})
        seg.flush()
    finally:
        seg.shutdown()
    ph = posthog.Posthog(
        project_api_key=API_KEY,
        host=sb.posthog.url,
        max_retries=0,
        flush_interval=0.05,
        on_error=lambda error, batch: errors.append(error),
    )
    try:
        ph_uuid = ph.capture("Signed Up", distinct_id="sdk_user", properties={"plan": "pro"})
        ph.flush()
    finally:
        ph.shutdown()
    destinations = {
        "segment": {"plugin": "segment", "write_key": WRITE_KEY, "host": sb.segment.url},
        "posthog": {"plugin": "posthog", "api_key": API_KEY, "host": sb.posthog.url},
    }
    with Router(destinations) as router:
        event = Event.track("Order Completed", user_id="router_user", properties={"total": 5})
        assert router.send(event).ok

    assert errors == []
    assert ph_uuid is not None
    seg_row = page.row_for(seg_message["messageId"], "segment")
    ph_row = page.row_for(ph_uuid, "posthog")
    router_rows = [page.row_for(event.message_id, vendor) for vendor in ("segment", "posthog")]

    assert page.not_reloaded()
    assert "Checkout Started" in seg_row.text
    assert "sdk_user" in seg_row.text
    assert mask_key(WRITE_KEY) in seg_row.text
    assert "Signed Up" in ph_row.text
    assert mask_key(API_KEY) in ph_row.text
    assert all("Order Completed" in row.text and "router_user" in row.text for row in router_rows)
    rows = page.rows()
    assert len(rows) == 4
    newest = {row.get_attribute("data-message-id") for row in rows[:2]}
    assert newest == {event.message_id}  # newest first: the router's two deliveries
    assert WRITE_KEY not in page.visible_text()
    assert API_KEY not in page.visible_text()


def test_a_refused_request_is_shown_with_its_status_and_reason(
    browser: WebDriver, sb: Sandbox, sdk_sessions: None
) -> None:
    page = Page(browser, sb.viewer_url)
    errors: list[Any] = []

    seg = segment_sdk(sb, WRONG_WRITE_KEY, errors)
    try:
        seg.track("user_1", "Order Completed")
        seg.flush()
    finally:
        seg.shutdown()

    row = page.first("tr.row.refused", "the refused request's row")
    assert [getattr(error, "status", None) for error in errors] == [401]
    assert row.get_attribute("data-status") == "401"
    assert "wrong key" in row.text
    assert "write key is not one this emulator accepts" in row.text
    assert mask_key(WRONG_WRITE_KEY) in row.text
    assert WRONG_WRITE_KEY not in page.visible_text()
    assert WRONG_WRITE_KEY not in browser.page_source

    row.click()  # its details: status, error code, path
    detail = page.first("tr.detail", "the refused request's details")
    assert "invalid_key" in detail.text
    assert "/v1/batch" in detail.text
    assert "1 refused" in page.text("sources")


def test_filters_narrow_the_rows(browser: WebDriver, sb: Sandbox, client: httpx.Client) -> None:
    page = Page(browser, sb.viewer_url)
    send_segment(
        client,
        sb,
        track("m1", "Order Completed", "ada"),
        track("m2", "Signed Up", "grace"),
        {"type": "identify", "userId": "grace", "messageId": "m3", "traits": {"plan": "pro"}},
    )
    send_posthog(client, sb, "Signed Up", "linus")
    send_posthog(client, sb, "Order Completed", "ada", key=OTHER_API_KEY)
    page.wait_for_rows(5, "all five rows")

    page.type_into("f-event", "signed")
    signed = page.wait_for_rows(2, "the rows of 'Signed Up'")
    assert {row.get_attribute("data-vendor") for row in signed} == {"segment", "posthog"}
    page.choose("f-vendor", "posthog")
    (only,) = page.wait_for_rows(1, "PostHog's 'Signed Up'")
    assert "linus" in only.text

    page.choose("f-vendor", "")
    page.type_into("f-event", "")
    page.wait_for_rows(5, "every row again")
    page.type_into("f-user", "GRACE")  # case does not matter
    page.wait_for_rows(2, "grace's rows")
    page.choose("f-type", "identify")
    (identify,) = page.wait_for_rows(1, "grace's identify")
    assert identify.get_attribute("data-message-id") == "m3"

    page.choose("f-type", "")
    page.type_into("f-user", "")
    page.wait_for_rows(5, "every row again")
    # Two PostHog projects are told apart by their masked keys, and can be filtered on.
    keys = [o.get_attribute("value") for o in Select(browser.find_element(By.ID, "f-key")).options]
    assert {mask_key(API_KEY), mask_key(OTHER_API_KEY), mask_key(WRITE_KEY)} <= set(keys)
    page.choose("f-key", mask_key(OTHER_API_KEY))
    (other,) = page.wait_for_rows(1, "the other project's row")
    assert "ada" in other.text
    assert "key=" in browser.current_url  # the filters are kept in the URL


def test_expanding_a_row_shows_its_payload(
    browser: WebDriver, sb: Sandbox, client: httpx.Client
) -> None:
    page = Page(browser, sb.viewer_url)
    send_segment(client, sb, track("m1", "Order Completed", "ada", properties={"sku": "SKU-42"}))
    row = page.row_for("m1", "segment")
    assert browser.find_elements(By.CSS_SELECTOR, "tr.detail") == []
    assert "SKU-42" not in page.visible_text()  # compact rows: payloads wait for a click

    row.click()
    payload = page.first("tr.detail pre", "the payload")
    assert '"sku": "SKU-42"' in payload.text
    assert '"messageId": "m1"' in payload.text

    send_segment(client, sb, track("m2", "Later", "ada"))
    page.row_for("m2", "segment")
    assert '"sku": "SKU-42"' in page.visible_text()  # stays open while rows arrive

    page.row_for("m1", "segment").click()
    page.wait(lambda: browser.find_elements(By.CSS_SELECTOR, "tr.detail") == [], "it to close")


def test_clear_empties_the_page_and_the_emulators(
    browser: WebDriver, sb: Sandbox, client: httpx.Client
) -> None:
    page = Page(browser, sb.viewer_url)
    send_segment(client, sb, track("m1", "One", "ada"), track("m2", "Two", "ada"))
    send_posthog(client, sb, "Three", "ada")
    page.wait_for_rows(3, "three rows")

    browser.find_element(By.ID, "clear").click()

    page.wait_for_rows(0, "an empty page")
    assert browser.find_element(By.ID, "empty").is_displayed()
    assert sb.segment.events == []
    assert sb.posthog.events == []
    page.wait(lambda: "0 events" in page.text("sources"), "the counts to drop to zero")

    send_posthog(client, sb, "After", "ada")
    (after,) = page.wait_for_rows(1, "the next event")
    assert "After" in after.text

    sb.clear()  # a clear from elsewhere (a test, curl) empties the open page too
    page.wait_for_rows(0, "an empty page again")
    assert page.not_reloaded()


def test_event_values_are_shown_as_text_not_markup(
    browser: WebDriver, sb: Sandbox, client: httpx.Client
) -> None:
    page = Page(browser, sb.viewer_url)
    evil = '<img src=x onerror="window.sandboxPwned = 1">'
    send_segment(client, sb, track("m1", evil, "<b>ada</b>"))

    row = page.row_for("m1", "segment")

    assert evil in row.text
    assert "<b>ada</b>" in row.text
    assert row.find_elements(By.TAG_NAME, "img") == []
    assert row.find_elements(By.TAG_NAME, "b") == []
    assert browser.execute_script("return window.sandboxPwned") is None


def test_an_emulator_serves_the_same_page_for_itself(
    browser: WebDriver, sb: Sandbox, client: httpx.Client
) -> None:
    page = Page(browser, sb.posthog.url)
    send_posthog(client, sb, "Only Here", "ada")

    (row,) = page.wait_for_rows(1, "PostHog's row")

    assert "Only Here" in row.text
    assert browser.title == "posthog emulator"
