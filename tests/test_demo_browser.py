"""The demo page in a real browser: headless Chromium (the system's, never a downloaded
one) driven by Playwright against a real uvicorn server with the dataflow in-process
and the real dev broker. Clicking an item must change the recommendation list within a
couple of seconds and show the item among the user's recent items; a score's breakdown
opens on demand and adds up to it; the freshness sparkline and the reset work; on a
phone the first recommendation is in view without scrolling.

Without Chromium or Playwright the tests skip, unless RECSYS_REQUIRE_BROWSER=1 (CI sets
it), where they fail instead. Screenshots go to reports/demo*.png (git-ignored).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from core.settings import Settings
from featurestore import FeatureStore
from infra.process import serve_in_thread
from infra.serve import build_app
from tests.helpers import isolated_settings, publish, publish_slice_model

pytestmark = pytest.mark.integration

REPORTS = Path(__file__).resolve().parent.parent / "reports"
CHROMIUM = "/usr/bin/chromium"
WRITE_KEY = "demo-write-key"
UPDATE_WITHIN_MS = 4000
"""Click to a changed list on screen; the fold itself takes well under a second."""
DESKTOP = (1440, 1000)
PHONE = (390, 844)
"""A phone's CSS viewport (iPhone 12 to 14)."""


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package `playwright` is not installed (pip install -e '.[dev]')"
    if not (Path(CHROMIUM).is_file() or shutil.which("chromium")):
        return f"no Chromium at {CHROMIUM}: apt-get install -y chromium"
    return None


