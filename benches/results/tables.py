#!/usr/bin/env python3
"""Merge the per-process JSON files of one `benches/tables.sh` run into
benches/results/full.json, full.txt and README-tables.md.

    python3 benches/results/tables.py RAW_DIR OUT_DIR

RAW_DIR holds `<workload>.<round>.json` files (one process each, run by tables.sh, interleaved
and pinned to one core). For every (workload, case, peer) the figure is the median of the
per-process medians; the spread is their min–max. Every table has ioloop, the case's anchor,
and the ratio ioloop / anchor (the anchor each process named in `ratio_to`).
"""
import glob
import json
import os
import re
import statistics
import sys
from collections import OrderedDict

# The anchor of each workload (the ratio's denominator); chain's depends on the phase.
ANCHOR = {
    "timers": lambda case: "libev",
    "timers-callgrind": lambda case: "libev",
    "chain": lambda case: "raw epoll (floor)" if case.endswith(" loop") else "libev",
    "chain-callgrind": lambda case: "raw epoll (floor)" if case.endswith(" loop") else "libev",
    "callbacks": lambda case: "VecDeque<fn> (floor)",
    "wake": lambda case: "eventfd+epoll (floor)",
    "xput": lambda case: "Mutex<VecDeque>+eventfd (floor)",
    "echo": lambda case: "mio",
}
HIGHER_IS_BETTER = {"echo", "xput"}


def num(x):
    a = abs(x)
    if a >= 100 or x == 0:
        return f"{x:,.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def load(raw):
    files = sorted(glob.glob(os.path.join(raw, "*.json")))
    machine, loads, notes = None, [], OrderedDict()
    data = OrderedDict()  # (workload, case, peer) -> {"role", "unit", "medians": [], "p99": [], "note"}
    for f in files:
        try:
            j = json.load(open(f, encoding="utf-8"))
        except (OSError, ValueError) as e:
            print(f"skipping {f}: {e}", file=sys.stderr)
            continue
        machine = machine or j.get("machine")
        loads.append(j.get("loadavg_end", "?"))
        for n in j.get("notes", []):
            notes.setdefault(n.split(":", 1)[0], OrderedDict())[n] = None
        for r in j["results"]:
            k = (r["workload"], r["case"], r["peer"])
            d = data.setdefault(k, {"role": r["role"], "unit": r["unit"], "medians": [], "p99": [], "note": r.get("note")})
            if "median" in r and r["median"] is not None:
                d["medians"].append(r["median"])
                d["p99"].append(r.get("p99"))
            if r.get("note"):
                d["note"] = r["note"]
    return machine or {}, loads, notes, data, len(files)


ORDER = ["chain", "chain-callgrind", "timers", "timers-callgrind", "callbacks", "wake", "xput",
         "echo", "precision", "footprint"]


def ioloop_name(peers):
    """The case's ioloop row: the first with role ioloop ("ioloop", "ioloop LoopHandle", ...)."""
    return next((p for p, r in peers.items() if r["role"] == "ioloop"), "ioloop")


def merged(data):
    data = OrderedDict(sorted(data.items(), key=lambda kv: ORDER.index(kv[0][0]) if kv[0][0] in ORDER else len(ORDER)))
    out = OrderedDict()
    for (w, c, p), d in data.items():
        m = d["medians"]
        out.setdefault(w, OrderedDict()).setdefault(c, OrderedDict())[p] = {
            "role": d["role"],
            "unit": d["unit"],
            "median": statistics.median(m) if m else None,
            "lo": min(m) if m else None,
            "hi": max(m) if m else None,
            "runs": len(m),
            "p99": statistics.median([x for x in d["p99"] if x is not None]) if any(x is not None for x in d["p99"]) else None,
            "note": d["note"],
        }
    return out


def anchor_of(w, case, peers):
    a = ANCHOR.get(w, lambda c: None)(case)
    if a in peers and peers[a]["median"]:
        return a
    for name, r in peers.items():
        if r["role"] == "floor" and r["median"]:
            return name
    return None


def ratio(w, case, peers, name):
    a = anchor_of(w, case, peers)
    v, av = peers.get(name, {}).get("median"), (peers[a]["median"] if a else None)
    if v is None or not av or av <= 0:
        return None, a
    return v / av, a


