"""The demo page's static serving and the browse endpoints it uses (no broker needed:
nothing here produces events). The page in a real browser: tests/test_demo_browser.py."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.routes.demo import STATIC_DIR
from core.records import ItemRecord
from featurestore import FeatureStore
from tests.helpers import isolated_settings, make_model

# Items i0..i39 from make_model (odd: Sci-Fi, even: Drama/War; popularity grows with i),
# a few renamed so search has something to rank.
TITLES = {
    1: "Alien",
    3: "Aliens",
    5: "Alien: Resurrection",
    7: "Mars Attacks: an Alien Invasion",
    9: "Predalien",
    2: "Amélie",
    11: "Star Wars",
    13: "Star Trek: First Contact",
}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = isolated_settings(
        tmp_path_factory.mktemp("demo") / "var",
        inprocess=False,
        impressions_enabled=False,
    )
    store = FeatureStore.open(settings)
    record, items, vecs, profiles = make_model("v1", n=40, dim=8, n_profiles=12)
    items = [
        ItemRecord(it.item_id, TITLES.get(i, it.title), it.categories, it.popularity, it.extra)
        for i, it in enumerate(items)
    ]
    store.publish_model(record, items, vecs, profiles)
    store.activate("v1")
    with TestClient(create_app(settings, store=store)) as c:
        yield c
    store.close()


def ids(body: dict) -> list[str]:
    return [it["item_id"] for it in body["items"]]


def test_demo_page_is_served_with_its_assets(client):
    r = client.get("/demo")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    for testid in ("user-select", "reset", "search-input", "recs-list", "recent-list"):
        assert f'data-testid="{testid}"' in html
    # adding an item: a closed <details> below the list, so on a phone the list stays first
    add = html.index('<details id="add-item" class="add-item" data-testid="add-item">')
    assert html.index('data-testid="recs-list"') < add
    for testid in ("add-item-title", "add-item-description", "add-item-categories"):
        assert f'data-testid="{testid}"' in html[add:]
    assets = re.findall(r'(?:src|href)="(/demo/assets/[^"]+)"', html)
    assert sorted(assets) == ["/demo/assets/demo.css", "/demo/assets/demo.js"]
    assert (
        client.get("/demo/assets/demo.js")
        .headers["content-type"]
        .startswith(("text/javascript", "application/javascript"))
    )
    assert client.get("/demo/assets/demo.css").headers["content-type"].startswith("text/css")
    assert client.get("/demo/assets/nope.js").status_code == 404
    assert "/demo" not in client.get("/openapi.json").json()["paths"]  # not part of the API


def test_demo_page_loads_nothing_from_elsewhere():
    files = sorted(p for p in STATIC_DIR.iterdir() if p.is_file())
    assert {p.name for p in files} >= {"index.html", "demo.js", "demo.css"}
    for p in files:
        text = p.read_text(encoding="utf-8")
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), p.name
        assert "@import" not in text and "url(" not in text, p.name


def test_search_ranks_title_matches_then_popularity(client):
    body = client.get("/items?q=alien").json()
    # The exact title, titles starting with the query (most popular first), then a word
    # starting with it, then the query inside a word.
    assert ids(body) == ["i1", "i5", "i3", "i7", "i9"]
    assert body["total"] == 5 and body["offset"] == 0 and body["model_version"] == "v1"
    assert body["items"][1] == {
        "item_id": "i5",
        "title": "Alien: Resurrection",
        "categories": ["Sci-Fi"],
        "popularity": 0.125,
    }
    assert ids(client.get("/items?q=ALIENS").json()) == ["i3"]
    assert ids(client.get("/items?q=amelie").json()) == ["i2"]  # accents ignored
    assert ids(client.get("/items?q=wars star").json()) == ["i11"]  # every word, any order
    assert ids(client.get("/items?q=i13").json())[0] == "i13"  # an item id finds the item
    assert client.get("/items?q=zzz").json() == {
        "model_version": "v1",
        "total": 0,
        "offset": 0,
        "items": [],
    }


def test_browse_filters_by_category_and_pages(client):
    page1 = client.get("/items?category=Sci-Fi&limit=15").json()
    assert page1["total"] == 20 and len(page1["items"]) == 15
    assert ids(page1)[:3] == ["i39", "i37", "i35"]  # most popular first
    page2 = client.get("/items?category=Sci-Fi&limit=15&offset=15").json()
    assert len(page2["items"]) == 5 and not set(ids(page1)) & set(ids(page2))
    both = client.get("/items?category=War&category=Sci-Fi&limit=100").json()
    assert both["total"] == 40
    assert ids(client.get("/items?q=alien&category=Drama").json()) == []
    assert client.get("/items").json()["total"] == 40
    assert len(client.get("/items").json()["items"]) == 24  # the default page


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("offset=-1", "offset"),
        ("q=" + "x" * 201, "q"),
        ("category=Westerns", "Westerns"),
        ("category=", "category"),
    ],
)
def test_bad_browse_parameters_get_422(client, query, fragment):
    r = client.get(f"/items?{query}")
    assert r.status_code == 422
    assert fragment in str(r.json()["detail"])


def test_categories_and_users_to_pick(client):
    cats = client.get("/categories").json()
    assert cats == {
        "model_version": "v1",
        "categories": [
            {"name": "Drama", "items": 20},
            {"name": "Sci-Fi", "items": 20},
            {"name": "War", "items": 20},
        ],
    }
    users = client.get("/users?limit=3").json()
    assert users["total"] == 12 and users["model_version"] == "v1"
    assert users["users"] == [
        {"user_id": "u0", "seen_items": 2},
        {"user_id": "u1", "seen_items": 2},
        {"user_id": "u10", "seen_items": 2},
    ]
    rest = client.get("/users?limit=100&offset=3").json()["users"]
    assert len(rest) == 9 and rest[0]["user_id"] == "u11"
    assert client.get("/users?limit=0").status_code == 422
    # Any listed user has a profile, so GET /users/{id} knows them.
    assert client.get("/users/u10").json()["has_long_term_profile"] is True


def test_browse_needs_a_read_key_when_reads_are_keyed(tmp_path):
    settings = isolated_settings(
        tmp_path / "var", read_keys={"r"}, inprocess=False, impressions_enabled=False
    )
    store = FeatureStore.open(settings)
    record, items, vecs, profiles = make_model("v1", n=20)
    store.publish_model(record, items, vecs, profiles)
    store.activate("v1")
    with TestClient(create_app(settings, store=store)) as c:
        assert c.get("/demo").status_code == 200  # the page itself holds no data
        for path in ("/items", "/categories", "/users"):
            assert c.get(path).status_code == 401
            assert c.get(path, headers={"X-API-Key": "r"}).status_code == 200
    store.close()


def test_the_page_shows_the_live_model_from_the_read_only_listing(client):
    assert 'data-testid="model-info"' in client.get("/demo").text
    assert '"/models"' in client.get("/demo/assets/demo.js").text
    overview = client.get("/models").json()  # no key configured: open, like the page's reads
    assert overview["active"] == "v1"
    (live,) = overview["models"]
    assert live["version"] == "v1" and live["active"] and live["created_at"]
    assert set(live["held_out"]) >= {"recall_at_10", "popularity_recall_at_10"}
