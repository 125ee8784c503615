"""A factory of synthetic results stores laid out as `calbench run` writes them:
results/<recipe>/<run id>/{metrics.json, predictions.npz, history.jsonl, config.json}, recipe.json.
The stored temperature and test_ts block are what the engine computes: TS fitted on the run's
validation logits, test logits in float64 / T rounded to float32."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from calbench.metrics import compute_metrics
from calbench.posthoc import fit_calibrator

METHODS = (("ce", "ce", {}), ("ls", "ls(alpha=0.05)", {"alpha": 0.05}),
           ("mbls", "mbls(margin=10)", {"margin": 10.0, "alpha": 0.1}),
           ("cals-alm", "cals-alm(margin=10)", {"margin": 10.0, "penalty": "phr"}))


def _logits(rng, labels, k, strength, temp):
    z = rng.normal(size=(labels.size, k))
    z[np.arange(labels.size), labels] += strength
    return (z * temp).astype(np.float32)


def make_store(root: Path, *, recipe="quickstart", methods=METHODS, datasets=(("digits", "mlp"),), seeds=(0, 1),
               n=120, k=10, epochs=4, failed=(), pending=(), corrupt=(), seed=0) -> Path:
    """Write a store under root; returns root. failed / pending / corrupt: sets of (method label, dataset,
    seed) whose run is failed (metrics.json status failed), only listed in recipe.json, or whose
    metrics.json is garbage. Test sets depend on (dataset, seed) only, as a real split would."""
    rng = np.random.default_rng(seed)
    rdir = root / recipe
    rdir.mkdir(parents=True, exist_ok=True)
    entries = []
    for di, (dataset, backbone) in enumerate(datasets):
        for s in seeds:
            drng = np.random.default_rng([seed, di, s])
            test_labels = drng.integers(0, k, n).astype(np.int64)
            val_labels = drng.integers(0, k, n // 2).astype(np.int64)
            for mi, (method, label, hparams) in enumerate(methods):
                run_id = hashlib.sha1(f"{recipe}{label}{dataset}{backbone}{s}".encode()).hexdigest()[:12]
                order = {"method": mi, "dataset": di, "backbone": 0}
                entry = {"run_id": run_id, "method": method, "method_label": label, "dataset": dataset,
                         "backbone": backbone, "seed": s, "order": order}
                entries.append(entry)
                if (label, dataset, s) in pending:
                    continue
                d = rdir / run_id
                d.mkdir()
                strength, temp = 2.0 + 0.3 * mi + rng.uniform(0, 0.3), 1.6 - 0.15 * mi
                test_logits = _logits(rng, test_labels, k, strength, temp)
                val_logits = _logits(rng, val_labels, k, strength, temp)
                np.savez(d / "predictions.npz", test_logits=test_logits, test_labels=test_labels,
                         val_logits=val_logits, val_labels=val_labels)
                temperature = fit_calibrator("ts", val_logits, val_labels).temperature
                config = {"method": method, "hparams": hparams, "dataset": dataset, "backbone": backbone, "seed": s}
                (d / "config.json").write_text(json.dumps(config))
                hist = []
                for e in range(epochs):
                    row = {"epoch": e, "lr": 0.1, "train_loss": 2.0 / (e + 1), "val_acc": 0.5 + 0.1 * e,
                           "val_ece": 0.2 / (e + 1) + 0.01 * mi, "val_nll": 1.0, "time_s": 0.1}
                    if method.startswith("cals"):
                        row.update(lambda_min=1e-6 * e, lambda_mean=0.1 * e, lambda_max=0.3 * e, rho_mean=1.0)
                    hist.append(json.dumps(row))
                (d / "history.jsonl").write_text("\n".join(hist) + "\n")
                obj = {"schema": 1, "run_id": run_id, "status": "done", "reason": None, "failed_epoch": None,
                       "recipe": recipe, "method": method, "method_label": label, "dataset": dataset,
                       "backbone": backbone, "seed": s, "hparams": hparams, "posthoc": ["ts"], "order": order,
                       "config": config, "temperature": temperature, "epochs_done": epochs, "wall_time_s": 1.0,
                       "device": "cpu", "versions": {"calbench": "0.1.0"}, "git_rev": None}
                if (label, dataset, s) in failed:
                    obj.update(status="failed", reason="loss became nan at epoch 2", failed_epoch=2, metrics={})
                else:
                    obj["metrics"] = {
                        "test": compute_metrics(test_labels, logits=test_logits),
                        # as the engine: float64 logits / T rounded to float32
                        "test_ts": compute_metrics(test_labels, logits=(test_logits.astype(np.float64)
                                                                        / temperature).astype(np.float32)),
                        "val": compute_metrics(val_labels, logits=val_logits)}
                text = json.dumps(obj)
                if (label, dataset, s) in corrupt:
                    text = text[: len(text) // 2]
                (d / "metrics.json").write_text(text)
    recipe_obj = {"name": recipe, "methods": [m[1] for m in methods], "datasets": [d for d, _ in datasets],
                  "backbones": sorted({b for _, b in datasets}), "seeds": list(seeds), "runs": entries,
                  "run_ids": [e["run_id"] for e in entries]}
    (rdir / "recipe.json").write_text(json.dumps(recipe_obj))
    return root


@pytest.fixture
def store_factory(tmp_path):
    def factory(**kw):
        return make_store(tmp_path / "results", **kw)
    return factory


@pytest.fixture
def store(store_factory):
    return store_factory()
