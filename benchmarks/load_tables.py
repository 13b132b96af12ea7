"""The figures of a ``bench_load.py --json`` run as the README's two Markdown tables.

    python benchmarks/bench_load.py --json load.json
    python benchmarks/load_tables.py load.json

The first table is the closed loop (throughput, latency, what a hit costs, upstream calls);
the second the event loop (the probe's lag, the callers' steps, the paced run, the cache's
holds). Only what the JSON holds is printed; nothing is measured here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

LABELS = {
    "floor": "floor (MockTransport)", "none": "no cache", "memory": "`memory://`", "file": "`file://`",
    "redis": "`redis://`", "redis-direct": "`redis://`, no memory tier", "cluster": "`redis+cluster://`",
    "redis-awaited": "`redis://`, `asyncio=yes`",
    "redis-direct-awaited": "`redis://`, no memory tier, `asyncio=yes`",
}


def measured(rows: dict[str, Any]) -> dict[str, Any]:
    """The rows that ran: a skipped one (no redis-server, no cluster) holds only why."""
    return {name: row for name, row in rows.items() if row.get("closed") and row.get("paced")}


def skipped(rows: dict[str, Any]) -> list[str]:
    return [f"{LABELS.get(name, name)}: {row.get('skipped', 'not run')}" for name, row in rows.items()
            if name not in measured(rows)]


def ms(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def closed_table(rows: dict[str, Any]) -> str:
    none_rps = rows["none"]["closed"]["requests_per_s"]
    out = []
    for name, row in measured(rows).items():
        run = row["closed"]
        hits = run["latency_ms"] if name == "floor" else run["hit_ms"]
        up = "" if name == "floor" else f"{run['upstream']:,} / {run['distinct']:,}"
        cost = ["", ""] if name in ("floor", "none") else [ms(row["hit_cost_p99_ms"]), ms(row["hit_cost_cpu_p99_ms"])]
        out.append([
            LABELS.get(name, name), f"{run['requests_per_s']:,.0f}", f"{run['requests_per_s'] / none_rps:.2f}x",
            ms(run["cpu_ms_per_request"]), ms(run["latency_ms"]["p50"]), ms(run["latency_ms"]["p99"], 1),
            "" if name == "none" else ms(hits["p50"]), "" if name == "none" else ms(hits["p99"]), *cost,
            "" if name in ("floor", "none") else str(run["joined_ms"]["n"]), up,
        ])
    return table(["store", "req/s", "vs no cache", "CPU/request", "p50", "p99", "hit p50", "hit p99",
                  "cost p99, wall", "cost p99, CPU", "joined", "upstream / distinct"], out)


def loop_table(rows: dict[str, Any], idle: dict[str, Any] | None) -> str:
    out = []
    if idle:
        out.append(["idle loop (the probe alone)", "", "", "", f"{ms(idle['p99'])} / {ms(idle['max'])}", "", "", ""])
    for name, row in measured(rows).items():
        run, slow = row["closed"], row["paced"]
        holds = over = ""
        if name != "none":
            holds = f"{ms(max(run['cache_hold_ms']['max'], slow['cache_hold_ms']['max']))} / " \
                    f"{ms(max(run['cache_hold_cpu_ms']['max'], slow['cache_hold_cpu_ms']['max']))}"
            if "cache_holds_over_limit" in run:
                over = f"{run['cache_holds_over_limit'] + slow['cache_holds_over_limit']} / " \
                       f"{run['cache_holds_cpu_over_limit'] + slow['cache_holds_cpu_over_limit']}"
        out.append([
            LABELS.get(name, name),
            f"{ms(run['loop_lag_ms']['p99'], 0)} / {ms(run['loop_lag_ms']['max'], 0)}",
            ms(run["caller_step_ms"]["max"], 1),
            f"{ms(slow['latency_ms']['p50'])} / {ms(slow['latency_ms']['p99'], 1)}",
            f"{ms(slow['loop_lag_ms']['p99'])} / {ms(slow['loop_lag_ms']['max'])}",
            holds, over, "" if name == "floor" else f"{slow['upstream']} / {slow['distinct']}",
        ])
    return table(["store", "closed: lag p99 / max", "closed: longest step of a caller", "paced: p50 / p99 latency",
                  "paced: lag p99 / max", "longest hold / most CPU in one", "holds over 5 ms: wall / CPU",
                  "paced: upstream / distinct"], out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("json", type=Path, help="the file bench_load.py --json wrote")
    args = parser.parse_args(argv)
    data = json.loads(args.json.read_text(encoding="utf-8"))
    machine = data["machine"]
    print(f"<!-- {machine['cores']} cores, Python {machine['python']}, load {machine['loadavg_at_start']} -->")
    print(closed_table(data["rows"]))
    print()
    print(loop_table(data["rows"], data.get("idle_loop_lag_ms")))
    for line in skipped(data["rows"]):
        print(f"\nnot measured: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