@pytest.fixture(scope="module")
def chromium_path() -> str:
    reason = _browser_missing()
    if reason:
        if os.environ.get("RECSYS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"RECSYS_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return CHROMIUM if Path(CHROMIUM).is_file() else str(shutil.which("chromium"))


@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """The app under uvicorn on a free port, as `just serve` runs it (dataflow in-process)."""
    store = FeatureStore.open(settings)
    publish(store, n=80, dim=16, n_profiles=10)
    store.close()
    with serve_in_thread(build_app(settings)) as base:
        yield base


@pytest.fixture(scope="module")
def server(broker, tmp_path_factory) -> Iterator[str]:
    with serving(isolated_settings(tmp_path_factory.mktemp("demo") / "var", broker)) as base:
        yield base


@pytest.fixture(scope="module")
def keyed_server(broker, tmp_path_factory) -> Iterator[str]:
    settings = isolated_settings(
        tmp_path_factory.mktemp("demo-keyed") / "var", broker, write_keys={WRITE_KEY}
    )
    with serving(settings) as base:
        yield base


@pytest.fixture
def open_page(chromium_path: str):
    """Opens pages in one headless Chromium; at the end, fails on any script error, CSP
    violation or failed request the test did not expect."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    expected: set[int] = set()

    def on_console(m) -> None:
        # A failed request is judged by on_response below (a new user's 404 is fine).
        if m.type == "error" and not m.text.startswith("Failed to load resource"):
            problems.append(f"console error: {m.text}")

    def on_response(r) -> None:
        new_user = r.status == 404 and "/users/" in r.url
        if r.status >= 400 and not new_user and r.status not in expected:
            problems.append(f"HTTP {r.status} for {r.url}")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True)

        def open_(
            url: str, expect_status: tuple[int, ...] = (), viewport: tuple[int, int] = DESKTOP
        ):
            expected.update(expect_status)
            pg = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            pg.on("console", on_console)
            pg.on("response", on_response)
            pg.set_default_timeout(10_000)
            pg.goto(url)
            return pg

        yield open_
        browser.close()
    assert not problems, problems


@pytest.fixture
def page(open_page, server: str):
    return open_page(f"{server}/demo")


def pick_user(pg, user: str) -> None:
    """Show ``user`` and wait until their lists are drawn (the page may still be drawing
    the user it opened with)."""
    from playwright.sync_api import expect

    pg.get_by_test_id("user-select").select_option(user)
    expect(pg.get_by_test_id("status")).to_contain_text(f"Showing user {user}.")


def rec_ids(pg) -> list[str]:
    return pg.get_by_test_id("rec-item").evaluate_all("els => els.map(e => e.dataset.itemId)")


def wait_for_list_change(pg, before: list[str], t0: float) -> float:
    """Milliseconds from t0 until the list on screen differs from ``before``."""
    from playwright.sync_api import expect

    expect(pg.locator("[data-testid=update-time].done")).to_be_visible(timeout=UPDATE_WITHIN_MS)
    took = (time.monotonic() - t0) * 1000
    assert rec_ids(pg) != before
    return took


def test_clicking_an_item_updates_the_list_and_the_features(page):
    from playwright.sync_api import expect

    pg = page
    pick_user(pg, "u3")
    expect(pg.get_by_test_id("current-user")).to_have_text("u3")
    expect(pg.get_by_test_id("rec-item")).to_have_count(10)
    expect(pg.get_by_test_id("recs-meta")).to_contain_text("Personalised")
    expect(pg.get_by_test_id("features-empty")).to_contain_text("long-term profile")
    before = rec_ids(pg)

    pg.get_by_test_id("search-input").fill("title 7")
    catalog = pg.get_by_test_id("catalog-list")
    expect(catalog.get_by_test_id("catalog-item").first).to_have_attribute("data-item-id", "i7")
    t0 = time.monotonic()
    catalog.get_by_test_id("view-i7").click()

    took = wait_for_list_change(pg, before, t0)
    assert took < UPDATE_WITHIN_MS
    expect(pg.get_by_test_id("update-time")).to_have_text(re.compile(r"^Updated in \d+ ms"))
    new = pg.locator("[data-testid=rec-item][data-new=true]")
    assert new.count() >= 1  # items that were not in the list before are marked
    recent = pg.get_by_test_id("recent-item").first
    expect(recent).to_have_attribute("data-item-id", "i7")
    expect(recent).to_contain_text("Title 7")
    expect(recent).to_contain_text("view")
    expect(pg.locator("[data-testid=affinity-row][data-category=Sci-Fi]")).to_contain_text("100%")
    expect(pg.get_by_test_id("session")).to_contain_text("Events folded1")
    for reasons in pg.locator("[data-testid=rec-item] .reasons").all():
        assert reasons.inner_text().strip()  # every item says why

    REPORTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(REPORTS / "demo.png"), full_page=True)


def test_a_fresh_anonymous_user_starts_cold_and_warms_up(page):
    from playwright.sync_api import expect

    pg = page
    pg.get_by_test_id("reset").click()
    expect(pg.get_by_test_id("current-user")).to_have_text(re.compile(r"^anon-[0-9a-f]{8}$"))
    expect(pg.get_by_test_id("recs-meta")).to_contain_text("Cold start")
    expect(pg.get_by_test_id("features-empty")).to_contain_text("new user")
    expect(pg.get_by_test_id("rec-item")).to_have_count(10)
    before = rec_ids(pg)
    clicked = before[0]

    t0 = time.monotonic()
    pg.get_by_test_id("recs-list").get_by_test_id(f"purchase-{clicked}").click()
    wait_for_list_change(pg, before, t0)
    assert clicked not in rec_ids(pg)  # bought: no longer recommended
    expect(pg.get_by_test_id("recs-meta")).to_contain_text("Personalised")
    expect(pg.get_by_test_id("recent-item").first).to_have_attribute("data-item-id", clicked)
    expect(pg.get_by_test_id("recent-item").first).to_contain_text("purchase")
    expect(pg.get_by_test_id("features-empty")).to_have_text("")
    pg.screenshot(path=str(REPORTS / "demo-anonymous.png"), full_page=True)


def test_when_writes_need_a_key_the_page_asks_for_it(open_page, keyed_server):
    from playwright.sync_api import expect

    pg = open_page(f"{keyed_server}/demo", expect_status=(401,))
    pick_user(pg, "u2")
    expect(pg.get_by_test_id("rec-item")).to_have_count(10)  # reads stay open
    before = rec_ids(pg)
    pg.get_by_test_id("recs-list").get_by_test_id(f"view-{before[0]}").click()
    expect(pg.get_by_test_id("status")).to_contain_text("needs a write API key")
    key = pg.get_by_test_id("api-key")
    expect(key).to_be_visible()  # the key box opened itself
    key.fill(WRITE_KEY)
    key.press("Enter")
    expect(pg.get_by_test_id("status")).to_contain_text("Showing user u2")
    expect(pg.get_by_test_id("rec-item")).to_have_count(10)
    before = rec_ids(pg)  # the list as drawn again with the key

    t0 = time.monotonic()
    pg.get_by_test_id("recs-list").get_by_test_id(f"view-{before[0]}").click()
    wait_for_list_change(pg, before, t0)
    expect(pg.get_by_test_id("recent-item").first).to_have_attribute("data-item-id", before[0])


def test_viewing_an_item_shows_the_items_like_it(page):
    """ "Because you viewed X": a row of items similar to the one just viewed, with reasons."""
    from playwright.sync_api import expect

    pg = page
    pg.get_by_test_id("reset").click()
    expect(pg.get_by_test_id("rec-item")).to_have_count(10)
    expect(pg.get_by_test_id("similar")).to_be_hidden()  # nothing viewed yet
    pg.get_by_test_id("search-input").fill("title 12")
    catalog = pg.get_by_test_id("catalog-list")
    expect(catalog.get_by_test_id("catalog-item").first).to_have_attribute("data-item-id", "i12")
    catalog.get_by_test_id("view-i12").click()

    expect(pg.get_by_test_id("similar-heading")).to_have_text("Because you viewed Title 12")
    similar = pg.get_by_test_id("similar-item")
    expect(similar).to_have_count(6)
    ids = similar.evaluate_all("els => els.map(e => e.dataset.itemId)")
    assert "i12" not in ids
    for row in similar.all():
        assert re.search(r"(similar to|often picked with) Title 12", row.inner_text())
    REPORTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(REPORTS / "demo-similar.png"), full_page=True)
    # Its items take events like any other: viewing one moves the row to that item.
    pg.get_by_test_id("similar-list").get_by_test_id(f"view-{ids[0]}").click()
    expect(pg.get_by_test_id("similar")).to_have_attribute("data-item-id", ids[0])


def test_the_score_breakdown_opens_per_item_and_adds_up(page):
    from playwright.sync_api import expect

    pg = page
    pick_user(pg, "u3")
    expect(pg.get_by_test_id("rec-item")).to_have_count(10)
    expect(pg.get_by_test_id("breakdown").first).to_be_hidden()  # on demand only
    second = pg.get_by_test_id("rec-item").nth(1)
    second.get_by_test_id("score").click()
    table = second.get_by_test_id("breakdown")
    expect(table).to_be_visible()
    expect(pg.get_by_test_id("rec-item").first.get_by_test_id("breakdown")).to_be_hidden()
    terms = table.get_by_test_id("term").evaluate_all(
        "rows => rows.map(r => [r.dataset.term, Number(r.dataset.value)])"
    )
    names = [name for name, _ in terms]
    assert len(names) == len(set(names)) >= 2  # each term once
    assert "ann_similarity" not in names
    score = float(second.get_by_test_id("score").get_attribute("data-score"))
    assert sum(v for _, v in terms) == score  # they add up, exactly, in the order shown
    expect(table.locator("tr.total")).to_contain_text(f"{score:.5f}")
    expect(second.get_by_test_id("score")).to_have_text(re.compile(rf"^{score:.3f}"))
    second.get_by_test_id("score").click()
    expect(table).to_be_hidden()


def test_freshness_sparkline_and_reset(page):
    from playwright.sync_api import expect

    pg = page
    pg.get_by_test_id("reset").click()
    expect(pg.get_by_test_id("rec-item")).to_have_count(10)
    fresh = pg.get_by_test_id("freshness")
    expect(fresh).to_have_attribute("data-count", "0")
    expect(pg.get_by_test_id("freshness-text")).to_have_text("No events sent from this page yet.")
    for n in (1, 2):
        before = rec_ids(pg)
        t0 = time.monotonic()
        pg.get_by_test_id("recs-list").get_by_test_id(f"view-{before[-1]}").click()
        wait_for_list_change(pg, before, t0)
        expect(fresh).to_have_attribute("data-count", str(n))
    expect(pg.get_by_test_id("freshness-text")).to_have_text(
        re.compile(r"^last \d+ ms · median \d+ ms · max \d+ ms over 2 events$")
    )
    points = pg.locator("[data-testid=freshness-spark] polyline").get_attribute("points")
    assert len(points.split()) == 2
    pg.get_by_test_id("rec-item").first.get_by_test_id("score").click()
    REPORTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(REPORTS / "demo-breakdown.png"), full_page=True)
    user = pg.get_by_test_id("current-user").inner_text()
    pg.get_by_test_id("search-input").fill("title 7")

    pg.get_by_test_id("reset").click()  # a new user and none of the page's history
    expect(pg.get_by_test_id("current-user")).not_to_have_text(user)
    expect(pg.get_by_test_id("current-user")).to_have_text(re.compile(r"^anon-[0-9a-f]{8}$"))
    expect(fresh).to_have_attribute("data-count", "0")
    expect(pg.get_by_test_id("recs-meta")).to_contain_text("Cold start")
    expect(pg.get_by_test_id("features-empty")).to_contain_text("new user")
    expect(pg.get_by_test_id("similar")).to_be_hidden()
    expect(pg.get_by_test_id("search-input")).to_have_value("")
    expect(pg.get_by_test_id("update-time")).to_have_text("")


def test_on_a_phone_the_recommendations_are_above_the_fold(open_page, server):
    from playwright.sync_api import expect

    pg = open_page(f"{server}/demo?user=u3", viewport=PHONE)
    expect(pg.get_by_test_id("rec-item")).to_have_count(10)

    def assert_first_in_view() -> None:
        box = pg.get_by_test_id("rec-item").first.bounding_box()
        assert box is not None
        assert pg.evaluate("window.scrollY") == 0
        assert 0 <= box["y"] and box["y"] + box["height"] <= PHONE[1], box
        assert 0 <= box["x"] and box["x"] + box["width"] <= PHONE[0], box
        # Nothing wider than the screen: no sideways scrolling either.
        assert pg.evaluate("document.documentElement.scrollWidth") <= PHONE[0]

    assert_first_in_view()
    before = rec_ids(pg)
    t0 = time.monotonic()
    pg.get_by_test_id("recs-list").get_by_test_id(f"view-{before[-1]}").click()
    wait_for_list_change(pg, before, t0)
    pg.evaluate("window.scrollTo(0, 0)")
    assert_first_in_view()  # the status and timing lines do not push it down
    REPORTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(REPORTS / "demo-phone.png"))


@pytest.fixture(scope="module")
def trained_server(broker, tmp_path_factory) -> Iterator[str]:
    """The service with a model trained on a MovieLens slice: its item tower places a new
    item by its text, as in production."""
    import encoder

    tmp = tmp_path_factory.mktemp("demo-trained")
    settings = isolated_settings(tmp / "var", broker)
    publish_slice_model(tmp, settings)
    with serve_in_thread(build_app(settings)) as base:
        encoder.warm()  # loaded here, on the main thread, before the page adds an item
        yield base


def test_an_item_added_from_the_page_enters_a_matching_users_list(open_page, trained_server):
    """A visitor views the Star Wars trilogy, adds a sequel from the page, and watches it
    enter their list, marked."""
    from playwright.sync_api import expect

    pg = open_page(f"{trained_server}/demo")
    pg.get_by_test_id("user-input").fill("sw-fan")
    pg.get_by_test_id("user-load").click()
    expect(pg.get_by_test_id("status")).to_contain_text("Showing user sw-fan.")
    catalog = pg.get_by_test_id("catalog-list")
    for n, (words, item) in enumerate(
        (("star wars", "50"), ("return of the jedi", "181"), ("empire strikes", "172")), 1
    ):
        pg.get_by_test_id("search-input").fill(words)
        catalog.get_by_test_id(f"view-{item}").click()
        expect(pg.get_by_test_id("recent-item")).to_have_count(n, timeout=UPDATE_WITHIN_MS)
    pg.get_by_test_id("add-item-toggle").click()
    pg.get_by_test_id("add-item-title").fill("Return of the Jedi II")
    pg.get_by_test_id("add-item-description").fill("The Star Wars saga goes on.")
    pg.get_by_test_id("add-item-categories").fill("Action, Adventure, Romance, Sci-Fi, War")
    pg.get_by_test_id("add-item-submit").click()
    status = pg.get_by_test_id("add-item-status")
    expect(status).to_have_attribute("data-state", "done", timeout=10_000)
    added = pg.locator("[data-testid=rec-item][data-added=true]")
    expect(added).to_have_count(1)
    expect(added).to_contain_text("Return of the Jedi II")
