"""Restart cost: the engine rebuilt by full replay vs. from the newest snapshot plus the tail
(bench/overhead.py --replay).

For each size N: an uninterrupted engine runs N instant trials (parallelism 4, the oldest
finishing first), keeping a snapshot every `chunk` results as the operator does with each
history ConfigMap; then the engine is rebuilt (a) by asking SMAC again for every trial, as the
previous version did, and (b) from the newest snapshot plus the trials after it. Both must
propose the same next 8 trials as the uninterrupted engine. Where the time goes: SMAC's asks,
SMAC's tells, and the rest (our bookkeeping, the snapshot's restore).
"""

from __future__ import annotations

import json
import sys
import time

from overhead import score, spec_for


def _timed_smac():
    """Patch the engine's SMAC calls to add up their time; returns the totals."""
    import boss_operator.optimizer as opt
    import smac.main.smbo as smbo

    acc = {"ask": 0.0, "tell": 0.0}
    nxt, tell = opt.ResumableConfigSelector.next_config, smbo.SMBO.tell

    def next_config(self):
        t = time.perf_counter()
        try:
            return nxt(self)
        finally:
            acc["ask"] += time.perf_counter() - t

    def timed_tell(self, *a, **k):
        t = time.perf_counter()
        try:
            return tell(self, *a, **k)
        finally:
            acc["tell"] += time.perf_counter() - t

    opt.ResumableConfigSelector.next_config, smbo.SMBO.tell = next_config, timed_tell
    return acc


def one(n: int, chunk: int, full: bool) -> dict:
    from boss_operator.engine import Engine

    spec = spec_for(n + 16, 4)  # room for the next proposals that are compared
    eng = Engine(spec, f"replay-{n}")
    snapshots: list[dict] = []
    t0 = time.perf_counter()
    while eng._told < n - 4:
        while len(eng.running) < 4 and eng.ask() is not None:
            pass
        t = eng.running[0]
        eng.tell(t.index, score(t.config), checkpoint=f"mem://{t.index}", checksum="0")
        if eng._told % chunk == 0:
            snapshots.insert(0, json.loads(json.dumps(eng.snapshot())))
    run_s = time.perf_counter() - t0
    records = json.loads(json.dumps([t.to_dict() for t in eng.trials]))
    acc = _timed_smac()
    out = {"trials": len(records), "uninterrupted_s": run_s, "snapshot_kb": len(json.dumps(snapshots[0])) / 1024,
           "tail": len(records) - snapshots[0]["proposed"]}
    rebuilt = []
    for how in (("snapshot", "full") if full else ("snapshot",)):
        acc["ask"] = acc["tell"] = 0.0
        t0 = time.perf_counter()
        rebuilt.append(Engine.replay(spec, records, eng.name, snapshots if how == "snapshot" else ()))
        total = time.perf_counter() - t0
        out[how] = {"s": total, "smac_ask_s": acc["ask"], "smac_tell_s": acc["tell"],
                    "rest_s": total - acc["ask"] - acc["tell"]}
    out["same_next"] = _same_next([eng, *rebuilt])
    return out


def _same_next(engines) -> bool:
    """The next 8 proposals of every engine, in lockstep, are the same."""
    for _ in range(8):
        got = [e.ask() for e in engines]
        if any((g is None) != (got[0] is None) for g in got):
            return False
        if got[0] is None:
            if not engines[0].running:
                return True
            t = engines[0].running[0]
            for e in engines:
                e.tell(t.index, score(t.config), checkpoint=f"mem://{t.index}", checksum="0")
            continue
        if len({json.dumps([g.index, g.config, g.teacher, g.student], sort_keys=True) for g in got}) != 1:
            return False
        for e in engines:
            e.tell(got[0].index, score(got[0].config), checkpoint=f"mem://{got[0].index}", checksum="0")
    return True


def main(args) -> int:
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        r = one(n, args.chunk, full=n <= args.full_up_to)
        rows.append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
    print(f"\nrestart: rebuild the engine from N recorded trials (snapshot every {args.chunk} results)\n")
    print("| trials | uninterrupted run s | full replay s (SMAC ask / tell / rest) | snapshot + tail s (ask / tell / rest) "
          "| tail trials | snapshot KB | same next 8 proposals |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        full = r.get("full")
        f = "not run" if full is None else f"{full['s']:.1f} ({full['smac_ask_s']:.1f} / {full['smac_tell_s']:.2f} / {full['rest_s']:.2f})"
        s = r["snapshot"]
        same = r["same_next"]
        print(f"| {r['trials']} | {r['uninterrupted_s']:.0f} | {f} | {s['s']:.2f} ({s['smac_ask_s']:.2f} / "
              f"{s['smac_tell_s']:.2f} / {s['rest_s']:.2f}) | {r['tail']} | {r['snapshot_kb']:.0f} | {same} |")
    return 0
