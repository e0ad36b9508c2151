"""The catalogue-write contract (``core.items``): what is refused and why, and what each
write makes of an item. Pure: no broker, no store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core import items as ci
from core.records import ItemRecord
from tests.helpers import make_item_head


def raw(**fields) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (raw(op="upsert", item_id="a"), "missing_title"),
        (raw(op="upsert", item_id="a", title="  "), "missing_title"),
        (raw(op="upsert", item_id="a", title="x" * 501), "text_too_long"),
        (raw(op="upsert", item_id="a", title="t", description="d" * 5001), "text_too_long"),
        (raw(op="upsert", item_id="a", title="t", colour="red"), "unknown_field"),
        (raw(op="upsert", item_id="a", title=5), "invalid_field"),
        (raw(op="upsert", item_id="a", title="t", categories="Drama"), "invalid_field"),
        (raw(op="upsert", item_id="a", title="t", categories=["c"] * 33), "too_many_categories"),
        (raw(op="upsert", item_id="a", title="t", attributes={"title": "x"}), "invalid_field"),
        (raw(op="upsert", item_id="a/b", title="t"), "invalid_id"),
        (raw(op="rename", item_id="a"), "invalid_field"),
        (b"{nope", "malformed_json"),
    ],
)
def test_a_write_that_breaks_the_contract_is_refused_with_its_kind(body, kind):
    with pytest.raises(ci.InvalidItem) as e:
        ci.decode(body)
    assert e.value.kind == kind and str(e.value)


def test_writes_round_trip_through_the_topics_encoding():
    for w in (
        ci.Upsert(item_id="a", title="Heat", categories=["Crime"], attributes={"year": 1995}),
        ci.Patch(item_id="a", available=False),
        ci.Delete(item_id="a"),
    ):
        assert ci.decode(ci.encode(w)) == w


def test_post_body_takes_one_item_or_a_list_without_op():
    assert [w.item_id for w in ci.decode_upserts(raw(item_id="a", title="A"))] == ["a"]
    body = json.dumps([{"item_id": "a", "title": "A"}, {"item_id": "b", "title": "B"}]).encode()
    assert [w.item_id for w in ci.decode_upserts(body)] == ["a", "b"]
    with pytest.raises(ci.InvalidItem) as e:
        ci.decode_upserts(
            json.dumps([{"item_id": str(k), "title": "t"} for k in range(1001)]).encode()
        )
    assert e.value.kind == "too_many"


def test_patch_changes_only_what_it_names_and_delete_keeps_the_row_unavailable():
    trained = ItemRecord("m1", "Heat", ["Crime"], 0.7, {"year": 1995, "covisit": [["m2", 1.0]]})
    patched = ci.apply(trained, ci.Patch(item_id="m1", available=False))
    assert patched is not None
    assert (patched.title, patched.categories, patched.popularity) == ("Heat", ["Crime"], 0.7)
    assert patched.extra["available"] is False and patched.extra["year"] == 1995
    assert not ci.text_changed(trained, patched)  # the trained vector stays
    retitled = ci.apply(patched, ci.Patch(item_id="m1", title="Heat (director's cut)"))
    assert retitled is not None and ci.text_changed(patched, retitled)
    gone = ci.apply(trained, ci.Delete(item_id="m1"))
    assert gone is not None and gone.extra["available"] is False and gone.title == "Heat"
    assert ci.apply(None, ci.Patch(item_id="x", title="t")) is None  # unknown: dead letter
    assert ci.apply(None, ci.Delete(item_id="x")) is None


def test_an_upsert_replaces_the_item_but_keeps_what_training_learned_about_it():
    trained = ItemRecord("m1", "Heat", ["Crime"], 0.7, {"year": 1995, "covisit": [["m2", 1.0]]})
    new = ci.apply(trained, ci.Upsert(item_id="m1", title="Heat", categories=["Thriller"]))
    assert new is not None
    assert new.categories == ["Thriller"] and "year" not in new.extra
    assert new.popularity == 0.7 and new.extra["covisit"] == [["m2", 1.0]]


def test_item_text_is_what_training_embedded_for_items_without_a_description():
    item = ItemRecord("1", "Blade Runner", ["Film-Noir", "Sci-Fi"], extra={"year": 1982})
    assert ci.item_text(item) == "Blade Runner (1982). Genres: Film-Noir, Sci-Fi."
    item.extra["description"] = "Replicants."
    assert ci.item_text(item) == "Blade Runner (1982). Replicants. Genres: Film-Noir, Sci-Fi."


def test_place_puts_new_items_after_the_trained_ones_and_keeps_trained_vectors():
    trained = [ItemRecord(f"i{k}", f"T{k}", ["Drama"]) for k in range(3)]
    vecs = np.eye(3, 8, dtype=np.float32)
    head = make_item_head()
    text = np.ones(4, np.float32) / 2
    same = ci.CatalogEntry(ItemRecord("i1", "T1", ["Drama"], extra={"available": False}), text, 0)
    new = ci.CatalogEntry(ItemRecord("n", "New", ["War"]), text, 1)
    rows = {row: (rec, vec) for row, rec, vec in ci.place([same, new], trained, vecs, head)}
    assert rows[1][1].tolist() == vecs[1].tolist()  # text unchanged: the trained vector
    assert rows[3][0] is ci.TOMBSTONE  # i1's slot row: a placeholder
    np.testing.assert_allclose(rows[4][1], head.embed(text[None], [["War"]])[0], atol=1e-6)
