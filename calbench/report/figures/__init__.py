"""The papers' figures, one module each, in the FIGURES registry (calbench.registry.Registry):

reliability  reliability diagrams + confidence histograms, methods grid, before/after TS (CALS Fig. 4)
tradeoff     ECE vs accuracy per method with interval bars (Fig. 1)
curves       validation ECE per epoch (Fig. 3a) and CALS multipliers min/mean/max per epoch (Fig. 3b)
ablation     a metric vs a swept hyper-parameter (margin) per penalty, val and test (Fig. 3c)

FIGURES.get(name)(results, out_dir, fmt="png", **options) -> list[Path]
"""

# imported in the order `calbench plot` lists them; importing registers each figure
from calbench.report.figures import reliability  # noqa: F401, I001
from calbench.report.figures import tradeoff  # noqa: F401
from calbench.report.figures import curves  # noqa: F401
from calbench.report.figures import ablation  # noqa: F401
from calbench.report.figures.base import FIGURES, filter_results

__all__ = ["FIGURES", "filter_results"]
