"""How a run stores the predictions of one evaluation set: full float16 logits, or compact rows.

`full` keeps the (n, K) logits as float16 (2 bytes per class per sample): the report can recompute
and bootstrap every registered metric, class-wise ones included. For ImageNet-C (75 sets x 50,000
images x 1,000 classes) that is 7.5 GB per run, so above a budget a set is stored `compact`:

- per sample and per calibration ("none", then every calibrator of the run fitted on the CLEAN
  validation split, applied at evaluation time): the predicted class, the top-label confidence,
  the NLL and the Brier score of the label (shift sets), and the OOD scores of calbench.metrics.ood
  (max logit, energy, entropy; the MSP is the confidence). Every registered metric whose needs lie
  in ROW_NEEDS is recomputed and bootstrapped from these rows exactly as from the logits (the
  same per-sample values feed the same metric functions: RowResampler).
- the metrics that need every probability (class-wise ones, such as cECE) cannot be recomputed from
  rows: their exact point values, computed from the full float32 logits at evaluation time, are in
  the set's record (`metrics`), and the report shows them without an interval.

`choose_storage` decides: a set is compact when its float16 logits would exceed the run's budget
(RUN_BUDGET_BYTES, 2 GB) divided by the run's number of evaluation sets; `storage: full|compact|auto`
in the recipe's `evaluate:` block overrides it. Measured figures: docs/shift.md, benchmarks/bench_shift.py.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from calbench.metrics.binning import bin_index
from calbench.metrics.bootstrap import Resampler
from calbench.metrics.calibration import adaptive_order
from calbench.metrics.core import evaluate, needs_of
from calbench.metrics.inputs import prepare
from calbench.metrics.ood import OOD_SCORES, ood_scores
from calbench.metrics.registry import METRICS
from calbench.metrics.stats import TINY, SampleStats, collect, pack

STORAGE_MODES = ("auto", "full", "compact")
RUN_BUDGET_BYTES = 2 * 10**9          # shift storage of one run
ROW_NEEDS = frozenset({"correct", "conf", "binned", "nll", "brier"})
ROW_FIELDS = ("pred", "conf", "nll", "brier")          # labelled sets (shift)
PROB_SCORES = ("msp", "entropy")      # OOD scores defined on probabilities alone


def calibrated_sets(logits: np.ndarray, calibrators: Mapping, num_classes: int) -> dict[str, tuple]:
    """{"none": (logits float64, "logits"), name: (scores, kind) after each calibrator} (calibrators
    fitted on the run's CLEAN validation split, calbench.posthoc.calibrated_scores); a class subset
    (logits narrower than the clean classes, ImageNet-R/-A) gets no calibrator."""
    from calbench.posthoc import calibrated_scores

    z = np.asarray(logits, dtype=np.float64)
    out = {"none": (z, "logits")}
    if z.shape[1] == num_classes:
        out.update({name: calibrated_scores(c, z) for name, c in calibrators.items()})
    return out


def choose_storage(mode: str, n: int, num_classes: int, sets_in_run: int,
                   budget: int = RUN_BUDGET_BYTES) -> str:
    """"full" or "compact" for one set of n x num_classes float16 logits (module docstring)."""
    if mode != "auto":
        return mode
    return "compact" if 2 * n * num_classes * max(1, sets_in_run) > budget else "full"


def row_supported(key: str) -> bool:
    """Whether metric `key` is recomputed (and bootstrapped) from compact rows."""
    return METRICS.get(key).needs <= ROW_NEEDS


def score_rows(scores: np.ndarray, kind: str) -> dict[str, np.ndarray]:
    """{OOD score: (n,)} of logits, or of probabilities (PROB_SCORES only: the softmax of log p is p)."""
    if kind == "logits":
        return ood_scores(scores)
    logp = np.log(np.maximum(np.asarray(scores, dtype=np.float64), TINY))
    return ood_scores(logp, [k for k in OOD_SCORES.names() if k in PROB_SCORES])


def prediction_rows(labels: np.ndarray, scores: np.ndarray, kind: str) -> dict[str, np.ndarray]:
    """ROW_FIELDS of one labelled prediction set, from the metrics' own pass (stats.collect), so the
    rows are the very per-sample values compute_metrics would use."""
    prep = prepare(labels, **{kind: scores})
    st = collect(prep, 15, frozenset({"conf", "nll", "brier"}), keep_samples=True)
    return {"pred": st.samples["pred"].astype(np.int32), "conf": st.samples["conf"],
            "nll": st.samples["nll"], "brier": st.samples["brier"]}


def compact_arrays(labels: np.ndarray, calibrated: Mapping[str, tuple[np.ndarray, str]],
                   labelled: bool) -> dict[str, np.ndarray]:
    """The npz arrays of a compact set: "<calibration>.<field>" for every calibration (module
    docstring), `calibrated` = {calibration: (scores, kind)} with "none" = the raw logits."""
    arrays = {}
    for calibration, (scores, kind) in calibrated.items():
        fields = prediction_rows(labels, scores, kind) if labelled else {}
        for name, values in score_rows(scores, kind).items():
            if not (labelled and name == "msp"):         # the msp of a labelled set is its conf
                fields[name] = values
        arrays.update({f"{calibration}.{name}": values for name, values in fields.items()})
    return arrays


def calibrations_of(data: Mapping[str, np.ndarray]) -> list[str]:
    """Calibrations stored in a compact set's arrays, in stored order."""
    return list(dict.fromkeys(k.split(".", 1)[0] for k in data if "." in k))


def stored_scores(data: Mapping[str, np.ndarray], calibration: str) -> dict[str, np.ndarray]:
    """{OOD score: (n,)} of one calibration of a compact set (msp from conf for labelled sets)."""
    out = {}
    for name in OOD_SCORES.names():
        key = f"{calibration}.{'conf' if name == 'msp' and f'{calibration}.conf' in data else name}"
        if key in data:
            out[name] = np.asarray(data[key], dtype=np.float64)
    return out


def stored_rows(data: Mapping[str, np.ndarray], calibration: str) -> dict[str, np.ndarray]:
    """{"labels", "pred", "conf", "nll", "brier"} of one calibration of a compact shift set."""
    rows = {name: np.asarray(data[f"{calibration}.{name}"]) for name in ROW_FIELDS}
    rows["labels"] = np.asarray(data["labels"], dtype=np.int64)
    rows["pred"] = rows["pred"].astype(np.int64)
    return rows


def stats_from_rows(rows: Mapping[str, np.ndarray], num_classes: int, bins: int, needs,
                    keep_samples: bool = False) -> SampleStats:
    """The SampleStats stats.collect would give for the logits the rows came from, for metrics whose
    needs lie in ROW_NEEDS (ValueError otherwise): the packed (conf, correct) key, the equal-width
    bin sums, the totals and, with keep_samples, the aligned per-sample arrays."""
    if not set(needs) <= ROW_NEEDS:
        raise ValueError(f"compact rows cannot serve needs {sorted(set(needs) - ROW_NEEDS)}")
    labels, pred = rows["labels"], rows["pred"]
    conf, correct = np.asarray(rows["conf"], dtype=np.float64), pred == labels
    st = SampleStats(int(labels.shape[0]), int(num_classes), int(bins))
    st.totals = {"correct": float(np.count_nonzero(correct)), "nll": float(np.sum(rows["nll"])),
                 "brier": float(np.sum(rows["brier"]))}
    if "conf" in needs:
        st.key = pack(conf, correct)
    if "binned" in needs:
        b = bin_index(conf, bins)
        st.binned = np.stack([np.bincount(b, minlength=bins).astype(np.float64),
                              np.bincount(b, weights=correct.astype(np.float64), minlength=bins),
                              np.bincount(b, weights=conf, minlength=bins)])
    if keep_samples:
        st.samples = {"labels": labels, "pred": pred, "conf": conf, "nll": np.asarray(rows["nll"], np.float64),
                      "brier": np.asarray(rows["brier"], np.float64), "correct": correct.astype(np.float64)}
    return st


class RowResampler(Resampler):
    """calbench.metrics.bootstrap.Resampler over compact rows instead of logits: the same sorted
    per-sample arrays, so stats(), stats_of_indices() and jackknife() are the i.i.d. machinery
    itself; `explicit` recomputes a metric on explicitly resampled rows."""

    def __init__(self, rows: Mapping[str, np.ndarray], num_classes: int, bins: int, keys: tuple[str, ...]):
        self.keys, self.bins, self.rows = tuple(keys), int(bins), rows
        self.n, self.k, self.prep, self.shots = int(rows["labels"].shape[0]), int(num_classes), None, None
        st = stats_from_rows(rows, num_classes, bins, needs_of(self.keys), keep_samples=True)
        self.point = evaluate(st, self.keys)
        order = adaptive_order(st.samples["conf"], st.samples["correct"])
        self.order, self.inv = order, np.empty_like(order)
        self.inv[order] = np.arange(self.n)
        st.samples = {name: a[order] for name, a in st.samples.items()}
        st.key, st.cache["sorted"] = None, True
        self.sample_stats = st

    def explicit(self, key: str, W: np.ndarray) -> np.ndarray:
        values = []
        for w in W:
            picked = self.order[np.repeat(np.arange(self.n), w.astype(np.int64))]
            sub = {name: np.asarray(a)[picked] for name, a in self.rows.items()}
            st = stats_from_rows(sub, self.k, self.bins, METRICS.get(key).needs)
            values.append(evaluate(st, (key,))[key])
        return np.asarray(values, dtype=np.float64)


def bytes_per_sample(num_classes: int, calibrations: int, labelled: bool = True) -> dict[str, int]:
    """Stored bytes per sample of each mode (the label included): full = 2K + 8; compact = 8 + per
    calibration 4 (pred) + 8 per float64 field (conf, nll, brier, max_logit, energy, entropy)."""
    floats = len(ROW_FIELDS) - 1 + len(OOD_SCORES) - 1 if labelled else len(OOD_SCORES)
    per_calibration = (4 if labelled else 0) + 8 * floats
    return {"full": 2 * num_classes + 8, "compact": 8 + calibrations * per_calibration}
