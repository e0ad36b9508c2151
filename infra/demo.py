"""`just demo`: the whole loop on real data, on the embedded default.

1. starts a dev broker (tansu) on a free loopback port;
2. trains the two-tower on MovieLens 100K up to a cutoff, unless that model exists;
3. publishes it into a fresh embedded store and starts the service (API + dataflow
   in one process) as a child process;
4. replays one real user's first session after the cutoff through Kafka, event by
   event (POST /events), and after each event prints their top-5 with reasons;
5. stops everything it started.

The user is chosen as the one whose post-cutoff session leans hardest into one genre
(Sci-Fi by default), so the screen shows recommendations following what they watch.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from core.artifacts import list_versions
from core.records import ItemRecord
from core.settings import PROJECT_ROOT, Settings, get_settings
from eventlog.admin import ensure_app_topics
from featurestore.publish import publish_model_dir
from featurestore.store import FeatureStore
from infra.broker import DevBroker, free_port
from infra.process import ServeProcess, ServiceNotReady
from training.data import Interactions, load_movielens, quantile_time

CUTOFF_QUANTILE = 0.85
EVAL_RESULTS = Path("reports/eval/results.json")
"""The streaming evaluation's figures (``python -m evaluation.run``), quoted by the demo."""
MIN_HISTORY = 20
VERBS = {
    "view": "views",
    "click": "clicks",
    "add_to_cart": "adds to cart",
    "purchase": "buys",
    "rating": "rates",
}


@dataclass
class Replay:
    user_id: str
    events: list[tuple[str, str]]  # (item_id, event_type)
    history: int


@dataclass(frozen=True)
class DemoOptions:
    """What `recsys demo` replays; ``data_dir`` None: the settings' RECSYS_DATA_DIR."""

    data_dir: Path | None = None
    genre: str = "Sci-Fi"
    user: str | None = None
    events: int = 8
    pause: float = 0.3


_D = DemoOptions()
app = typer.Typer(add_completion=False, rich_markup_mode="markdown")


@app.command(help=__doc__, epilog="Example: recsys demo --user 405 --events 12 --genre Drama")
def cli(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="MovieLens 100K [default: RECSYS_DATA_DIR]", show_default=False),
    ] = _D.data_dir,
    genre: Annotated[
        str, typer.Option(help="Genre the replayed session should lean into.")
    ] = _D.genre,
    user: Annotated[
        str | None,
        typer.Option(help="Replay this user instead of choosing one.", show_default=False),
    ] = _D.user,
    events: Annotated[int, typer.Option(min=1, help="Events to replay.")] = _D.events,
    pause: Annotated[float, typer.Option(min=0.0, help="Seconds between events.")] = _D.pause,
) -> None:
    code = main(DemoOptions(**locals()))  # the parameters are DemoOptions' fields
    if code:
        raise typer.Exit(code)


def main(options: DemoOptions = _D) -> int:
    base = get_settings()
    args = options
    data_dir = options.data_dir or base.data_dir

    inter, items = load_movielens(data_dir)
    titles = {it.item_id: it for it in items}
    cutoff = quantile_time(inter, CUTOFF_QUANTILE)
    replay = choose_replay(inter, titles, cutoff, args.genre, args.events, args.user)

    demo_dir = base.state_dir / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)
    demo_dir.mkdir(parents=True)
    version = ensure_model(base, data_dir, cutoff)
    assert base.model_dir is not None
    print(explain_metrics(base.model_dir / version, PROJECT_ROOT / EVAL_RESULTS))

    with DevBroker(free_port(), log_path=demo_dir / "broker.log") as broker:
        env = {
            "RECSYS_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "RECSYS_STATE_DIR": str(demo_dir),
            "RECSYS_MODEL_DIR": str(base.model_dir),
            "RECSYS_API_AUTO_PUBLISH_LATEST": "false",
        }
        settings = Settings(
            kafka={"bootstrap_servers": broker.bootstrap},
            state_dir=demo_dir,
            model_dir=base.model_dir,
        )
        ensure_app_topics(settings)
        publish(settings, version)
        server = ServeProcess(env, demo_dir / "server.log")
        try:
            with server, httpx.Client(base_url=server.url, timeout=10) as api:
                run_replay(api, replay, titles, args.genre, args.pause)
        except ServiceNotReady as e:
            raise SystemExit(str(e)) from None
    print(f"\nDone. Server log: {server.log_path}")
    return 0 if server.returncode in (0, -signal.SIGTERM) else 1


def choose_replay(
    inter: Interactions,
    titles: Mapping[str, ItemRecord],
    cutoff: float,
    genre: str,
    n: int,
    user: str | None,
) -> Replay:
    """The user with history before the cutoff whose next n events hold most of `genre`."""
    before_counts = Counter(inter.user_ids[inter.ts < cutoff])
    after: dict[str, list[tuple[str, str]]] = {}
    for u, i, t, k in zip(inter.user_ids, inter.item_ids, inter.ts, inter.event_types, strict=True):
        if t >= cutoff and len(after.setdefault(u, [])) < n:
            after[u].append((i, k))

    def genre_hits(events: list[tuple[str, str]]) -> int:
        return sum(genre in titles[i].categories for i, _ in events if i in titles)

    if user is not None:
        if user not in after:
            raise SystemExit(f"user {user!r} has no events after the cutoff")
        return Replay(user, after[user], before_counts[user])
    candidates = [u for u, ev in after.items() if len(ev) == n and before_counts[u] >= MIN_HISTORY]
    if not candidates:
        raise SystemExit("no user with enough history before and events after the cutoff")
    best = max(candidates, key=lambda u: (genre_hits(after[u]), -int(u) if u.isdigit() else 0))
    return Replay(best, after[best], before_counts[best])


