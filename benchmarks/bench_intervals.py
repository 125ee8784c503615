"""Coverage of calbench's bootstrap intervals (percentile, basic, bca) of the TRUE calibration error,
on simulated models whose calibration error is known (docs/metrics.md, "Intervals").

    python benchmarks/bench_intervals.py [--reps 1000] [--sizes 500,5000,50000] [--B 500] [--workers 2]
    python benchmarks/bench_intervals.py --quick        # 100 replications, N in {500, 5000}

A model: confidence r = 1/2 + X/2 with X ~ Beta(a, b) (the top-label range of a two-class problem)
and P(correct | r) = f(r) = r^p. For p > 1 every f(r) < r (over-confidence of a constant sign), which
makes the targets below exact by quadrature (scipy.integrate.quad). Each replication draws N samples
(probabilities (r, 1 - r), label 0 when correct), runs ONE vectorised bootstrap of B resamples
(calbench.metrics.bootstrap.Resampler; B = 500 keeps the full study feasible on 2 cores), computes
the three 95% intervals from those same samples, and records whether each covers the target.

What "true" means, per estimator (each is scored against the population value of what it estimates):
- ece (15 equal-width bins, L1): the binned calibration error sum_b |E[(f(r) - r) 1(r in b)]|. As
  f - r has one sign, it equals the L1 calibration error E|f(r) - r| here (printed as a check).
- ece-debiased (Kumar et al. 2019): an estimator of the binned L2 error
  sqrt(sum_b P(b) (E[f(r) - r | b])^2), by quadrature; not of the L1 error.
- smece (Blasiok & Nakkiran 2023): its population value is the smooth ECE of the distribution, which
  is not the L1 integral in general (the kernel smooths the residual and the bandwidth is a fixed
  point). There is no closed form for relplot's grid rule, so the target is smece on one sample of
  TRUE_N = 4,000,000 draws (the estimator is consistent; its sampling error there, about 1e-4,
  is far below the interval widths at N <= 50,000).

The default interval of calbench report / evaluate is the kind whose coverage is closest to 95%
over the whole study (mean |coverage - 0.95| over models x N x metrics), printed at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import numpy as np

KEYS = ("ece", "ece-debiased", "smece")
KINDS = ("percentile", "basic", "bca")
MODELS = {  # name: (a, b, p)
    "mild": (4.0, 1.5, 1.3),
    "moderate": (3.0, 2.0, 2.0),
    "strong": (5.0, 1.2, 4.0),
}
BINS = 15
TRUE_N = 4_000_000
LEVEL = 0.95


def density(model):
    from scipy.stats import beta

    a, b, _ = model
    return lambda r: 2.0 * beta.pdf(2.0 * r - 1.0, a, b)


def gap(model):
    p = model[2]
    return lambda r: r ** p - r


def binned_parts(model) -> tuple[np.ndarray, np.ndarray]:
    """Per equal-width bin of r on [0, 1]: P(b) and E[(f - r) 1(b)], by quadrature."""
    from scipy.integrate import quad

    dens, g = density(model), gap(model)
    mass, resid = np.zeros(BINS), np.zeros(BINS)
    for i in range(BINS):
        lo, hi = max(i / BINS, 0.5), (i + 1) / BINS
        if hi <= 0.5:
            continue
        mass[i] = quad(dens, lo, hi, limit=200)[0]
        resid[i] = quad(lambda r: g(r) * dens(r), lo, hi, limit=200)[0]
    return mass, resid


def draw(model, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    a, b, p = model
    r = 0.5 + 0.5 * rng.beta(a, b, n)
    correct = rng.random(n) < r ** p
    return np.where(correct, 0, 1), np.stack([r, 1.0 - r], axis=1)


def true_values(model) -> dict:
    """The target of each key (module docstring), plus the L1 calibration error as a check."""
    from scipy.integrate import quad

    from calbench.metrics import compute_metrics

    dens, g = density(model), gap(model)
    l1 = quad(lambda r: abs(g(r)) * dens(r), 0.5, 1.0, limit=400)[0]
    mass, resid = binned_parts(model)
    keep = mass > 0
    labels, probs = draw(model, TRUE_N, np.random.default_rng(12345))
    return {"ece": float(np.abs(resid).sum()), "l1": l1,
            "ece-debiased": float(np.sqrt((resid[keep] ** 2 / mass[keep]).sum())),
            "smece": compute_metrics(labels, probs=probs, keys=("smece",))["smece"]}


def replicate(task) -> dict:
    """One replication: {(key, kind): (covered, width)}."""
    from calbench.metrics.bootstrap import Resampler, _samples, intervals_of
    from calbench.metrics.inputs import prepare

    name, n, rep, B, truth = task
    rng = np.random.default_rng([n, rep, list(MODELS).index(name)])
    labels, probs = draw(MODELS[name], n, rng)
    rs = Resampler(prepare(labels, probs=probs), BINS, KEYS)
    (samples,) = _samples([rs], n, B, rep)
    jack = rs.jackknife()
    out = {}
    for kind in KINDS:
        ci = intervals_of(samples, rs.point, LEVEL, kind, jack if kind == "bca" else None)
        for k in KEYS:
            lo, hi = ci[k]
            out[(k, kind)] = (lo <= truth[k] <= hi, hi - lo)
    return out


def run_study(reps: int, sizes, B: int, workers: int, models) -> dict:
    import threadpoolctl

    threadpoolctl.threadpool_limits(1)
    truths = {m: true_values(MODELS[m]) for m in models}
    for m, t in truths.items():
        print(f"model {m} {MODELS[m]}: true ece {t['ece']:.5f} (L1 CE {t['l1']:.5f}), "
              f"ece-debiased {t['ece-debiased']:.5f}, smece {t['smece']:.5f} (on {TRUE_N:,} draws)")
    results = {}
    with multiprocessing.Pool(workers) as pool:
        for n in sizes:
            start = time.perf_counter()
            tasks = [(m, n, rep, B, truths[m]) for m in models for rep in range(reps)]
            outs = pool.map(replicate, tasks, chunksize=max(1, len(tasks) // (8 * workers)))
            for (m, _, _, _, _), o in zip(tasks, outs):
                for key, (cov, width) in o.items():
                    results.setdefault((m, n) + key, []).append((cov, width))
            print(f"N={n:,}: {len(tasks)} replications x B={B} in {time.perf_counter() - start:.0f} s", flush=True)
            done = sizes[:sizes.index(n) + 1]
            if len(done) < len(sizes):  # the table so far, so that an interrupted run still reports
                print(report(results, models, done), flush=True)
    return results


def report(results: dict, models, sizes) -> str:
    """The coverage table (mean over models) and the interval kind closest to nominal overall."""
    lines = [f"coverage of the true value by the nominal {LEVEL:.0%} interval (mean over models "
             f"{', '.join(models)}); median width in brackets, in % points", "",
             "| metric | N | " + " | ".join(KINDS) + " |", "|---|---:|" + "---:|" * len(KINDS)]
    score = {kind: [] for kind in KINDS}
    for k in KEYS:
        for n in sizes:
            cells = []
            for kind in KINDS:
                covs = [np.mean([c for c, _ in results[(m, n, k, kind)]]) for m in models]
                widths = [w for m in models for _, w in results[(m, n, k, kind)]]
                score[kind] += [abs(c - LEVEL) for c in covs]
                cells.append(f"{100 * np.mean(covs):.1f}% [{100 * np.median(widths):.2f}]")
            lines.append(f"| {k} | {n:,} | " + " | ".join(cells) + " |")
    gaps = {kind: float(np.mean(v)) for kind, v in score.items()}
    best = min(gaps, key=gaps.get)
    lines += ["", "mean |coverage - 95%| over models x N x metrics: "
              + ", ".join(f"{kind} {100 * g:.1f}" for kind, g in gaps.items()) + f"  ->  default: {best}"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1000, help="replications per model and N")
    ap.add_argument("--sizes", default="500,5000,50000", help="comma-separated sample sizes N")
    ap.add_argument("--B", type=int, default=500, help="bootstrap resamples per replication")
    ap.add_argument("--workers", type=int, default=2, help="processes")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--quick", action="store_true", help="100 replications, N in {500, 5000}")
    args = ap.parse_args()
    if args.quick:
        args.reps, args.sizes = 100, "500,5000"
    sizes = [int(s) for s in args.sizes.split(",")]
    models = args.models.split(",")
    start = time.perf_counter()
    results = run_study(args.reps, sizes, args.B, args.workers, models)
    print(report(results, models, sizes))
    print(f"total {time.perf_counter() - start:.0f} s with {args.workers} workers")


if __name__ == "__main__":
    main()
