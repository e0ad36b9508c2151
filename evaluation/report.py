"""Figures of a replay as tables, a markdown report and PNG plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.prequential import Run
from evaluation.scoring import coverage, summarize

BASELINES = ("popularity", "cooc_knn", "als", "batch_two_tower")
SINCE_BUCKETS = ((0, 0), (1, 1), (2, 4), (5, 9), (10, 19), (20, 49), (50, 10**9))
ACTIVITY_BUCKETS = ((0, 0), (1, 19), (20, 49), (50, 99), (100, 199), (200, 10**9))
LABELS = {
    "popularity": "popularity",
    "cooc_knn": "co-occurrence kNN",
    "als": "ALS (implicit)",
    "batch_two_tower": "batch two-tower",
    "realtime_no_rerank": "real-time, no re-rank",
    "product": "product",
    "product_mmr": "product + MMR (lambda 0.8)",
}


def _label(lo: int, hi: int) -> str:
    if lo == hi:
        return str(lo)
    return f"{lo}+" if hi >= 10**9 else f"{lo}-{hi}"


def figures(run: Run) -> dict[str, Any]:
    out: dict[str, Any] = {"systems": {}, "events": len(run.user_cold)}
    for s in run.systems:
        m = summarize(run.ranks[s])
        m["coverage"] = coverage(run.lists[s], run.n_items)
        m["diversity"] = float(run.diversity[s].mean()) if len(run.diversity[s]) else 0.0
        m["hr_cold_items"] = summarize(run.ranks[s][run.item_cold])["hr"]
        m["hr_cold_users"] = summarize(run.ranks[s][run.user_cold])["hr"]
        m["hr_warm_users"] = summarize(run.ranks[s][~run.user_cold])["hr"]
        out["systems"][s] = m
    out["cold_user_share"] = float(run.user_cold.mean()) if len(run.user_cold) else 0.0
    out["cold_item_events"] = int(run.item_cold.sum())
    out["since_cutoff"] = _breakdown(run, run.since_cutoff, SINCE_BUCKETS)
    out["activity"] = _breakdown(run, run.train_events, ACTIVITY_BUCKETS)
    hr = {s: out["systems"][s]["hr"] for s in run.systems}
    base = {s: hr[s] for s in BASELINES if s in hr}
    if "product" in hr and base:
        best = max(base, key=base.get)
        out["best_baseline"] = best
        out["ratio_best_baseline"] = hr["product"] / base[best] if base[best] else float("inf")
    if "product" in hr and hr.get("batch_two_tower"):
        out["ratio_batch"] = hr["product"] / hr["batch_two_tower"]
    return out


def _breakdown(run: Run, values: np.ndarray, buckets: Sequence[tuple[int, int]]) -> list[dict]:
    rows = []
    for lo, hi in buckets:
        mask = (values >= lo) & (values <= hi)
        rows.append(
            {
                "bucket": _label(lo, hi),
                "events": int(mask.sum()),
                "hr": {s: summarize(run.ranks[s][mask])["hr"] for s in run.systems},
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
    ):
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


def markdown(fig: dict[str, Any], meta: dict[str, Any]) -> str:
    sysm = fig["systems"]
    lines = [
        "# Streaming evaluation: MovieLens 100K, prequential replay",
        "",
        f"Command: `{meta['command']}`  ",
        f"Seed {meta['seed']}; cutoff {meta['cutoff_time']} (quantile {meta['cutoff_quantile']}); "
        f"{meta['train_events']:,} training events, {fig['events']:,} test events replayed; "
        f"{meta['cold_items']} items ({meta['cold_share']:.0%}) held out of training entirely.  ",
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
        "the product's code with every re-rank weight 0.",
        "",
        "| system | HR@10 | NDCG@10 | MRR@10 | coverage | intra-list diversity | HR@10 cold items | HR@10 cold users | HR@10 warm users |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s, m in sysm.items():
        lines.append(
            f"| {LABELS.get(s, s)} | {m['hr']:.4f} | {m['ndcg']:.4f} | {m['mrr']:.4f} | "
            f"{m['coverage']:.3f} | {m['diversity']:.3f} | {m['hr_cold_items']:.4f} | "
            f"{m['hr_cold_users']:.4f} | {m['hr_warm_users']:.4f} |"
        )
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
    lines += ["## Settings used (the defaults)", "", "| setting | value |", "|---|---|"]
    for k, v in meta["settings"].items():
        lines.append(f"| `{k}` | {v} |")
    lines += ["", f"kNN baseline: {meta['knn']}; ALS: {meta['als']}.", ""]
    if meta.get("tuning"):
        lines += ["## Tuning (validation slice only)", "", meta["tuning"], ""]
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
