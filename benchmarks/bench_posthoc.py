"""Time fitting every registered post-hoc calibrator on N x K validation logits (default 10,000 x 1,000),
against two references timed in the same run on the same data.

    python benchmarks/bench_posthoc.py [--n 10000] [--k 1000] [--repeat 1] [--threads 1] [--only hb,ts]
                                       [--set ms-odir.max_iter=5 ...]

References: one scikit-learn `IsotonicRegression(out_of_bounds="clip")` fit on N scores (the
probability of class 0), and calbench's `ts`. The table shows, per calibrator, the median fit time
over `--repeat` rounds (rounds are interleaved: each round fits every calibrator once, so a load
change on a shared machine hits all of them alike), its ratio to each reference, and the time of
one transform of the same logits. The target in docs/methods.md is a fit under 5 s each on a 2-core
machine. BLAS runs with `--threads` threads (threadpoolctl) so the figures compare like with like.
`--set NAME.KEY=VALUE` fits NAME with a non-default hyper-parameter (e.g. a capped `max_iter` to time
ms-odir's per-step cost, or a weaker `reg_lambda`); the header lists every override, since such a row
is not the target's. ms-odir's progress line also shows its L-BFGS steps, final max |gradient| and
whether it converged (a fit that did not also warns).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def synthetic(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float64 logits of an over-confident classifier (about 70% accuracy) and their labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    right = rng.random(n) < 0.7
    target = np.where(right, labels, (labels + rng.integers(1, k, n)) % k)
    logits[np.arange(n), target] += rng.uniform(4.0, 9.0, n)
    return logits, labels


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sklearn_isotonic_reference(logits: np.ndarray, labels: np.ndarray):
    from scipy.special import softmax
    from sklearn.isotonic import IsotonicRegression

    scores = softmax(logits, axis=1)[:, 0]
    targets = (labels == 0).astype(np.float64)
    return lambda: IsotonicRegression(out_of_bounds="clip").fit(scores, targets)


def overrides(settings: list[str]) -> dict[str, dict]:
    """{name: {key: value}} from NAME.KEY=VALUE strings (VALUE read as JSON, else kept as text)."""
    import json

    out: dict[str, dict] = {}
    for setting in settings:
        target, _, text = setting.partition("=")
        name, _, key = target.rpartition(".")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        out.setdefault(name, {})[key] = value
    return out


def one_round(names, logits, labels, reference, hparams) -> dict[str, tuple[float, float]]:
    from calbench.posthoc import fit_calibrator

    times = {"sklearn-isotonic-1d": (seconds(reference), float("nan"))}
    for name in names:
        holder = {}
        fit = seconds(lambda: holder.setdefault("c", fit_calibrator(name, logits, labels, **hparams.get(name, {}))))
        times[name] = (fit, seconds(lambda: holder["c"].transform(logits)))
        info = getattr(holder["c"], "fit_info", None)  # ms-odir: its L-BFGS steps and final max |gradient|
        detail = (f", {info['steps']} steps, max |grad| {info['max_gradient']:.1e}, converged {info['converged']}"
                  if info else "")
        print(f"  ({name}: fit {fit:.2f} s{detail})", flush=True)  # progress: a slow fit shows while it runs
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default="", help="comma-separated calibrator names (default: every one)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME.KEY=VALUE",
                        help="non-default hyper-parameter of one calibrator (repeatable; listed in the header)")
    args = parser.parse_args(argv)
    hparams = overrides(args.set)

    from threadpoolctl import threadpool_limits

    from calbench.posthoc import POSTHOC

    names = [n for n in args.only.split(",") if n] or POSTHOC.names()
    logits, labels = synthetic(args.n, args.k)
    reference = sklearn_isotonic_reference(logits, labels)
    rounds = []
    with threadpool_limits(args.threads):
        for _ in range(args.repeat):
            rounds.append(one_round(names, logits, labels, reference, hparams))
    median = {key: (statistics.median(r[key][0] for r in rounds), statistics.median(r[key][1] for r in rounds))
              for key in rounds[0]}
    iso, ts = median["sklearn-isotonic-1d"][0], median.get("ts", (float("nan"),))[0]
    print(f"fit on {args.n} x {args.k} float64 validation logits, {args.threads} BLAS thread(s), "
          f"median of {args.repeat} round(s)" + (f"; NON-DEFAULT: {', '.join(args.set)}" if args.set else ""))
    print(f"{'calibrator':<20}{'fit s':>9}{'/ sk-iso':>10}{'/ ts':>8}{'transform s':>13}  under 5 s")
    for key, (fit, transform) in median.items():
        print(f"{key:<20}{fit:>9.3f}{fit / iso:>10.1f}{fit / ts:>8.1f}{transform:>13.3f}  "
              f"{'yes' if fit < 5.0 else 'NO'}")


if __name__ == "__main__":
    main()