def load_range(loads):
    one = [float(l.split()[0]) for l in loads if l and l[0].isdigit()]
    return f"{min(one):.2f}–{max(one):.2f} over {len(one)} processes" if one else "?"


def machine_line(m):
    return "; ".join(f"{k} {v}" for k, v in m.items() if k != "loadavg")


def main(raw, out):
    machine, loads, notes, data, nfiles = load(raw)
    res = merged(data)
    rounds = max((r["runs"] for w in res.values() for c in w.values() for r in c.values()), default=0)
    how = (f"median of {rounds} interleaved processes (each pinned with taskset to one core; inside each, peers "
           f"interleaved round by round; timers and chain in thread CPU time, wake/echo in wall time)")
    mline = machine_line(machine)

    # full.json
    rows = []
    for w, cases in res.items():
        for c, peers in cases.items():
            for p, r in peers.items():
                x, a = ratio(w, c, peers, p)
                rows.append({"workload": w, "case": c, "peer": p, "role": r["role"], "unit": r["unit"],
                             "median": r["median"], "process_min": r["lo"], "process_max": r["hi"],
                             "processes": r["runs"], "p99": r["p99"], "anchor": a, "ratio_to_anchor": x,
                             "note": r["note"]})
    json.dump({"machine": machine, "method": how, "loadavg_at_end_of_each_process": loads,
               "files": nfiles, "results": rows}, open(os.path.join(out, "full.json"), "w", encoding="utf-8"),
              ensure_ascii=False, indent=0)

    # full.txt
    t = [f"ioloop-bench via benches/tables.sh: {how}", f"machine: {mline}", f"1-minute load average at the end of the processes: {load_range(loads)}", ""]
    for w, cases in res.items():
        unit = next(iter(next(iter(cases.values())).values()))["unit"]
        better = "higher is better" if w in HIGHER_IS_BETTER else "lower is better"
        t.append(f"== {w} [{unit}] ({better}; ratio = median / the case's anchor's median) ==")
        t.append(f"   machine: {mline}")
        cw = max(len(c) for c in cases) + 2
        pw = max(len(p) for c in cases.values() for p in c) + 2
        t.append(f"{'case':<{cw}}{'peer':<{pw}}{'median':>12}  {'process min–max':>22}  {'ratio':>7}  note")
        for c, peers in cases.items():
            first = True
            for p, r in peers.items():
                x, a = ratio(w, c, peers, p)
                med = num(r["median"]) if r["median"] is not None else "—"
                spread = f"{num(r['lo'])}–{num(r['hi'])}" if r["median"] is not None else "—"
                rt = f"{x:.2f}x" if x is not None else "—"
                mark = "  [anchor]" if p == a else ""
                note = f"  {r['note']}" if r["note"] else ""
                t.append(f"{c if first else '':<{cw}}{p:<{pw}}{med:>12}  {spread:>22}  {rt:>7}{mark}{note}")
                first = False
            t.append("")
        for n in notes.get(w, {}):
            t.append(f"  * {n}")
        t.append("")
    open(os.path.join(out, "full.txt"), "w", encoding="utf-8").write("\n".join(t))

    # README-tables.md
    md = [f"<!-- generated by benches/tables.sh from benches/results/full.json; do not edit by hand -->",
          "", f"Machine: {mline}. Method: {how}. 1-minute load average at the end of the processes: {load_range(loads)} (a shared 2-core machine).", ""]
    md += issue_table(res, mline)
    titles = {
        "chain": "chain (libevent bench.c, w = 1000), µs of thread CPU time per run",
        "chain-callgrind": "chain, user-space instructions per event (callgrind, deterministic)",
        "timers": "timers, ns of thread CPU time per timer",
        "timers-callgrind": "timers, instructions per timer (callgrind, deterministic)",
        "callbacks": "callbacks, ns per callback (add + run)",
        "wake": "cross-thread wake round trip, µs (wall)",
        "xput": "cross-thread callback throughput, M callbacks/s (higher is better)",
        "echo": "TCP echo over loopback, requests/s (wall; higher is better)",
        "precision": "timer lateness, µs",
        "footprint": "footprint",
    }
    for w, cases in res.items():
        md += ["", f"**{titles.get(w, w)}** — machine: {mline}", ""]
        md += ["| case | ioloop | anchor | ioloop / anchor | others (ratio to anchor) |", "|---|---:|---|---:|---|"]
        for c, peers in cases.items():
            ion = ioloop_name(peers)
            io = peers.get(ion)
            x, a = ratio(w, c, peers, ion)
            iov = num(io["median"]) if io and io["median"] is not None else "—"
            av = f"{a} {num(peers[a]['median'])}" if a else "—"
            others = []
            for p, r in peers.items():
                if p in (ion, a):
                    continue
                if r["median"] is None:
                    continue
                y, _ = ratio(w, c, peers, p)
                others.append(f"{p} {num(r['median'])}" + (f" ({y:.2f}×)" if y is not None else ""))
            md.append(f"| {c} | {iov} | {av} | {f'{x:.2f}×' if x is not None else '—'} | {'; '.join(others)} |")
    # The README is the crate doc: rustdoc reads `<name>` in a table cell as an HTML tag.
    text = "\n".join(md).replace("<", "&lt;").replace(">", "&gt;").replace("&lt;!--", "<!--").replace("--&gt;", "-->")
    open(os.path.join(out, "README-tables.md"), "w", encoding="utf-8").write(text + "\n")


