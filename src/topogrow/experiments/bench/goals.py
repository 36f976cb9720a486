"""The goals of ``topogrow bench`` and which of them a run meets."""

from __future__ import annotations

from typing import Any

#: Every goal by name: what it asks of the measurement.
GOALS = {
    "td_vs_epoch": "<= 1.0 (California MLP), <= 2.0 (MNIST CNN), the growth loop's pass",
    "line_search": "<= 0.25 of an epoch per insertion",
    "growth_demo": "td / scratch <= 1.0 (demo config)",
    "growth_bench": "td / scratch <= 1.0 (bench config)",
    "td_over_random": "td / random <= 1.15 (demo config)",
    "wide_time": "td / random <= 1.5 at width 256",
    "wide_memory": "td / random <= 1.5 at width 256",
    "flops": "td / scratch <= 0.85 (demo and CNN configs)",
    "block_vs_dense": ">= 100x at width 64",
    "width_1024": "< 10 s",
    "memory": "flat in S",
    "matrix_free": "1e-6 relative",
    "location_cost": "<= 1 epoch of the current network per insertion (default strategy), every paper row",
}
TD_GOALS = {"california": 1.0, "mnist5k": 2.0}  # TD pass / epoch
LOCATION_GOAL = 1.0  # decision FLOPs per insertion / one epoch of the current network


def goals_met(results: dict[str, Any]) -> dict[str, bool | None]:
    """Whether each goal of the issue is met (``None`` where the section did not run)."""
    met: dict[str, bool | None] = dict.fromkeys(GOALS)
    if "td_vs_epoch" in results:
        sampled = [r for r in results["td_vs_epoch"] if r["solver"] == "sampled"]
        met["td_vs_epoch"] = all(r["ratio"] <= TD_GOALS[r["task"]] for r in sampled) if sampled else None
    if "line_search" in results:
        met["line_search"] = results["line_search"]["ratio"] <= 0.25
    if "growth_overhead" in results:
        growth = results["growth_overhead"]
        met["growth_demo"] = growth["demo"]["td_over_scratch"] <= 1.0
        met["growth_bench"] = growth["bench"]["td_over_scratch"] <= 1.0
        met["td_over_random"] = growth["demo"]["td_over_random"] <= 1.15
        met["flops"] = all(growth[name]["flops_td_over_scratch"] <= 0.85 for name in ("demo", "cnn"))
    if "wide_growth" in results:
        met["wide_time"] = results["wide_growth"]["time_ratio"] <= 1.5
        met["wide_memory"] = results["wide_growth"]["memory_ratio"] <= 1.5
    if "block_vs_dense" in results:
        dense = results["block_vs_dense"]["dense"]
        met["block_vs_dense"] = dense[-1]["speedup"] >= 100 if dense[-1]["width"] >= 64 else None
        widest = results["block_vs_dense"]["scaling"][-1]
        met["width_1024"] = widest["fast_s"] < 10 if widest["width"] >= 1024 else None
    if "memory" in results:
        blocks = [r for r in results["memory"] if r["solver"] == "blocks"]
        met["memory"] = blocks[-1]["td_extra_bytes"] <= 1.5 * max(blocks[0]["td_extra_bytes"], 32 << 20)
    if "matrix_free" in results:
        met["matrix_free"] = all(r["rel_error"] <= 1e-6 for r in results["matrix_free"])
    if "location_cost" in results:
        met["location_cost"] = all(r["after"]["epochs"] <= LOCATION_GOAL for r in results["location_cost"])
    return met
