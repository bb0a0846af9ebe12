"""Where Engine.replay spends its time, on any version of the engine (the "before" numbers of
docs/benchmarks.md, Operator scale): run N instant trials uninterrupted, then replay them,
timing SMAC's ask and tell through SMBO (the engine before issue 14 asked through it; the
engine after it asks its config selector directly: bench/replay_bench.py times that one).

    PYTHONPATH=sdk:operator python bench/replay_profile.py 500
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import score, spec_for  # noqa: E402


def main(n: int) -> dict:
    import smac.main.smbo as smbo
    from boss_operator.engine import Engine

    spec = spec_for(n, 2)
    eng = Engine(spec, "rp")
    running: list = []
    t0 = time.perf_counter()
    while not eng.finished:
        while len(running) < 2:
            t = eng.ask()
            if t is None:
                break
            running.append(t)
        t = running.pop(0)
        eng.tell(t.index, score(t.config), checkpoint=f"mem://{t.index}", checksum="0")
    run_s = time.perf_counter() - t0
    records = [t.to_dict() for t in eng.trials]
    acc = {"smac_ask": 0.0, "smac_tell": 0.0}
    ask, tell = smbo.SMBO.ask, smbo.SMBO.tell

    def timed(fn, key):
        def wrapper(self, *a, **k):
            s = time.perf_counter()
            try:
                return fn(self, *a, **k)
            finally:
                acc[key] += time.perf_counter() - s
        return wrapper

    smbo.SMBO.ask, smbo.SMBO.tell = timed(ask, "smac_ask"), timed(tell, "smac_tell")
    t0 = time.perf_counter()
    Engine.replay(spec, records, "rp")
    replay_s = time.perf_counter() - t0
    return {"n": n, "uninterrupted_s": round(run_s, 2), "replay_s": round(replay_s, 2),
            **{k: round(v, 2) for k, v in acc.items()}, "ours": round(replay_s - sum(acc.values()), 2)}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]))))
