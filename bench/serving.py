"""`just bench-api`: throughput and latency of the service as production starts it.

    recsys bench serving [--rates 250,500,1000] [--peak-connections 8]
        [--concurrency 1,8,32] [--duration 8] [--repeat 3] [--users N] [--items N] [--profile]

1. starts a dev broker (tansu) on a free port;
2. prepares an embedded store in a temp dir: a synthetic model (``bench.synthetic``) of
   100,000 items with long-term profiles for 100,000 users, and each user's real-time
   state folded from ~10 recent events (ending a minute ago) and written directly with
   ``FeatureStore.write_user_states``; then closes it (one process may open it);
3. starts ``python -m infra.serve`` on a free port with ``RECSYS_STATE_DIR`` (that store),
   ``RECSYS_KAFKA_BOOTSTRAP_SERVERS`` (the broker), ``RECSYS_API_AUTO_PUBLISH_LATEST=false``,
   so it also runs the in-process dataflow and the impression producer as production
   does on the embedded store (other ``RECSYS_*`` variables pass through);
4. with ``wrk`` (one thread; a Lua script picks a random known user per request): at
   each fixed offered load of ``--rates`` each connection waits in ``delay()`` before
   each request (a 2 s calibration run measures the latency and shortens the delay by
   it, so achieved ~= offered while the server keeps up), then unpaced with
   ``--peak-connections`` (the peak), for ``GET /healthz`` (the ceiling: a trivial
   JSON endpoint on the same server) and ``GET /recommendations/u<user>?k=10``;
   optionally (``--concurrency``) the closed-loop levels of the built-in generator
   (asyncio on raw keep-alive connections, ~17 us of client CPU per request);
5. reports medians over ``--repeat`` rounds of throughput and p50/p99 latency, the peak
   recommendations/healthz ratio and the server's CPU; stops everything it started;
6. then (``--ann-ratio``, the default) in this process, on the same store: recommendations
   per second (the route's work without HTTP: ``Recommender.recommend`` and the JSON)
   against bare ANN queries (top ``ranking.candidates`` of the same users' query vectors),
   alternating rounds, and their ratio.

``python -m bench.serving load ...`` (hidden) is the load generator process itself.
"""

from __future__ import annotations

import asyncio
import cProfile
import http.client
import io
import json
import os
import pstats
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

import numpy as np
import typer

from api.responses import Recommendations, encode_recommendations
from api.routes.recommendations import build_item_filter
from api.service import Recommender
from bench.synthetic import World, WorldConfig
from core.artifacts import save_session
from core.catalog import Catalog
from core.ranking import Query, build_query, rerank, sequence_scores
from core.session import SessionModel
from core.settings import Settings
from eventlog.admin import ensure_app_topics
from featurestore.backend import ItemFilter
from featurestore.store import FeatureStore
from infra.broker import DevBroker, free_port
from infra.process import ServeProcess
from training.sequence import SESSION, SelfAttentive, new_model

VERSION = "bench-api-1"
HOST = "127.0.0.1"
ENDPOINTS = {"healthz": "/healthz", "recommendations": "/recommendations/u{user}?k=10"}


# --- the load generator (runs in its own process) ------------------------------------------


