"""RankMixup (Noh, Park, Lee and Ham, ICCV 2023): mixed samples as ranking supervision for calibration.

The model sees the clean batch and M mixed copies of it, [x; x~^1; ...; x~^M] (the targets
repeated, [y; ...; y]); mixed copy m has its own lam_m ~ Beta(alpha, alpha) and permutation pi_m
(calbench.methods.mixup: drawn only from the engine's seeded generator, carried in `ctx`). The
loss is CE on the CLEAN rows plus `weight` times a ranking term; the mixed rows get no CE. The
relevance of mixed sample (i, m) is the largest entry of its mixed label,
    r_im = max(lam_m, 1 - lam_m) if y_i != y_pi_m(i), else 1;   the clean sample has r = 1.
- "rankmixup-mrl", the mixup ranking loss (M = 1): a mixed sample should be less confident than
  its clean source by a margin,
      R = mean_i 1[r_i < 1] relu(max_k l~_ik - max_k l_ik + margin)   (r_i < 1: two classes mixed)
- "rankmixup", M-NDCG: per clean sample, the confidences s (top-1 probabilities) of the clean and
  M mixed samples, listed by decreasing relevance (clean first; ties in their draw order), should
  be ordered like the relevances:
      DCG_i = sum_r s_r / log2(r + 1), IDCG_i = sum_r rel_r / log2(r + 1) (r = 1 .. M + 1),
      NDCG_i = DCG_i / IDCG_i if IDCG_i > DCG_i else IDCG_i / DCG_i,   R = mean_i (1 - NDCG_i)

Defaults are the authors' CIFAR configuration (cvlab-yonsei/RankMixup, configs/): weight 0.1,
mixup alpha 2 (1 on Tiny-ImageNet), M = 3 for M-NDCG and 1 for MRL, MRL margin 2 (1 on
Tiny-ImageNet). Facts of the authors' code calbench follows: MRL compares the max LOGITS (a
probability version is present but commented out, which is why the margin is 2, not a
probability); the MRL mean runs over all rows, the masked ones counting 0; NDCG's inversion
above 1. Where calbench differs: the code decides "same class" by testing the float32 mixed label
for an entry exactly equal to 1.0, which rounding can miss; calbench compares the class indices.
Mixing is at the input (the code's layer_mix = 0 setting, its default).
On the CPU both losses, relevances and ranking included, run as one C kernel (row_losses.py: the
softmax of every row, CE, the per-sample ranking term and the analytic gradient, about 1.3x
cross-entropy on the same rows where autograd through 16-23 ops cost 4-7x).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calbench.methods import row_losses
from calbench.methods.base import Method
from calbench.methods.common import cross_entropy
from calbench.methods.mixup import check_whole_samples, mix, mixing_weight, permutation
from calbench.methods.registry import METHODS


def mixed_copies(x, y, alpha: float, copies: int, generator):
    """[x; x~^1; ...; x~^M], the repeated targets, and ctx {"lam": (M,), "perm": (M, N)}."""
    lams, perms, batches = [], [], [x]
    for _ in range(copies):
        lam = mixing_weight(alpha, alpha, generator)
        perm = permutation(x.shape[0], generator, x.device)
        lams.append(lam)
        perms.append(perm)
        batches.append(mix(x, lam, perm))
    ctx = {"lam": torch.tensor(lams, dtype=torch.float64), "perm": torch.stack(perms)}
    return torch.cat(batches), torch.cat([y] * (copies + 1)), ctx


def relevances(targets: torch.Tensor, ctx: dict) -> torch.Tensor:
    """(N, M) relevance of each mixed sample: max(lam, 1 - lam), or 1 for a same-class pair."""
    perm = ctx["perm"].to(targets.device)
    lam = ctx["lam"].to(targets.device)
    same = targets[perm] == targets.unsqueeze(0)                    # (M, N)
    top = torch.maximum(lam, 1.0 - lam).unsqueeze(1).expand_as(perm)
    return torch.where(same, torch.ones_like(top), top).t()


def top_probability(logits: torch.Tensor, dim: int) -> torch.Tensor:
    """max_k softmax(l)_k (softmax then max: faster on CPU than exp(max - logsumexp))."""
    return F.softmax(logits, dim=dim).amax(dim=dim)


class _RankMixupBase(Method):
    copies = 1

    def transform_batch(self, x, y, generator=None):
        return mixed_copies(x, y, self.alpha, self.copies, generator)

    def loss_rows(self, logits, targets, features=None, ctx=None) -> torch.Tensor:
        if ctx is None:
            return cross_entropy(logits, targets)        # evaluation: clean rows only
        n = ctx["perm"].shape[1]
        check_whole_samples(self.name, targets.shape[0], n * (self.copies + 1))
        if self.weight == 0.0:
            return cross_entropy(logits[:n], targets[:n])   # the limit: CE on the clean rows, exactly
        fused = row_losses.rank_mixup(logits, targets, ctx, self.kernel_kind, self.weight,
                                      getattr(self, "margin", 0.0))
        if fused is not None:                            # the C kernel (row_losses.py)
            return fused
        ce = cross_entropy(logits[:n], targets[:n])
        mixed = logits[n:].reshape(self.copies, n, -1)
        return ce + self.weight * self.ranking(logits[:n], mixed, relevances(targets[:n], ctx))


@METHODS.register("rankmixup", description="RankMixup (M-NDCG): CE on clean samples + NDCG of confidences ranked by mixing coefficient.",
                  paper="Noh et al., ICCV 2023")
class RankMixupNDCG(_RankMixupBase):
    """CE(clean) + weight * mean_i (1 - NDCG_i) over 1 clean + M mixed samples (module docstring)."""

    kernel_kind = row_losses.NDCG

    def __init__(self, num_classes: int, *, alpha: float = 2.0, weight: float = 0.1, copies: int = 3,
                 ignore_index: int = -100):
        super().__init__(num_classes, ignore_index)
        self.alpha, self.weight, self.copies = float(alpha), float(weight), int(copies)

    @staticmethod
    def ranking(clean: torch.Tensor, mixed: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        order = torch.sort(relevance, dim=1, descending=True, stable=True).indices       # (N, M)
        confidences = top_probability(mixed, dim=2).t().gather(1, order)                 # (N, M)
        scores = torch.cat([top_probability(clean, dim=1).unsqueeze(1), confidences], dim=1)
        gains = torch.cat([torch.ones_like(relevance[:, :1]), relevance.gather(1, order)], dim=1)
        ranks = torch.arange(2, scores.shape[1] + 2, dtype=scores.dtype, device=scores.device)
        discount = 1.0 / torch.log2(ranks)
        dcg = (scores * discount).sum(dim=1)
        idcg = (gains.to(scores.dtype) * discount).sum(dim=1)
        ndcg = torch.where(idcg > dcg, dcg / idcg, idcg / dcg)
        return (1.0 - ndcg).mean()


@METHODS.register("rankmixup-mrl", description="RankMixup (MRL): CE on clean samples + margin ranking of max logits, mixed below clean.",
                  paper="Noh et al., ICCV 2023")
class RankMixupMRL(_RankMixupBase):
    """CE(clean) + weight * mean_i 1[r_i < 1] relu(max l~_i - max l_i + margin) (module docstring)."""

    kernel_kind = row_losses.MRL

    def __init__(self, num_classes: int, *, alpha: float = 2.0, weight: float = 0.1, margin: float = 2.0,
                 ignore_index: int = -100):
        super().__init__(num_classes, ignore_index)
        self.alpha, self.weight, self.margin = float(alpha), float(weight), float(margin)

    def ranking(self, clean: torch.Tensor, mixed: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        gap = mixed[0].amax(dim=1) - clean.amax(dim=1) + self.margin
        two_classes = relevance[:, 0] < 1.0
        return torch.where(two_classes, F.relu(gap), torch.zeros_like(gap)).mean()
