"""`report --split ... --interval basic` gives basic intervals (reflected percentile ones about the
point), bca is one line with exit 2."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd


def _csv(store_tools, results, split, *extra):
    _, run_cli, _ = store_tools
    res = run_cli("report", "--results", results, "--split", split, "--csv", "--bootstrap", "200", *extra)
    assert res.exit_code == 0, res.output
    return pd.read_csv(io.StringIO(res.output), keep_default_na=False)


def _bounds(table):
    rows = table[table["lo"].astype(str) != ""]
    return rows.assign(lo=rows["lo"].astype(float), hi=rows["hi"].astype(float)).dropna(subset=["lo"])


def test_basic_is_the_percentile_interval_reflected_about_the_mean(shift_store, store_tools):
    for split in ("shift", "shift:gaussian_noise:3"):
        pct = _bounds(_csv(store_tools, shift_store, split))
        basic = _bounds(_csv(store_tools, shift_store, split, "--interval", "basic"))
        assert len(pct) and len(pct) == len(basic)
        # same seed, same resamples: basic = (2 mean - hi_pct, 2 mean - lo_pct)
        np.testing.assert_allclose(basic["lo"], 2 * pct["mean"] - pct["hi"], atol=1e-9)
        np.testing.assert_allclose(basic["hi"], 2 * pct["mean"] - pct["lo"], atol=1e-9)
        assert not np.allclose(basic["lo"], pct["lo"])


def test_bca_with_split_is_one_line(shift_store, store_tools):
    _, run_cli, _ = store_tools
    res = run_cli("report", "--results", shift_store, "--split", "shift", "--interval", "bca")
    assert res.exit_code == 2
    assert "--interval bca" in res.output and "Traceback" not in res.output


def test_seed_level_ood_interval_basic_reflects_percentile():
    from calbench.report.shift import _interval

    values = np.array([0.81, 0.86, 0.84, 0.90])
    lo, hi = _interval(values, 500, 0.95, 7)
    blo, bhi = _interval(values, 500, 0.95, 7, "basic")
    assert (blo, bhi) == (2 * values.mean() - hi, 2 * values.mean() - lo)
    assert lo < hi and blo != lo
