/* One block of the single pass over the scores (calbench/metrics/stats.py, _classwise_and_brier;
 * compiled and loaded by calbench/native.py): the class-wise bin sums and the Brier score of a
 * (rows, K) block of float64 probabilities in one walk over its entries, instead of a boolean mask,
 * a gather, a bin index and a bincount over the entries above the first bin.
 *
 * For each entry v = p_ik - 1[y_i = k]: brier[i] = sum_k v^2 (in column order, as einsum's row
 * dot); where sums is given, every entry adds v to sums[k M + bin(p_ik)], the first bin included
 * (the NumPy path derives the first bin from the class totals instead, to bin only the few entries
 * above it; here binning every entry is cheaper than the unpredictable branch that would skip
 * them). bin() is binning.bin_index: ceil(p M) - 1 clipped to [0, M - 1] and corrected by one
 * step against the float edges (lo, hi]. */
#include <math.h>
#include <stdint.h>

static int64_t bin_of(double x, int64_t M, const double *edges)
{
    int64_t idx = (int64_t)ceil(x * (double)M) - 1;
    if (idx < 0)
        idx = 0;
    if (idx > M - 1)
        idx = M - 1;
    if (x <= edges[idx] && idx > 0)
        idx -= 1;
    if (x > edges[idx + 1] && idx < M - 1)
        idx += 1;
    return idx;
}

void calbench_classwise_block(int64_t rows, int64_t K, int64_t M, const double *edges, const double *p,
                              const int64_t *y, double *sums, double *brier)
{
    for (int64_t i = 0; i < rows; i++) {
        const double *row = p + i * K;
        double b = 0.0;
        for (int64_t k = 0; k < K; k++) {
            double x = row[k], v = k == y[i] ? x - 1.0 : x;
            b += v * v;
            if (sums)
                sums[k * M + bin_of(x, M, edges)] += v;
        }
        brier[i] = b;
    }
}