def ensure_model(settings: Settings, data_dir: Path, cutoff: float) -> str:
    """A model trained up to the cutoff; trains one (with its progress bar) if missing."""
    assert settings.model_dir is not None
    for version in reversed(list_versions(settings.model_dir)):
        config = json.loads((settings.model_dir / version / "config.json").read_text())
        if config.get("until_ts") == cutoff:
            print(f"Using model {version} (trained on events before the cutoff).")
            return version
    print("No model trained up to the demo cutoff yet: training one on MovieLens 100K.\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "training.train",
            "--data-dir",
            str(data_dir),
            "--until",
            repr(cutoff),
            "--no-publish",
        ],
        check=True,
    )
    return ensure_model(settings, data_dir, cutoff)


def explain_metrics(model_path: Path, eval_results: Path) -> str:
    """What the held-out figures printed at training mean, and what the real-time path
    adds, in the streaming evaluation's own figures (if its results file is there)."""
    metrics = json.loads((model_path / "metrics.json").read_text())
    model, pop = metrics.get("recall_at_10"), metrics.get("popularity", {}).get("recall_at_10")
    figures = ""
    if model is not None and pop is not None:
        figures = f": model {model:.4f}, popularity {pop:.4f}"
    lines = [
        f"\nHeld-out Recall@10 of model {model_path.name}{figures}.",
        "  That check scores the batch model alone: each user's profile, frozen at the",
        "  cutoff, ranks what they picked afterwards. It knows nothing of what they did",
        "  since, while what everyone watches in that period is a strong guess; so",
        "  popularity can match or beat it. The service never serves a frozen profile:",
        "  each event folds into the user's vector as it arrives, and the ranking adds",
        "  session, co-visitation and trending terms.",
    ]
    if eval_results.is_file():
        figs = json.loads(eval_results.read_text())["figures"]
        hr = {name: s["hr"] for name, s in figs["systems"].items()}
        lines += [
            "  Replayed event by event (the streaming evaluation, reports/eval/README.md), "
            "HR@10 is",
            f"  {hr['popularity']:.4f} for popularity, {hr['batch_two_tower']:.4f} for the "
            f"batch model and {hr['product']:.4f} with the",
            f"  real-time path: {figs['ratio_batch']:.1f}x the batch model.",
        ]
    else:
        lines.append("  The streaming evaluation (`recsys evaluate`) measures that.")
    lines.append("Below, one user's events arrive live and their recommendations follow them.")
    return "\n".join(lines)


def publish(settings: Settings, version: str) -> None:
    assert settings.model_dir is not None
    store = FeatureStore.open(settings)
    try:
        publish_model_dir(store, settings.model_dir / version, activate=True, show_progress=True)
    finally:
        store.close()


def run_replay(
    api: httpx.Client, replay: Replay, titles: Mapping[str, ItemRecord], genre: str, pause: float
) -> None:
    uid = replay.user_id
    print(
        f"\nReplaying user {uid}: {replay.history} ratings before the cutoff form their "
        f"long-term profile; their next {len(replay.events)} events arrive live through Kafka."
    )
    recs = api.get(f"/recommendations/{uid}", params={"k": 10}).raise_for_status().json()
    show("Before any live event (long-term profile only)", recs, genre)
    for n, (item_id, kind) in enumerate(replay.events, 1):
        item = titles[item_id]
        t0 = time.perf_counter()
        api.post(
            "/events",
            json={
                "event_type": kind,
                "user_id": uid,
                "item_id": item_id,
                "session_id": f"demo-{uid}",
            },
        ).raise_for_status()
        while api.get(f"/users/{uid}").json().get("event_count", 0) < n:
            time.sleep(0.005)
        folded_ms = (time.perf_counter() - t0) * 1000
        before = like(recs, item.categories)
        recs = api.get(f"/recommendations/{uid}", params={"k": 10}).raise_for_status().json()
        print(
            f"\n[{n}/{len(replay.events)}] user {uid} {VERBS.get(kind, kind)} {item.title} "
            f"({', '.join(item.categories)})  -> folded in {folded_ms:.0f} ms; top-10 sharing "
            f"a genre with it: {before} -> {like(recs, item.categories)}"
        )
        show(f"top-5 now (real-time weight {recs['realtime_weight']:.0%})", recs, genre)
        time.sleep(pause)


def like(recs: dict[str, Any], categories: list[str]) -> int:
    """How many recommended items share a category with the item just watched."""
    return sum(bool(set(categories) & set(i["categories"])) for i in recs["items"])


def show(title: str, recs: dict[str, Any], genre: str) -> None:
    items = recs["items"]
    share = sum(genre in i["categories"] for i in items)
    print(f"  {title}; {genre} in top-10: {share}/10")
    for i, it in enumerate(items[:5], 1):
        print(
            f"   {i}. {it['title'][:42]:<42} {'/'.join(it['categories'])[:28]:<28} "
            f"{it['score']:.3f}  {it['reasons'][0]}"
        )


if __name__ == "__main__":
    app(prog_name="python -m infra.demo")
