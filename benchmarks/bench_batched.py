"""The toy benchmark batched against unbatched: `ensgan bench modes`' own run (ensgan.bench.modes
`run`) on one dataset, once with every trial's GANs trained as one stacked model
(`--batched`, ensgan/bench/batched.py) and once one GAN after another, side by side: the time
of each and the mean scores (which agree in distribution, not bit for bit: tests/
test_bench_batched.py says why).

    .venv/bin/python benchmarks/bench_batched.py [--dataset ring] [--trials 5] [--steps 2000]
        [--method gan --method mixture] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from ensgan.bench.modes import aggregate, resolve, run

METRICS = ("modes", "hq", "kl")  # the 2-D datasets' scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ring", choices=["ring", "grid"])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--method", action="append", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    methods = a.method or ["gan", "mixture"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batched in (False, True):
            s = resolve(a.dataset, a.trials, steps=a.steps, methods=methods, device=a.device,
                        batched=batched)  # fmt: skip
            t0 = time.perf_counter()
            results = run(s, Path(tmp) / f"b{batched}", log=lambda line: None)
            seconds = time.perf_counter() - t0
            for (_, method), r in aggregate(results).iterrows():
                scores = {m: f"{r[f'{m}_mean']:.3g} ± {r[f'{m}_se']:.2g}" for m in METRICS}
                rows.append({"path": "batched" if batched else "unbatched", "method": method,
                             **scores, "run_seconds": round(seconds, 1)})  # fmt: skip
    table = pd.DataFrame(rows)
    updates = a.trials * a.steps * len(methods)
    print(f"{a.dataset}, {a.trials} trials x {a.steps} updates x {len(methods)} rows "
          f"({updates:,} updates), {a.device}, {a.threads} thread(s)")  # fmt: skip
    print(table.to_markdown(index=False))
    per = table.groupby("path", sort=False).run_seconds.first()
    print(f"run seconds: {per.to_dict()}; speed-up {per['unbatched'] / per['batched']:.2f}x")


if __name__ == "__main__":
    main()
