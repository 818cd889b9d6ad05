#!/usr/bin/env python3
"""Turn the suite's printed tables (benches/results/full.txt) into the README's markdown
tables, so the README numbers always come from one run:

    python3 benches/results/to_markdown.py benches/results/full.txt
"""
import re
import sys
from collections import OrderedDict

ROW = re.compile(r"^(\S.*?)?\s{2,}(\S.*?)\s{2,}(-?[\d.]+|—)\s+(\S+)\s+(?:(-?[\d.]+)\s+)?(\S+x|—)\s*(.*)$")


def sections(text):
    out, cur = OrderedDict(), None
    for line in text.splitlines():
        m = re.match(r"^== (\w+): .*\[(.*)\] ==$", line)
        if m:
            cur = m.group(1)
            out[cur] = {"unit": m.group(2), "rows": []}
            continue
        if cur is None or not line.strip() or line.startswith(("   ratio", "case", "  *", "  (")):
            continue
        if line.startswith("total") or line.startswith("loadavg") or line.startswith("wrote"):
            cur = None
            continue
        m = ROW.match(line)
        if m:
            case, peer, median, spread, p99, ratio, note = m.groups()
            out[cur]["rows"].append([(case or "").strip(), peer.strip(), median, spread, p99, ratio, note.strip()])
    for s in out.values():
        last = ""
        for r in s["rows"]:
            r[0] = r[0] or last
            last = r[0]
    return out


def grid(rows, cell):
    peers, cases = [], []
    for r in rows:
        if r[1] not in peers:
            peers.append(r[1])
        if r[0] not in cases:
            cases.append(r[0])
    lines = ["| case | " + " | ".join(peers) + " |", "|---|" + "---:|" * len(peers)]
    for c in cases:
        cells = []
        for p in peers:
            r = next((r for r in rows if r[0] == c and r[1] == p), None)
            cells.append(cell(r) if r else "—")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio(r):
    return "" if r[5] in ("1.00x", "—") else f" ({r[5].replace('x', '×')})"


def main(path):
    s = sections(open(path, encoding="utf-8").read())
    plain = lambda r: "—" if r[2] == "—" else f"{r[2]}{ratio(r)}"
    out = []
    if "chain" in s:
        out.append("**chain** (libevent `bench.c`, 1000 writes; µs per run, median; ratio to ioloop, lower is faster):\n\n" + grid(s["chain"]["rows"], plain))
    if "timers" in s:
        out.append("**timers** (ns per timer, median; random = 10 s + U(0, 10 s), same = all at 10 s):\n\n" + grid(s["timers"]["rows"], plain))
    if "callbacks" in s:
        out.append("**callbacks** (ns per callback, add + run, batches of 1000):\n\n" + grid(s["callbacks"]["rows"], plain))
    if "wake" in s:
        out.append("**wake** (cross-thread round trip, µs: p50 / p99; ioloop through `LoopHandle::add_callback`):\n\n" + grid(s["wake"]["rows"], lambda r: f"{r[2]} / {r[4]}{ratio(r)}"))
    if "echo" in s:
        p99 = lambda r: (re.search(r"p99 ([\d.]+ \S+)", r[6]) or [None, "?"])[1]
        out.append("**echo** (TCP over loopback; requests/s, median of rounds (ratio to ioloop, higher is better); p99 latency):\n\n" + grid(s["echo"]["rows"], lambda r: f"{r[2]}{ratio(r)}, p99 {p99(r)}"))
    if "precision" in s:
        early = lambda r: (re.search(r"early (\S+)", r[6]) or [None, "?"])[1]
        mx = lambda r: (re.search(r"max (\S+ \S+)", r[6]) or [None, "?"])[1]
        out.append("**precision** (timer lateness, µs: p50 / p99 / max, and early firings):\n\n" + grid(s["precision"]["rows"], lambda r: f"{r[2]} / {r[4]} / {mx(r)}, early {early(r)}"))
    if "footprint" in s:
        out.append("**footprint**:\n\n" + grid(s["footprint"]["rows"], lambda r: r[2] + (f" ({r[6]})" if r[6] else "")))
    print("\n\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benches/results/full.txt")