async def _client(
    port: int,
    requests: list[bytes],
    rng: random.Random,
    start_at: float,
    stop_at: float,
    latencies: list[float],
    errors: list[str],
) -> None:
    """One connection, one request at a time (closed loop); records completions in the window."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while True:
            req = requests[rng.randrange(len(requests))]
            t0 = time.perf_counter()
            writer.write(req)
            status = await reader.readline()
            length = -1
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length < 0:
                raise RuntimeError(f"response without Content-Length: {status!r}")
            await reader.readexactly(length)
            t1 = time.perf_counter()
            if t1 >= stop_at:
                return
            if t0 >= start_at:
                latencies.append(t1 - t0)
                if not status.startswith(b"HTTP/1.1 200"):
                    errors.append(status.decode(errors="replace").strip())
    finally:
        writer.close()


async def _load(
    port: int, paths: list[str], concurrency: int, warmup: float, duration: float, seed: int
) -> dict[str, object]:
    requests = [f"GET {p} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode() for p in paths]
    start_at = time.perf_counter() + warmup
    stop_at = start_at + duration
    latencies: list[float] = []
    errors: list[str] = []
    cpu0 = time.process_time()
    await asyncio.gather(
        *(
            _client(
                port, requests, random.Random(seed * 1000 + i), start_at, stop_at, latencies, errors
            )
            for i in range(concurrency)
        )
    )
    cpu = time.process_time() - cpu0
    xs = sorted(latencies)
    q = statistics.quantiles(xs, n=100, method="inclusive") if len(xs) > 1 else [float("nan")] * 99
    return {
        "requests": len(xs),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "rps": len(xs) / duration,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "max_ms": (xs[-1] * 1000) if xs else float("nan"),
        "client_cpu_cores": cpu / (warmup + duration),
    }


app = typer.Typer(add_completion=False, rich_markup_mode="markdown")


@app.command("load", hidden=True)
def load_cli(
    port: Annotated[int, typer.Option(help="The service's port on 127.0.0.1.")],
    path: Annotated[str, typer.Option(help="The path to ask; may contain {user}.")],
    users: Annotated[int, typer.Option(min=1, help="Users {user} ranges over.")] = 1,
    concurrency: Annotated[int, typer.Option(min=1, help="Connections.")] = 1,
    warmup: Annotated[float, typer.Option(min=0.0, help="Unmeasured seconds.")] = 1.0,
    duration: Annotated[float, typer.Option(min=0.0, help="Measured seconds.")] = 5.0,
    seed: Annotated[int, typer.Option(help="Seed of the user choice.")] = 0,
) -> None:
    """The load generator process itself (closed loop on keep-alive connections)."""
    raise typer.Exit(load_main(SimpleNamespace(**locals())))


def load_main(args: Any) -> int:
    try:
        import uvloop  # optional: a faster event loop for the load generator

        uvloop.install()
    except ImportError:
        pass
    paths = (
        [args.path.format(user=u) for u in range(args.users)]
        if "{user}" in args.path
        else [args.path]
    )
    result = asyncio.run(
        _load(args.port, paths, args.concurrency, args.warmup, args.duration, args.seed)
    )
    print(json.dumps(result))
    return 0


# --- the store, the server ------------------------------------------------------------------


def prepare_store(settings: Settings, world: World, events_per_user: int) -> dict[str, float]:
    """Model + profiles + real-time state for every user, written as the dataflow would."""
    times: dict[str, float] = {}
    store = FeatureStore.open(settings)
    try:
        t0 = time.perf_counter()
        world.publish(store, VERSION, with_profiles=True)
        times["publish_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        events = world.events(world.cfg.users * events_per_user, end=time.time() - 60.0)
        states = world.fold(events, settings, VERSION)
        times["fold_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for lo in range(0, len(states), 1000):
            store.write_user_states(states[lo : lo + 1000])
        times["write_states_s"] = time.perf_counter() - t0
        times["users_with_state"] = len(states)
    finally:
        store.close()
    # The version's session model, where serving looks for it (random weights: the cost
    # does not depend on their values).
    assert settings.model_dir is not None
    (settings.model_dir / VERSION).mkdir(parents=True, exist_ok=True)
    save_session(settings.model_dir / VERSION, session_model(world))
    return times


def _query_vector(user: str, q: Query) -> np.ndarray:
    if q.vector is None:  # the profiled users all have state or a profile
        raise RuntimeError(f"user {user} has no query vector to search with")
    return q.vector


def session_model(world: World) -> SessionModel:
    cfg = replace(SESSION, dim=world.cfg.dim, content=False)  # same exported shapes
    model = new_model(world.cfg.items, cfg, world.cfg.seed)
    assert isinstance(model, SelfAttentive)  # SESSION is a self-attention encoder
    return model.export()


def start_server(state_dir: Path, bootstrap: str, log_path: Path) -> ServeProcess:
    """``python -m infra.serve`` on the prepared store; other RECSYS_* variables pass through."""
    return ServeProcess(
        {
            "RECSYS_STATE_DIR": str(state_dir),
            "RECSYS_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "RECSYS_API_AUTO_PUBLISH_LATEST": "false",
        },
        log_path,
        host=HOST,
        unset=("RECSYS_QDRANT_URL", "RECSYS_QDRANT_PATH", "RECSYS_MODEL_DIR"),
        ready_timeout=120.0,
    ).start()


def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


# --- the benchmark -------------------------------------------------------------------------


@dataclass
class Level:
    endpoint: str
    concurrency: int
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    server_cpu_cores: float
    client_cpu_cores: float


def run_level(
    server: ServeProcess,
    endpoint: str,
    users: int,
    concurrency: int,
    warmup: float,
    duration: float,
    seed: int,
    rnd: int,
) -> Level:
    cmd = [
        sys.executable,
        "-m",
        "bench.serving",
        "load",
        "--port",
        str(server.port),
        "--path",
        ENDPOINTS[endpoint],
        "--users",
        str(users),
        "--concurrency",
        str(concurrency),
        "--warmup",
        str(warmup),
        "--duration",
        str(duration),
        "--seed",
        str(seed),
    ]
    cpu0, t0 = server.cpu_seconds(), time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=warmup + duration + 120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    server_cpu = (server.cpu_seconds() - cpu0) / (time.perf_counter() - t0)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}): {err.decode()[-2000:]}")
    r = json.loads(out)
    if r["errors"]:
        print(
            f"  warning: {r['errors']} non-200 responses, e.g. {r['first_error']}", file=sys.stderr
        )
    return Level(
        endpoint,
        concurrency,
        rnd,
        r["rps"],
        r["p50_ms"],
        r["p99_ms"],
        r["max_ms"],
        r["errors"],
        server_cpu,
        r["client_cpu_cores"],
    )


# --- fixed offered load with wrk ---------------------------------------------------------

_WRK_LUA = """
local users, path, delay_ms = %(users)d, "%(path)s", %(delay)f
local counter = 0
function setup(thread) counter = counter + 1; thread:set("seed", %(seed)d + counter) end
function init(args) math.randomseed(seed or 1) end
function request()
  return wrk.format("GET", (path:gsub("{user}", tostring(math.random(0, users - 1)))))
