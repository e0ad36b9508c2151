"""Figures of a replay as tables, a markdown report and PNG plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.prequential import Run
from evaluation.scoring import coverage, summarize

BASELINES = ("popularity", "cooc_knn", "als", "sasrec", "gru4rec", "batch_two_tower")
SINCE_BUCKETS = ((0, 0), (1, 1), (2, 4), (5, 9), (10, 19), (20, 49), (50, 10**9))
ACTIVITY_BUCKETS = ((0, 0), (1, 19), (20, 49), (50, 99), (100, 199), (200, 10**9))
HISTORY_BUCKETS = ((0, 0), (1, 4), (5, 19), (20, 49), (50, 99), (100, 199), (200, 10**9))
POSITION_BUCKETS = ((1, 1), (2, 2), (3, 5), (6, 10), (11, 20), (21, 50), (51, 10**9))
LABELS = {
    "popularity": "popularity",
    "cooc_knn": "co-occurrence kNN",
    "als": "ALS (implicit)",
    "sasrec": "SASRec",
    "gru4rec": "GRU4Rec",
    "batch_two_tower": "batch two-tower",
    "realtime_no_rerank": "real-time, no re-rank",
    "product": "product",
    "product_mmr": "product + MMR (lambda 0.8)",
    "product_sequence": "product + session-model term (weight 0.2)",
    "product_no_sequence": "product without the session-model term",
}


def _label(lo: int, hi: int) -> str:
    if lo == hi:
        return str(lo)
    return f"{lo}+" if hi >= 10**9 else f"{lo}-{hi}"


def groups(systems: Sequence[str]) -> dict[str, list[str]]:
    """Reported system -> the replayed systems it averages: ``<model>_seed<N>`` are one
    model trained with N seeds; every other system stands for itself."""
    out: dict[str, list[str]] = {}
    for s in systems:
        base, _, seed = s.rpartition("_seed")
        out.setdefault(base if base and seed.isdigit() else s, []).append(s)
    return out


def _system_metrics(run: Run, s: str) -> dict[str, float]:
    m = summarize(run.ranks[s])
    m["coverage"] = coverage(run.lists[s], run.n_items)
    m["diversity"] = float(run.diversity[s].mean()) if len(run.diversity[s]) else 0.0
    m["hr_cold_items"] = summarize(run.ranks[s][run.item_cold])["hr"]
    m["hr_cold_users"] = summarize(run.ranks[s][run.user_cold])["hr"]
    m["hr_warm_users"] = summarize(run.ranks[s][~run.user_cold])["hr"]
    return m


def figures(run: Run) -> dict[str, Any]:
    """Per reported system its metrics; a seeded model's are the mean over its seeds, with
    ``<metric>_std`` (sample standard deviation) and ``seeds`` (each seed's HR/NDCG)."""
    out: dict[str, Any] = {"systems": {}, "events": len(run.user_cold)}
    for name, members in groups(run.systems).items():
        per = [_system_metrics(run, s) for s in members]
        m: dict[str, Any] = {k: float(np.mean([p[k] for p in per])) for k in per[0]}
        m["events"] = int(per[0]["events"])
        if len(members) > 1 or members[0] != name:
            for key in ("hr", "ndcg", "mrr", "hr_cold_users", "hr_warm_users"):
                m[f"{key}_std"] = (
                    float(np.std([p[key] for p in per], ddof=1)) if len(per) > 1 else 0.0
                )
            m["seeds"] = {
                s.rpartition("_seed")[2]: {"hr": p["hr"], "ndcg": p["ndcg"]}
                for s, p in zip(members, per, strict=True)
            }
        out["systems"][name] = m
    out["cold_user_share"] = float(run.user_cold.mean()) if len(run.user_cold) else 0.0
    out["cold_item_events"] = int(run.item_cold.sum())
    out["since_cutoff"] = _breakdown(run, run.since_cutoff, SINCE_BUCKETS)
    out["activity"] = _breakdown(run, run.train_events, ACTIVITY_BUCKETS)
    if len(run.history):
        out["history"] = _breakdown(run, run.history, HISTORY_BUCKETS)
        out["session_position"] = _breakdown(run, run.session_position, POSITION_BUCKETS)
    hr = {s: out["systems"][s]["hr"] for s in out["systems"]}
    base = {s: hr[s] for s in BASELINES if s in hr}
    if "product" in hr and base:
        best = max(base, key=lambda s: base[s])
        out["best_baseline"] = best
        out["ratio_best_baseline"] = hr["product"] / base[best] if base[best] else float("inf")
    if "product" in hr and hr.get("batch_two_tower"):
        out["ratio_batch"] = hr["product"] / hr["batch_two_tower"]
    return out


def _breakdown(
    run: Run, values: np.ndarray, buckets: Sequence[tuple[int, int]]
) -> list[dict[str, Any]]:
    """HR@10 and NDCG@10 per bucket of ``values`` (seeded models: mean over seeds)."""
    rows = []
    grouped = groups(run.systems)
    for lo, hi in buckets:
        mask = (values >= lo) & (values <= hi)
        per = {s: summarize(run.ranks[s][mask]) for s in run.systems}
        rows.append(
            {
                "bucket": _label(lo, hi),
                "events": int(mask.sum()),
                "hr": {g: float(np.mean([per[s]["hr"] for s in m])) for g, m in grouped.items()},
                "ndcg": {
                    g: float(np.mean([per[s]["ndcg"] for s in m])) for g, m in grouped.items()
                },
            }
        )
    return rows


def plot(fig: dict[str, Any], out_dir: Path) -> list[Path]:
    # Lazy: matplotlib is heavy and only the report's plots need it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(fig["systems"])
    paths = []

    f, ax = plt.subplots(figsize=(8, 4))
    hr = [fig["systems"][s]["hr"] for s in systems]
    colors = ["#c44" if s.startswith("product") else "#888" for s in systems]
    ax.barh([LABELS.get(s, s) for s in systems], hr, color=colors)
    for i, v in enumerate(hr):
        ax.text(v, i, f" {v:.3f}", va="center")
    ax.set_xlabel("HR@10 (prequential, test period)")
    ax.invert_yaxis()
    ax.set_xlim(0, max(hr) * 1.2 if hr else 1)
    f.tight_layout()
    paths.append(out_dir / "hr_by_system.png")
    f.savefig(paths[-1], dpi=110)
    plt.close(f)

    for key, title, name in (
        (
            "since_cutoff",
            "user's events since the cutoff (last batch profile)",
            "hr_vs_events_since_cutoff.png",
        ),
        ("activity", "user's events before the cutoff (0 = cold user)", "hr_by_user_activity.png"),
        *BY_SEQUENCE,
    ):
        if key not in fig:
            continue
        rows = fig[key]
        f, ax = plt.subplots(figsize=(10, 4))
        x = np.arange(len(rows))
        for s in systems:
            ax.plot(
                x,
                [r["hr"][s] for r in rows],
                marker="o",
                label=LABELS.get(s, s),
                linewidth=2.5 if s == "product" else 1.2,
            )
        ax.set_xticks(x, [f"{r['bucket']}\n(n={r['events']})" for r in rows], fontsize=8)
        ax.set_xlabel(title)
        ax.set_ylabel("HR@10")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.grid(alpha=0.3)
        f.tight_layout()
        paths.append(out_dir / name)
        f.savefig(paths[-1], dpi=110)
        plt.close(f)
    return paths


BY_SEQUENCE = (
    (
        "history",
        "user's events before this one (before and after the cutoff)",
        "hr_by_history_length.png",
    ),
    (
        "session_position",
        "position of the event in the user's session (30-min gap)",
        "hr_by_session_position.png",
    ),
)


def _cell(m: dict[str, Any], key: str) -> str:
    if f"{key}_std" in m:
        return f"{m[key]:.4f} ± {m[f'{key}_std']:.4f}"
    return f"{m[key]:.4f}"


def _hr_ndcg_table(fig: dict[str, Any], key: str, title: str, png: str) -> list[str]:
    names = list(fig["systems"])
    lines = [
        f"## HR@10 / NDCG@10 by the {title}",
        "",
        f"![HR@10 by the {title}]({png})",
        "",
        "| bucket | events | " + " | ".join(LABELS.get(s, s) for s in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for r in fig[key]:
        lines.append(
            f"| {r['bucket']} | {r['events']} | "
            + " | ".join(f"{r['hr'][s]:.4f} / {r['ndcg'][s]:.4f}" for s in names)
            + " |"
        )
    return [*lines, ""]


def markdown(fig: dict[str, Any], meta: dict[str, Any]) -> str:
    sysm = fig["systems"]
    lines = [
        "# Streaming evaluation: MovieLens 100K, prequential replay",
        "",
        f"Command: `{meta['command']}`  ",
        f"Seed {meta['seed']}; cutoff {meta['cutoff_time']} (quantile {meta['cutoff_quantile']}); "
        f"{meta['train_events']:,} training events, {fig['events']:,} test events replayed; "
        f"{meta['cold_items']} items ({meta['cold_share']:.0%}) held out of training entirely: "
        "not in the model's catalogue, each enters the product's at its first event as a "
        "catalogue write (`POST /items`'s `Upsert`: title, genres, year), applied by the "
        "dataflow's `CatalogWriter` and embedded by the model's item tower.  ",
        f"Runtime: {meta['seconds']['total']:.0f} s in total on {meta['cpus']} cores "
        f"(training {meta['seconds']['train']:.0f} s, replay {meta['seconds']['replay']:.0f} s).",
        "",
        "Protocol: before each test event, in time order, every system returns its top-10 for "
        "that user from what happened before the event; then the event is fed to every system. "
        "The product runs the dataflow's fold into an embedded feature store and is asked as a "
        "client asks `GET /recommendations/{user}?k=10`: `Recommender.recommend(user, 10)` on "
        "the replay's clock, nothing else passed, so what the user already interacted with is "
        "left out by the service's own memory (`exclude_seen`); `tests/test_eval_rest.py` "
        "checks that a slice through the broker and the REST API gets the same hits. The "
        "baselines are given each user's full seen set to leave out; the batch two-tower is "
        "the product's code on a store frozen at the cutoff (given the seen set too, as a "
        "frozen store cannot know what the user picked since); real-time without re-rank is "
        "the product's code with every re-rank weight 0. "
        "SASRec and GRU4Rec are trained on the events before the cutoff with full-softmax "
        "cross-entropy over every item, frozen there and fed each user's live history (the "
        "last 50 of their events before and after the cutoff) at each event; each is trained "
        "and replayed with several seeds and reported as mean ± standard deviation.",
        "",
        "| system | HR@10 | NDCG@10 | MRR@10 | coverage | intra-list diversity | HR@10 cold items | HR@10 cold users | HR@10 warm users |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s, m in sysm.items():
        seeds = f" ({len(m['seeds'])} seeds)" if "seeds" in m else ""
        lines.append(
            f"| {LABELS.get(s, s)}{seeds} | {_cell(m, 'hr')} | {_cell(m, 'ndcg')} | "
            f"{_cell(m, 'mrr')} | {m['coverage']:.3f} | {m['diversity']:.3f} | "
            f"{m['hr_cold_items']:.4f} | {_cell(m, 'hr_cold_users')} | "
            f"{_cell(m, 'hr_warm_users')} |"
        )
    if any("seeds" in m for m in sysm.values()):
        lines += [
            "",
            "Sequence models: mean ± sample standard deviation over seeds; each seed's "
            "HR@10 / NDCG@10: "
            + "; ".join(
                f"{LABELS.get(s, s)} "
                + ", ".join(
                    f"seed {sd}: {v['hr']:.4f} / {v['ndcg']:.4f}" for sd, v in m["seeds"].items()
                )
                for s, m in sysm.items()
                if "seeds" in m
            )
            + ".",
        ]
    lines += [
        "",
        f"Share of evaluated events whose user was cold at the cutoff: {fig['cold_user_share']:.1%}. "
        f"Events on held-out (cold) items: {fig['cold_item_events']:,}.",
        "",
    ]
    if "ratio_best_baseline" in fig:
        lines.append(
            f"**Product vs best baseline ({LABELS[fig['best_baseline']]}): "
            f"{fig['ratio_best_baseline']:.3f}x HR@10** (target >= 1.15x).  "
        )
    if "ratio_batch" in fig:
        lines.append(
            f"**Product vs batch two-tower: {fig['ratio_batch']:.3f}x HR@10** (target >= 2x)."
        )
    lines += ["", "![HR@10 per system](hr_by_system.png)", ""]
    for key, title, png in (
        (
            "since_cutoff",
            "HR@10 by the user's events since the cutoff",
            "hr_vs_events_since_cutoff.png",
        ),
        ("activity", "HR@10 by the user's events before the cutoff", "hr_by_user_activity.png"),
    ):
        rows = fig[key]
        names = list(sysm)
        lines += [f"## {title}", "", f"![{title}]({png})", ""]
        lines.append("| bucket | events | " + " | ".join(LABELS.get(s, s) for s in names) + " |")
        lines.append("|---|---|" + "---|" * len(names))
        for r in rows:
            lines.append(
                f"| {r['bucket']} | {r['events']} | "
                + " | ".join(f"{r['hr'][s]:.4f}" for s in names)
                + " |"
            )
        lines.append("")
    for key, title, png in BY_SEQUENCE:
        if key in fig:
            lines += _hr_ndcg_table(fig, key, title, png)
    lines += ["## Settings used (the defaults)", "", "| setting | value |", "|---|---|"]
    for k, v in meta["settings"].items():
        lines.append(f"| `{k}` | {v} |")
    lines += ["", f"kNN baseline: {meta['knn']}; ALS: {meta['als']}.", ""]
    if meta.get("sequence"):
        lines += [
            "Sequence baselines (full-softmax cross-entropy over all items, trained on the "
            "events before the cutoff, frozen, fed each user's live history; seeds "
            f"{meta.get('sequence_seeds')}): "
            + "; ".join(f"{LABELS.get(k, k)} `{v}`" for k, v in meta["sequence"].items())
            + ".",
            "",
        ]
    if meta.get("session_model"):
        lines += [
            f"The product's session model (trained with the two-tower): `{meta['session_model']}`.",
            "",
        ]
    if meta.get("tuning"):
        lines += ["## Tuning (validation slice only)", "", meta["tuning"], ""]
    if meta.get("sequence_tuning"):
        lines += sequence_tuning_markdown(meta["sequence_tuning"])
    return "\n".join(lines) + "\n"


def write(fig: dict[str, Any], meta: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(
        json.dumps({"figures": fig, "meta": meta}, indent=2, default=str)
    )
    plot(fig, out_dir)
    path = out_dir / "README.md"
    path.write_text(markdown(fig, meta))
    return path


def _curves(title: str, part: dict[str, Any]) -> list[str]:
    epochs = sorted({c["epochs"] for t in part["tried"] for c in t["curve"]})
    lines = [
        f"{title}: chosen `{_knobs(part['chosen'])}`, HR@10 {part['hr']:.4f}.",
        "",
        "| configuration | " + " | ".join(f"HR@10 / NDCG@10 at {e} epochs" for e in epochs) + " |",
        "|---|" + "---|" * len(epochs),
    ]
    for t in part["tried"]:
        at = {c["epochs"]: c for c in t["curve"]}
        cells = [f"{at[e]['hr']:.4f} / {at[e]['ndcg']:.4f}" if e in at else "" for e in epochs]
        lines.append(f"| `{_knobs(t['config'])}` | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _knobs(values: dict[str, Any]) -> str:
    keep = ("kind", "lr", "dropout", "blocks", "epochs", "max_len", "time_gaps", "content", "bias")
    return ", ".join(f"{k}={values[k]}" for k in keep if k in values)


def sequence_tuning_markdown(seq: dict[str, Any]) -> list[str]:
    """The sequence models' tuning record (``tuning.json["sequence"]``) as a section."""
    lines = ["## Sequence models: tuning (validation slice only)", ""]
    for kind, part in (seq.get("baselines") or {}).items():
        lines += _curves(LABELS.get(kind, kind), part)
    if "session" in seq:
        lines += _curves("The product's session model", seq["session"])
    w = seq.get("weights")
    if w:
        tops = w.get("candidate_recall_with_session_top", {}).get("chosen", {})
        lines += [
            "The session model's re-rank weight, on logged candidates (every candidate of "
            "every validation request with each term's value; any weighting scored offline; "
            f"coordinate ascent, 2 rounds): the candidates hold the next item "
            f"{w['candidate_recall']:.1%} of the time"
            + (
                " (with the session model's own top 20/50/100 added: "
                + "/".join(f"{v:.1%}" for v in tops.values())
                + ")"
                if tops
                else ""
            )
            + f"; current defaults {w['current']:.4f}.",
            "",
            "| session model | best weights | HR@10 | weightings tried |",
            "|---|---|---|---|",
        ]
        for name, r in w.items():
            if isinstance(r, dict) and "weights" in r:
                lines.append(f"| {name} | `{r['weights']}` | {r['hr']:.4f} | {r['tried']} |")
        lines.append("")
    for note in seq.get("notes", []):
        lines += [f"- {note}"]
    return [*lines, ""]