def issue_table(res, mline):
    """The issue's summary rows: ioloop, anchor, ratio."""
    rows = []

    def get(w, c):
        return res.get(w, {}).get(c)

    def line(label, w, c, anchor_label=None):
        peers = get(w, c)
        ion = ioloop_name(peers) if peers else "ioloop"
        if not peers or ion not in peers or peers[ion]["median"] is None:
            rows.append(f"| {label} | — | — | — |")
            return
        x, a = ratio(w, c, peers, ion)
        rows.append(f"| {label} | {num(peers[ion]['median'])} | {anchor_label or a} {num(peers[a]['median']) if a else '—'} | {f'{x:.2f}×' if x is not None else '—'} |")

    for n in (100, 1000):
        for a in (1, 100):
            line(f"chain loop, n={n} a={a}, µs/run", "chain", f"n={n} a={a} loop")
    big = [c for c in res.get("chain", {}) if c.endswith(" loop") and not c.startswith(("n=100 ", "n=1000 "))]
    for c in big:
        line(f"chain loop, {c[:-5]} (registered once), µs/run", "chain", c)
    for n in (100, 1000):
        for a in (1, 100):
            line(f"chain instructions/event, n={n} a={a}", "chain-callgrind", f"n={n} a={a} loop")
    for c in [c for c in res.get("chain", {}) if c.endswith(" total")]:
        line(f"chain total (re-arm + loop), {c[:-6]}, µs/run", "chain", c)
    for c in [c for c in res.get("chain", {}) if c.endswith("bench.c del+add")]:
        line(f"chain bench.c del+add (remove + add handler), {c[:-16]}, µs/run", "chain", c)
    for c in [c for c in res.get("chain-callgrind", {}) if c.endswith("bench.c del+add")]:
        line(f"chain bench.c del+add instructions/event, {c[:-16]}", "chain-callgrind", c)
    for c in res.get("wake", {}):
        line(f"cross-thread wake round trip, {c}, µs", "wake", c)
    for c in res.get("echo", {}):
        peers = res["echo"][c]
        io = peers.get("ioloop", {}).get("median")
        cells = []
        for p in ("mio", "tokio current_thread"):
            v = peers.get(p, {}).get("median")
            if io and v:
                cells.append(f"{p} {num(v)}: {io / v:.2f}×")
        if io:
            rows.append(f"| TCP echo {c}, req/s (higher is better) | {num(io)} | {' / '.join(cells)} | |")
    for c in res.get("timers", {}):
        if "N=1e" in c or "N=" in c:
            line(f"timers {c}, ns/timer", "timers", c)
    return ["**Issue 13's rows** (ioloop, anchor, ratio ioloop / anchor) — machine: " + mline, "",
            "| workload | ioloop | anchor | ratio |", "|---|---:|---|---:|"] + rows


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