end
%(delay_fn)s
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"p50_us\\": %%d, "
    .. "\\"p99_us\\": %%d, \\"max_us\\": %%d, \\"mean_us\\": %%f, \\"errors\\": %%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, latency.mean, e.connect + e.read + e.write + e.status + e.timeout))
end
"""


@dataclass
class WrkRun:
    endpoint: str
    offered: float | None
    """Nominal offered load (connections x 1000 / delay_ms); None: unpaced (peak)."""
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    server_cpu_cores: float
    mean_ms: float = 0.0


def run_wrk(
    server: ServeProcess,
    endpoint: str,
    users: int,
    rate: float | None,
    connections: int,
    duration: float,
    seed: int,
    workdir: Path,
    delay_ms: float | None = None,
) -> WrkRun:
    """One wrk run. With ``rate``, each connection waits ``delay_ms`` (default
    connections x 1000 / rate) before each request, which fixes the offered load."""
    if rate is not None and delay_ms is None:
        delay_ms = connections * 1000.0 / rate
    script = workdir / f"wrk-{endpoint}.lua"
    script.write_text(
        _WRK_LUA
        % {
            "users": users,
            "path": ENDPOINTS[endpoint],
            "delay": delay_ms or 0.0,
            "seed": seed,
            "delay_fn": "function delay() return delay_ms end" if rate is not None else "",
        }
    )
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        f"http://{HOST}:{server.port}",
    ]
    cpu0, t0 = server.cpu_seconds(), time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    cpu = (server.cpu_seconds() - cpu0) / (time.perf_counter() - t0)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout[-1000:]} {out.stderr[-1000:]}")
    r = json.loads(line[8:])
    return WrkRun(
        endpoint,
        rate,
        connections,
        r["requests"] / (r["duration_us"] / 1e6),
        r["p50_us"] / 1000,
        r["p99_us"] / 1000,
        r["max_us"] / 1000,
        r["errors"],
        cpu,
        r["mean_us"] / 1000,
    )


def run_fixed_rate(
    server: ServeProcess,
    endpoint: str,
    users: int,
    rate: float,
    duration: float,
    seed: int,
    workdir: Path,
) -> WrkRun:
    """wrk's delay() runs after each answer, so a connection's period is delay + latency:
    a short calibration run measures the mean latency and the delay is shortened by it
    (by at most half), so the achieved rate lands on the offered one while the server
    keeps up."""
    connections = max(2, min(64, round(rate / 25)))  # ~40 ms between a connection's requests
    period = connections * 1000.0 / rate
    probe = run_wrk(server, endpoint, users, rate, connections, 2, seed, workdir, period)
    delay = max(period / 2, period - probe.mean_ms)
    return run_wrk(server, endpoint, users, rate, connections, duration, seed, workdir, delay)


def check_answers(server: ServeProcess, world: World, sample: int, seed: int) -> dict[str, float]:
    """The served top-10 should follow the planted tastes: a sanity check, not a metric."""
    rng = random.Random(seed)
    personalized = hits = total = 0
    for _ in range(sample):
        u = rng.randrange(world.cfg.users)
        status, body = http_get(server.port, f"/recommendations/u{u}?k=10")
        if status != 200:
            raise RuntimeError(f"GET /recommendations/u{u} -> {status}: {body[:300]!r}")
        rec = json.loads(body)
        personalized += rec["strategy"] == "personalized"
        taste = {world.category_name(c) for c in world.taste[u].tolist()}
        for it in rec["items"]:
            total += 1
            hits += bool(taste.intersection(it["categories"]))
    return {
        "personalized": personalized / sample,
        "in_taste": hits / max(total, 1),
        "chance": world.cfg.tastes / world.cfg.categories,
    }


def summarize(levels: list[Level]) -> list[dict[str, float | int | str]]:
    rows: list[dict[str, float | int | str]] = []
    for c in sorted({lv.concurrency for lv in levels}):
        for ep in ENDPOINTS:
            xs = [lv for lv in levels if lv.endpoint == ep and lv.concurrency == c]
            rows.append(
                {
                    "endpoint": ep,
                    "concurrency": c,
                    "rounds": len(xs),
                    "rps": statistics.median(x.rps for x in xs),
                    "p50_ms": statistics.median(x.p50_ms for x in xs),
                    "p99_ms": statistics.median(x.p99_ms for x in xs),
                    "server_cpu_cores": statistics.median(x.server_cpu_cores for x in xs),
                    "client_cpu_cores": statistics.median(x.client_cpu_cores for x in xs),
                }
            )
    return rows


def print_summary(rows: list[dict[str, float | int | str]]) -> dict[int, float]:
    print(
        f"\n{'endpoint':<17}{'conc':>5}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'server CPU':>12}{'loadgen CPU':>13}   (medians of {rows[0]['rounds']} rounds)"
    )
    ratios: dict[int, float] = {}
    by = {(r["endpoint"], r["concurrency"]): r for r in rows}
    for r in rows:
        print(
            f"{r['endpoint']:<17}{r['concurrency']:>5}{r['rps']:>9.0f}{r['p50_ms']:>9.2f}"
            f"{r['p99_ms']:>9.2f}{r['server_cpu_cores']:>12.2f}{r['client_cpu_cores']:>13.2f}"
        )
        if r["endpoint"] == "recommendations":
            c = int(r["concurrency"])
            ratios[c] = float(r["rps"]) / float(by[("healthz", c)]["rps"])
    print(
        "recommendations/healthz throughput: "
        + ", ".join(f"{ratios[c]:.3f} at {c}" for c in sorted(ratios))
    )
    return ratios


def warm_recommender(
    settings: Settings,
    store: FeatureStore,
    world: World,
    n: int,
    seed: int,
    item_filter: ItemFilter | None = None,
) -> tuple[Catalog, Recommender, list[str]]:
    """The live catalogue, a Recommender on ``store`` and ``n`` random users, after 50
    requests that warm its caches and the HNSW graph."""
    catalogs = store.catalog_provider()
    catalog = catalogs.refresh()
    assert catalog is not None
    rec = Recommender(settings, store, catalogs)
    rng = random.Random(seed)
    users = [f"u{rng.randrange(world.cfg.users)}" for _ in range(n)]
    for u in users[:50]:
        rec.recommend(u, 10, item_filter=item_filter)
    return catalog, rec, users


def ann_ratio(settings: Settings, world: World, n: int, seed: int, rounds: int) -> dict[str, float]:
    """Recommendations per second in this process against bare ANN queries (the top
    ``ranking.candidates`` of the same users' query vectors, no filter), alternating
    rounds over the same ``n`` random users: the share of the ANN's pace that the rest of
    a request leaves. A recommendation is what the route runs without HTTP: the default
    filter, ``Recommender.recommend`` and the response's JSON. The ratio is against
    ``FeatureStore.search_items`` (hits as tuples); the same queries returning arrays
    (``search_item_rows``, what a recommendation asks) are timed too and reported beside
    it."""
    store = FeatureStore.open(settings)
    try:
        item_filter = build_item_filter(settings, None, None, True)
        catalog, rec, users = warm_recommender(settings, store, world, n, seed, item_filter)
        s = settings
        now = time.time()
        queries = [
            build_query(
                store.read_user_state(u),
                store.read_profile(catalog.version, u),
                catalog,
                now,
                s.fold.half_life_seconds,
                s.ranking.blend_mass,
                s.ranking.min_realtime_mass,
            )
            for u in users
        ]
        vectors = [_query_vector(u, q) for u, q in zip(users, queries, strict=True)]
        n_cand = s.ranking.candidates

        def ann() -> None:
            for v in vectors:
                store.search_items(catalog.version, v, n_cand)

        def ann_rows() -> None:
            for v in vectors:
                store.search_item_rows(catalog.version, v, n_cand)

        def recommend() -> None:
            for u in users:
                result = rec.recommend(u, 10, item_filter=item_filter)
                encode_recommendations(result, "r")

        per_s: dict[str, list[float]] = {"ann": [], "ann_rows": [], "recommend": []}
        for _ in range(rounds):
            for name, fn in (("ann", ann), ("recommend", recommend), ("ann_rows", ann_rows)):
                t0 = time.perf_counter()
                fn()
                per_s[name].append(n / (time.perf_counter() - t0))
    finally:
        store.close()
    return _ratio_summary(per_s, n, n_cand, rounds)


def _ratio_summary(
    per_s: dict[str, list[float]], n: int, n_cand: int, rounds: int
) -> dict[str, float]:
    """``ann_ratio``'s medians over the rounds, printed and returned."""
    ann_s = statistics.median(per_s["ann"])
    rows_s = statistics.median(per_s["ann_rows"])
    rec_s = statistics.median(per_s["recommend"])
    ratios = [r / a for r, a in zip(per_s["recommend"], per_s["ann"], strict=True)]
    vs_rows = [r / a for r, a in zip(per_s["recommend"], per_s["ann_rows"], strict=True)]
    load = os.getloadavg()[0]
    print(
        f"\nin-process, {n} random users, {rounds} alternating rounds (load average {load:.1f}): "
        f"bare ANN top-{n_cand} {ann_s:,.0f}/s, recommend + JSON {rec_s:,.0f}/s; "
        f"ratio {statistics.median(ratios):.3f} (rounds {min(ratios):.3f}-{max(ratios):.3f}); "
        f"bare ANN as arrays {rows_s:,.0f}/s, ratio to it {statistics.median(vs_rows):.3f}"
    )
    return {
        "ann_per_s": ann_s,
        "ann_rows_per_s": rows_s,
        "recommend_per_s": rec_s,
        "ratio": statistics.median(ratios),
        "ratio_to_rows": statistics.median(vs_rows),
        "load_average": load,
    }


def profile_recommend(
    settings: Settings, world: World, n: int, seed: int, out: Path | None
) -> None:
    """Where a recommendation's time goes, in-process (no HTTP): each stage timed alone on
    the same users, then cProfile of ``Recommender.recommend``."""
    store = FeatureStore.open(settings)
    try:
        catalog, rec, users = warm_recommender(settings, store, world, n, seed)
        now = time.time()
        s = settings
        states = {u: store.read_user_state(u) for u in users}
        profiles = {u: store.read_profile(catalog.version, u) for u in users}
        queries = {
            u: build_query(
                states[u],
                profiles[u],
                catalog,
                now,
                s.fold.half_life_seconds,
                s.ranking.blend_mass,
                s.ranking.min_realtime_mass,
            )
            for u in users
        }
        vectors = {u: _query_vector(u, q) for u, q in queries.items()}
        seen = {
            u: sorted(catalog.index[r.item_id] for r in st.recent if r.item_id in catalog.index)
            if (st := states[u])
            else []
            for u in users
        }
        cands = {
            u: store.search_items(catalog.version, vectors[u], s.ranking.candidates, seen[u])
            for u in users
        }
        trending = rec.trending(catalog, now)
        results = {u: rec.recommend(u, 10, now) for u in users}
        session = rec.sessions.get(catalog.version)
        assert session is not None, "prepare_store writes the version's session model"
        n_cand = s.ranking.candidates
        rng = random.Random(seed + 1)
        heavy = {  # a user with 5,000 seen items (fold.seen_cap): both ways to leave them out
            u: sorted(rng.sample(range(len(catalog.items)), 5000)) for u in users
        }

        def overfetch(u: str) -> list[tuple[int, float]]:
            hits = store.search_items(catalog.version, vectors[u], n_cand + 5000)
            drop = set(heavy[u])
            return [h for h in hits if h[0] not in drop][:n_cand]

        def respond(u: str) -> bytes:
            return Recommendations.from_result(results[u], "r").model_dump_json().encode()

        stages: list[tuple[str, Callable[[str], object]]] = [
            ("Recommender.recommend (all of it)", lambda u: rec.recommend(u, 10, now)),
            ("  store.read_user_state", store.read_user_state),
            ("  store.read_profile", lambda u: store.read_profile(catalog.version, u)),
            (
                "  build_query",
                lambda u: build_query(
                    states[u],
                    profiles[u],
                    catalog,
                    now,
                    s.fold.half_life_seconds,
                    s.ranking.blend_mass,
                    s.ranking.min_realtime_mass,
                ),
            ),
            (
                f"  store.search_items ({s.ranking.candidates}, seen excluded)",
                lambda u: store.search_items(
                    catalog.version, vectors[u], s.ranking.candidates, seen[u]
                ),
            ),
            (
                f"  store.search_items ({s.ranking.candidates}, seen excluded, available_only)",
                lambda u: store.search_items(
                    catalog.version,
                    vectors[u],
                    s.ranking.candidates,
                    seen[u],
                    ItemFilter(available_only=True),
                ),
            ),
            (
                f"  store.search_items ({s.ranking.candidates}, no filter)",
                lambda u: store.search_items(catalog.version, vectors[u], s.ranking.candidates),
            ),
            (
                f"  store.search_item_rows ({s.ranking.candidates}, no filter)",
                lambda u: store.search_item_rows(catalog.version, vectors[u], s.ranking.candidates),
            ),
            (
                f"  store.search_items ({n_cand}, 5,000 excluded: has-id)",
                lambda u: store.search_items(catalog.version, vectors[u], n_cand, heavy[u]),
            ),
            (f"  store.search_items ({n_cand} + 5,000, dropped after)", overfetch),
            (
                "  store.search_items (100, seen excluded)",
                lambda u: store.search_items(catalog.version, vectors[u], 100, seen[u]),
            ),
            (
                "  rerank (candidates -> 10)",
                lambda u: rerank(
                    cands[u],
                    catalog,
                    states[u],
                    trending,
                    rec.rank_params,
                    now,
                    queries[u].realtime_weight,
                    10,
                ),
            ),
            (
                "  sequence term (session model over recent items)",
                lambda u: sequence_scores(
                    np.array([r for r, _ in cands[u]], dtype=np.int64),
                    catalog,
                    states[u],
                    session,
                    now,
                ),
            ),
            ("response model -> JSON (in the app)", respond),
        ]
        print(
            f"\nin-process stage timings, {n} random users, median of 3 passes "
            "(no HTTP, no profiler):"
        )
        for name, fn in stages:
            passes = []
            for _ in range(3):
                t0 = time.perf_counter()
                for u in users:
                    fn(u)
                passes.append((time.perf_counter() - t0) / n)
            print(f"  {name:<46}{statistics.median(passes) * 1e6:9.0f} us")
        per_call = []
        for u in users:
            t0 = time.perf_counter()
            sequence_scores(
                np.array([r for r, _ in cands[u]], dtype=np.int64), catalog, states[u], session, now
            )
            per_call.append(time.perf_counter() - t0)
        q = statistics.quantiles(per_call, n=100)
        print(
            f"  sequence term per request: p50 {q[49] * 1e6:.0f} us, p99 {q[98] * 1e6:.0f} us "
            f"({session.max_len}-item model, dim {session.dim}, {len(catalog.items):,} items)"
        )

        prof = cProfile.Profile()
        prof.enable()
        for u in users:
            rec.recommend(u, 10)
        prof.disable()
    finally:
        store.close()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf).strip_dirs()
    stats.sort_stats("tottime").print_stats(20)
    stats.sort_stats("cumulative").print_stats(25)
    if out is not None:
        out.write_text(buf.getvalue())
        print(f"cProfile of Recommender.recommend written to {out}")


