"""The service end of co-visitation: neighbours of the user's last item join the ANN
candidates, rank first with a reason naming that item, and request exclusions hold."""

from __future__ import annotations

from api.service import Recommender
from core.records import ItemRecord
from core.state import RecentItem, UserState
from featurestore.backend import ItemFilter
from featurestore.store import FeatureStore
from tests.helpers import make_model


def test_covisited_item_is_retrieved_ranked_and_explained(make_settings):
    settings = make_settings(
        candidates=10,
        weight_covisit=5.0,
        covisit_candidates=5,
        weight_popularity=0.0,
        weight_recent=0.0,
    )
    record, items, vecs, profiles = make_model("v1", n=50, dim=8)
    # i0 is co-visited with i49; i49 is nowhere near the user's vector in the ANN.
    items[0] = ItemRecord("i0", "Alien", ["Sci-Fi"], 0.0, {"covisit": [["i49", 1.0]]})
    store = FeatureStore.open(settings)
    try:
        store.publish_model(record, items, vecs, profiles)
        store.activate("v1")
        now = 1_000_000.0
        state = UserState(
            "fan", vector=-vecs[49].copy(), mass=1.0, last_ts=now - 120, model_version="v1"
        )
        state.recent = [RecentItem("i0", now - 120, "view")]
        store.write_user_states([state])
        catalogs = store.catalog_provider()
        catalogs.refresh()
        rec = Recommender(settings, store, catalogs)

        ann_only = {
            r for r, _ in store.search_items("v1", rec.catalog().head.apply(state.vector), 10)
        }
        assert 49 not in ann_only
        res = rec.recommend("fan", 3, now=now)
        top = res.items[0]
        assert res.catalog.items[top.row].item_id == "i49"
        assert top.reasons[0] == "often picked with Alien, which you viewed 2 minutes ago"

        again = rec.recommend("fan", 3, now=now, exclude_items=["i49"])
        assert "i49" not in {again.catalog.items[r.row].item_id for r in again.items}

        # A request filter holds for co-visited candidates as it does inside the ANN.
        cat49 = items[49].categories[0]
        others = rec.recommend("fan", 3, now=now, item_filter=ItemFilter((), (cat49,)))
        assert "i49" not in {others.catalog.items[r.row].item_id for r in others.items}
    finally:
        store.close()