def _print_wrk(w: WrkRun, rnd: int) -> None:
    offered = f"{w.offered:6.0f}/s" if w.offered else "  peak  "
    print(
        f"  round {rnd + 1} {w.endpoint:<16} offered {offered} c={w.connections:<3} "
        f"{w.rps:7.0f} req/s  p50 {w.p50_ms:6.2f} ms  p99 {w.p99_ms:7.2f} ms  "
        f"max {w.max_ms:7.1f} ms  errors {w.errors}  server {w.server_cpu_cores:.2f} cores",
        flush=True,
    )


def summarize_wrk(runs: list[WrkRun]) -> list[dict[str, float | int | str | None]]:
    """Medians per (endpoint, offered load), then the peak ratio recommendations/healthz."""
    keys = sorted({(w.endpoint, w.offered) for w in runs}, key=lambda k: (k[0], k[1] or 1e12))
    rows: list[dict[str, float | int | str | None]] = []
    peak: dict[str, float] = {}
    print("\nwrk medians (req/s, ms):")
    print(
        "| endpoint | offered req/s | achieved req/s | p50 ms | p99 ms | max ms | errors | server CPU |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for ep, offered in keys:
        rs = [w for w in runs if w.endpoint == ep and w.offered == offered]
        row = {
            "endpoint": ep,
            "offered": offered,
            "rps": statistics.median(w.rps for w in rs),
            "p50_ms": statistics.median(w.p50_ms for w in rs),
            "p99_ms": statistics.median(w.p99_ms for w in rs),
            "max_ms": max(w.max_ms for w in rs),
            "errors": sum(w.errors for w in rs),
            "server_cpu": statistics.median(w.server_cpu_cores for w in rs),
        }
        rows.append(row)
        if offered is None:
            peak[ep] = float(statistics.median(w.rps for w in rs))
        print(
            f"| {ep} | {f'peak (c={rs[0].connections})' if offered is None else f'{offered:,.0f}'} "
            f"| {row['rps']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['max_ms']:.1f} "
            f"| {row['errors']} | {row['server_cpu']:.2f} |"
        )
    if "healthz" in peak and "recommendations" in peak:
        ratio = peak["recommendations"] / peak["healthz"]
        print(f"\npeak recommendations/healthz = {ratio:.3f} (target >= 0.40)")
        rows.append({"endpoint": "ratio", "offered": None, "rps": ratio})
    return rows


def _interrupt(*_: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so the finally blocks stop the server and the broker."""
    raise KeyboardInterrupt


@app.callback(
    invoke_without_command=True,
    help=__doc__,
    epilog="Example: recsys bench serving --rates 500 --repeat 1",
)
def cli(
    ctx: typer.Context,
    users: Annotated[int, typer.Option(min=1, help="Users with a profile and state.")] = 100_000,
    items: Annotated[int, typer.Option(min=1, help="Items of the synthetic model.")] = 100_000,
    categories: Annotated[int, typer.Option(min=1, help="Item categories.")] = 40,
    dim: Annotated[int, typer.Option(min=1, help="The trained model's dimension.")] = 64,
    events_per_user: Annotated[
        int, typer.Option(min=0, help="Recent events folded into each user's state.")
    ] = 10,
    concurrency: Annotated[
        str,
        typer.Option(
            help="Closed-loop levels with the built-in generator (comma-separated; empty: none)."
        ),
    ] = "",
    rates: Annotated[
        str,
        typer.Option(
            help="Fixed offered loads (req/s) driven by wrk, comma-separated; empty: none."
        ),
    ] = "250,500,1000",
    peak_connections: Annotated[
        int, typer.Option(min=0, help="wrk connections for the peak runs (0: none).")
    ] = 8,
    duration: Annotated[float, typer.Option(min=0.0, help="Measured seconds per level.")] = 5.0,
    warmup: Annotated[float, typer.Option(min=0.0, help="Unmeasured seconds per level.")] = 1.0,
    repeat: Annotated[int, typer.Option(min=1, help="Rounds over all levels.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic world.")] = 0,
    profile: Annotated[
        bool,
        typer.Option("--profile", help="Afterwards, cProfile Recommender.recommend in-process."),
    ] = False,
    profile_out: Annotated[Path, typer.Option(help="Where --profile writes.")] = Path(
        "bench-api.prof.txt"
    ),
    ann: Annotated[
        bool,
        typer.Option(
            "--ann-ratio/--no-ann-ratio",
            help="Afterwards, recommendations/s against bare ANN queries in-process.",
        ),
    ] = True,
    json: Annotated[Path | None, typer.Option(help="Also write the results here.")] = None,
) -> None:
    if ctx.invoked_subcommand is not None:
        return  # `load`: the generator process
    options = {k: v for k, v in locals().items() if k != "ctx"}
    options["profile"] = profile_out if profile else None
    raise typer.Exit(main(SimpleNamespace(**options)))


def main(args: Any) -> int:
    """The benchmark as ``args`` (the fields of ``cli``'s options) says."""
    levels_c = [int(c) for c in args.concurrency.split(",") if c]
    rates = [float(r) for r in args.rates.split(",") if r]
    signal.signal(signal.SIGTERM, _interrupt)

    tmp = Path(tempfile.mkdtemp(prefix="bench-api-"))
    broker = DevBroker(free_port(), log_path=tmp / "broker.log")
    server: ServeProcess | None = None
    try:
        broker.start()
        state_dir = tmp / "state"
        settings = Settings(
            state_dir=state_dir, kafka={"bootstrap_servers": broker.bootstrap}, qdrant={"url": None}
        )
        ensure_app_topics(settings)
        world = World(
            WorldConfig(
                users=args.users,
                items=args.items,
                categories=args.categories,
                dim=args.dim,
                seed=args.seed,
            )
        )
        prep = prepare_store(settings, world, args.events_per_user)
        print(
            f"store: {args.items:,} items (dim {args.dim}, {args.categories} categories), "
            f"{args.users:,} profiles, {prep['users_with_state']:,} users' real-time state; "
            f"publish {prep['publish_s']:.1f}s, fold {prep['fold_s']:.1f}s, "
            f"write states {prep['write_states_s']:.1f}s"
        )

        server = start_server(state_dir, broker.bootstrap, tmp / "server.log")
        ready_s = server.wait_ready()
        sanity = check_answers(server, world, 200, args.seed)
        c0, t0 = server.cpu_seconds(), time.perf_counter()
        time.sleep(3.0)
        idle = (server.cpu_seconds() - c0) / (time.perf_counter() - t0)
        print(
            f"server ready in {ready_s:.1f}s; idle it uses {idle:.2f} cores; "
            f"{sanity['personalized']:.0%} of answers personalized, "
            f"{sanity['in_taste']:.0%} of top-10 items in the user's planted tastes "
            f"(chance {sanity['chance']:.0%})"
        )

        levels: list[Level] = []
        for rnd in range(args.repeat):
            for c in levels_c:
                for ep in ENDPOINTS:
                    lv = run_level(
                        server, ep, args.users, c, args.warmup, args.duration, args.seed + rnd, rnd
                    )
                    levels.append(lv)
                    print(
                        f"  round {rnd + 1} {ep:<16} c={c:<3} {lv.rps:8.0f} req/s  "
                        f"p50 {lv.p50_ms:7.2f} ms  p99 {lv.p99_ms:7.2f} ms",
                        flush=True,
                    )
        rows = summarize(levels) if levels else []
        ratios = print_summary(rows) if rows else {}
        wrk_runs: list[WrkRun] = []
        wrk_summary: list[dict[str, float | int | str | None]] = []
        if shutil.which("wrk") and (rates or args.peak_connections):
            print(
                f"wrk: fixed offered loads {rates} req/s, then peak with "
                f"{args.peak_connections} connections; {args.duration:.0f}s each, "
                f"{args.repeat} rounds"
            )
            for rnd in range(args.repeat):
                for ep in ENDPOINTS:
                    for rate in rates:
                        wr = run_fixed_rate(
                            server, ep, args.users, rate, args.duration, args.seed + rnd, tmp
                        )
                        wrk_runs.append(wr)
                        _print_wrk(wr, rnd)
                    if args.peak_connections:
                        wr = run_wrk(
                            server,
                            ep,
                            args.users,
                            None,
                            args.peak_connections,
                            args.duration,
                            args.seed + rnd,
                            tmp,
                        )
                        wrk_runs.append(wr)
                        _print_wrk(wr, rnd)
            wrk_summary = summarize_wrk(wrk_runs)
        elif rates:
            print("wrk is not installed (apt-get install wrk): skipping the fixed-rate runs")
        server.stop(timeout=20)
        server = None
        vs_ann = ann_ratio(settings, world, 500, args.seed, max(3, args.repeat)) if args.ann else {}
        http_peak = [
            float(r["rps"] or 0)
            for r in wrk_summary
            if r["endpoint"] == "recommendations" and r["offered"] is None
        ]
        if vs_ann and http_peak:
            peak = http_peak[0]
            vs_ann["http_peak_ratio"] = peak / vs_ann["ann_per_s"]
            print(
                f"peak recommendations over HTTP ({peak:,.0f}/s) / bare ANN in-process = "
                f"{vs_ann['http_peak_ratio']:.3f}"
            )
        if args.profile:
            profile_recommend(settings, world, 500, args.seed, args.profile)
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "date": time.strftime("%Y-%m-%d"),
                        "users": args.users,
                        "items": args.items,
                        "dim": args.dim,
                        "prepare": prep,
                        "server_idle_cpu_cores": idle,
                        "sanity": sanity,
                        "summary": rows,
                        "ratios": ratios,
                        "vs_ann": vs_ann,
                        "levels": [asdict(lv) for lv in levels],
                        "wrk": wrk_summary,
                        "wrk_runs": [asdict(w) for w in wrk_runs],
                    },
                    indent=2,
                )
            )
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        if server is not None:
            server.stop(timeout=20)
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    app(prog_name="python -m bench.serving")
