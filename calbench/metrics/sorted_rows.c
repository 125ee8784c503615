/* Bootstrap kernels of the confidence-ordered metrics (wrappers and the NumPy paths they equal:
 * calbench/metrics/sorted_rows.py; compiled and loaded by calbench/native.py).
 *
 * Every function takes a (b, n) C-order matrix W of resample counts whose columns follow the
 * samples sorted by (r, then c) (the bootstrap's adaptive order), and walks each row ONCE (the
 * sweep: once, then searches), carrying the running sums the NumPy paths take with cumsum over the
 * whole (b, n) block: count, correct and confidence so far. The sums are formed in the same order
 * and with the same products as NumPy's cumsum / reduceat of W * c, W * r, W * (r - c) (sequential
 * adds; -ffp-contract=off keeps every rounding), so counts and error counts are exact integers and
 * the float sums agree with the NumPy paths to rounding. No allocation except the sweep's scratch.
 *
 * run_end[i] = 1 where sample i is the last of a run of equal confidence r.
 * Group ends of G equal-mass groups of an integer total T: e_g = (T / G) g + min(g, T % G).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define RARELY(x) __builtin_expect(!!(x), 0)
#else
#define RARELY(x) (x)
#endif
#define MAX_COVERAGES 8

static int64_t group_end(int64_t total, int64_t groups, int64_t g)
{
    int64_t base = total / groups, extra = total % groups;
    return base * g + (g < extra ? g : extra);
}

/* W[row, order_of[idx[row, j]]] counted over j: the (b, n) count matrix of resampled indices, its
 * columns renumbered by order_of (a sample's place in the sorted order). Returns -1 for an index
 * outside [0, n). */
int calbench_counts(int64_t b, int64_t n, const int64_t *idx, const int64_t *order_of, double *W)
{
    for (int64_t row = 0; row < b; row++) {
        double *w = W + row * n;
        const int64_t *at = idx + row * n;
        memset(w, 0, sizeof(double) * (size_t)n);
        for (int64_t j = 0; j < n; j++) {
            if ((uint64_t)at[j] >= (uint64_t)n)
                return -1;
            w[order_of[at[j]]] += 1.0;
        }
    }
    return 0;
}

/* Per row of total[row] = sum w: per-bin (count, sum c, sum r), bin m = samples
 * [bin_start[m], bin_start[m+1]), as differences of the running sums at the bin ends; the adaptive
 * ECE over `groups` equal-mass groups (group sums with the straddling sample split); KS = max over
 * run ends of |sum w (r - c)| / total. One walk per row; bins_out is (b, 3, M). */
void calbench_conf_rows(int64_t b, int64_t n, const double *W, const double *r, const double *c,
                        const uint8_t *run_end, int64_t M, const int64_t *bin_start, int64_t groups,
                        const double *totals, double *bins_out, double *aece_out, double *ks_out)
{
    for (int64_t row = 0; row < b; row++) {
        const double *w = W + row * n;
        double *out = bins_out + row * 3 * M;
        double cw = 0.0, cc = 0.0, cr = 0.0, d = 0.0, best = 0.0, gap = 0.0;
        double prev_c = 0.0, prev_r = 0.0, bin_w = 0.0, bin_c = 0.0, bin_r = 0.0;
        int64_t total = (int64_t)llround(totals[row]), g = 1, m = 0;
        double end = (double)group_end(total, groups, g);
        while (m < M && bin_start[m + 1] == 0)
            out[m] = out[M + m] = out[2 * M + m] = 0.0, m++;
        for (int64_t i = 0; i < n; i++) {
            cw += w[i];
            cc += w[i] * c[i];
            cr += w[i] * r[i];
            d += w[i] * (r[i] - c[i]);
            if (run_end[i] && fabs(d) > best)
                best = fabs(d);
            while (g <= groups && cw >= end) {
                double excess = cw - end, fc = cc - excess * c[i], fr = cr - excess * r[i];
                gap += fabs((fc - prev_c) - (fr - prev_r));
                prev_c = fc;
                prev_r = fr;
                g++;
                if (g <= groups)
                    end = (double)group_end(total, groups, g);
            }
            while (m < M && bin_start[m + 1] == i + 1) {  /* bin m ends at sample i */
                out[m] = cw - bin_w;
                out[M + m] = cc - bin_c;
                out[2 * M + m] = cr - bin_r;
                bin_w = cw, bin_c = cc, bin_r = cr, m++;
            }
        }
        aece_out[row] = gap / cw;
        ks_out[row] = best / cw;
    }
}

/* Per row of total N = total[row] and E errors, the samples accepted in DECREASING confidence,
 * runs of equal r at once (expected value over the order inside a run, e linear in it):
 * aurc = (1/N) sum over runs of (H(K) - H(K0)) (E0 - K0 s) + s m (m the run's count, s = errors / m,
 * K0 / E0 the count / errors accepted before it, K = K0 + m, H the harmonic table),
 * augrc = sum ((2 E - e) / 2N) m / N (E the errors accepted through the run, errors[row] in all),
 * and e(k) / k at each row's k[row * ncov + q] (the run
 * holding the k-th sample). The walk goes up in confidence: what is accepted before a run is what
 * lies above it, N minus the count so far. A run drawn zero times adds nothing to any of them
 * (K = K0 and m = 0). slope[i] (at run ends) is the run's s when all its samples share one
 * correctness (1 - c, whatever the counts), -1 for a mixed run (s = e / m then). The k-th sample
 * from the top lies in the run where the count from the bottom first exceeds t = N - k: only the
 * smallest t not yet passed is compared per run (at most MAX_COVERAGES coverages). */
void calbench_selective_rows(int64_t b, int64_t n, const double *W, const double *c,
                             const uint8_t *run_end, const double *slope, const double *H,
                             int64_t ncov, const double *k_at,
                             const double *totals, const double *errors, double *aurc_out,
                             double *augrc_out, double *risk_out)
{
    if (ncov > MAX_COVERAGES)
        return;
    for (int64_t row = 0; row < b; row++) {
        const double *w = W + row * n;
        double N = totals[row], E = errors[row], scale = 1.0 / (2.0 * N * N);
        double below = 0.0, err_below = 0.0, m = 0.0, e = 0.0, aurc = 0.0, augrc = 0.0;
        const double *k = k_at + row * ncov;
        double *risk = risk_out + row * ncov, t[MAX_COVERAGES];
        for (int64_t q = 0; q < ncov; q++) {
            risk[q] = NAN;
            t[q] = N - k[q];  /* the k-th sample from the top is the (N - k + 1)-th from the bottom */
        }
        double next_t = INFINITY;  /* the smallest t[q] not yet passed */
        for (int64_t q = 0; q < ncov; q++)
            if (t[q] < next_t)
                next_t = t[q];
        for (int64_t i = 0; i < n; i++) {
            m += w[i];
            e += w[i] * (1.0 - c[i]);
            if (!run_end[i])
                continue;
            double before = below;
            below += m;
            err_below += e;
            double K = N - before, K0 = N - below, E0 = E - err_below;
            double s = slope[i];
            if (RARELY(s < 0.0))
                s = m > 0.0 ? e / m : 0.0;
            aurc += (H[(int64_t)(K + 0.5)] - H[(int64_t)(K0 + 0.5)]) * (E0 - K0 * s) + s * m;
            augrc += (2.0 * E0 + e) * m * scale;  /* ((2 E - e) / 2N) m / N, E = E0 + e */
            if (RARELY(below > next_t)) {
                next_t = INFINITY;
                for (int64_t q = 0; q < ncov; q++) {
                    if (before <= t[q] && t[q] < below)
                        risk[q] = (E0 + (k[q] - K0) * e / m) / k[q];
                    if (t[q] >= below && t[q] < next_t)
                        next_t = t[q];
                }
            }
            m = e = 0.0;
        }
        aurc_out[row] = aurc / N;
        augrc_out[row] = augrc;
    }
}

/* Per row: sum_ij A_i A_j exp(-|r_i - r_j| / width), A_i = w_i a_i, from up_i = e^{r_i / w} and
 * down_i = e^{-r_i / w} along the sorted r: 2 sum_i A_i down_i P_i - sum_i A_i^2 up_i down_i with
 * P_i = sum_{j <= i} A_j up_j (the pairs j > i are the pairs j < i seen from the other side). */
void calbench_mmce_rows(int64_t b, int64_t n, const double *W, const double *a, const double *up,
                        const double *down, double *out)
{
    for (int64_t row = 0; row < b; row++) {
        const double *w = W + row * n;
        double P = 0.0, cross = 0.0, self = 0.0;
        for (int64_t i = 0; i < n; i++) {
            double A = w[i] * a[i];
            P += A * up[i];
            cross += A * down[i] * P;
            self += A * A * (up[i] * down[i]);
        }
        out[row] = 2.0 * cross - self;
    }
}

/* First index j in [0, n) with cw[j] >= x (n - 1 when none). */
static int64_t lower_bound(const double *cw, int64_t n, double x)
{
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (cw[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n ? lo : n - 1;
}

/* The L1 gap sum of `groups` equal-mass groups of one row from its running sums; 0 (and *ok = 0)
 * when the group accuracies are not non-decreasing within tol. */
static double sweep_groups(int64_t n, const double *cw, const double *cc, const double *cr,
                           const double *r, const double *c, int64_t total, int64_t groups, double tol,
                           int *ok)
{
    double prev_c = 0.0, prev_r = 0.0, prev_end = 0.0, prev_acc = 0.0, gap = 0.0;
    *ok = 1;
    for (int64_t g = 1; g <= groups; g++) {
        double end = (double)group_end(total, groups, g);
        int64_t j = lower_bound(cw, n, end);
        double excess = cw[j] - end, fc = cc[j] - excess * c[j], fr = cr[j] - excess * r[j];
        double acc = (fc - prev_c) / (end - prev_end);
        if (g > 1 && acc - prev_acc < -tol) {
            *ok = 0;
            return 0.0;
        }
        gap += fabs((fc - prev_c) - (fr - prev_r));
        prev_c = fc;
        prev_r = fr;
        prev_end = end;
        prev_acc = acc;
    }
    return gap;
}

/* ECE_sweep (Roelofs et al. 2022) of each row: the largest number of equal-mass groups b (2 <= b
 * <= total) such that every b' <= b keeps the group accuracies non-decreasing, its L1 gap / total;
 * b = 1 when b = 2 already fails. A row whose drawn samples all share one correctness is monotone
 * for every b: its value is that of b = total, sum w |c - r| / total. Returns -1 when out of memory. */
int calbench_sweep_rows(int64_t b, int64_t n, const double *W, const double *r, const double *c,
                        double tol, double *out)
{
    double *buf = malloc(sizeof(double) * 3 * (size_t)(n > 0 ? n : 1));
    if (!buf)
        return -1;
    double *cw = buf, *cc = buf + n, *cr = buf + 2 * n;
    for (int64_t row = 0; row < b; row++) {
        const double *w = W + row * n;
        double sw = 0.0, sc = 0.0, sr = 0.0, sabs = 0.0;
        for (int64_t i = 0; i < n; i++) {
            sw += w[i];
            sc += w[i] * c[i];
            sr += w[i] * r[i];
            sabs += w[i] * fabs(c[i] - r[i]);
            cw[i] = sw;
            cc[i] = sc;
            cr[i] = sr;
        }
        int64_t total = (int64_t)llround(sw);
        double norm = sw > 1.0 ? sw : 1.0;
        if (sc == 0.0 || sc == sw) {
            out[row] = sabs / norm;
            continue;
        }
        int ok = 1;
        double best = sweep_groups(n, cw, cc, cr, r, c, total, 1, tol, &ok);
        for (int64_t groups = 2; groups <= total; groups++) {
            double gap = sweep_groups(n, cw, cc, cr, r, c, total, groups, tol, &ok);
            if (!ok)
                break;
            best = gap;
        }
        out[row] = best / norm;
    }
    free(buf);
    return 0;
}

/* The point estimates of the same metrics from the packed keys sorted ascending (stats.sorted_key:
 * (bits of r) << 1 | c, every count 1), in one walk: out = [aece, ks, aurc, augrc, risk at each
 * k_at[q]]. aece sums each of `groups` equal-mass groups directly (the groups end at integer
 * positions); H(K) - H(K0) is summed term by term, 1/j for j = K0 + 1 .. K (no n-long table). */
void calbench_key_walk(int64_t n, const uint64_t *key, double errors, int64_t groups, int64_t ncov,
                       const double *k_at, double *out)
{
    double N = (double)n, E = errors, scale = 1.0 / (2.0 * N * N);
    double d = 0.0, best = 0.0, gap = 0.0, group_c = 0.0, group_r = 0.0;
    double below = 0.0, err_below = 0.0, m = 0.0, e = 0.0, aurc = 0.0, augrc = 0.0;
    int64_t g = 1, end = group_end(n, groups, 1);
    for (int64_t q = 0; q < ncov; q++)
        out[4 + q] = NAN;
    for (int64_t i = 0; i < n; i++) {
        uint64_t bits = key[i] >> 1;
        double r, c = (double)(key[i] & 1u);
        memcpy(&r, &bits, sizeof r);
        d += r - c;
        group_c += c;
        group_r += r;
        while (g <= groups && i + 1 == end) {
            gap += fabs(group_c - group_r);
            group_c = group_r = 0.0;
            g++;
            if (g <= groups)
                end = group_end(n, groups, g);
        }
        m += 1.0;
        e += 1.0 - c;
        if (i + 1 < n && (key[i + 1] >> 1) == bits)
            continue;
        if (fabs(d) > best)
            best = fabs(d);
        double before = below;
        below += m;
        err_below += e;
        double K = N - before, K0 = N - below, E0 = E - err_below, s = m == 1.0 ? e : e / m, h = 0.0;
        for (double j = K0 + 1.0; j <= K; j += 1.0)
            h += 1.0 / j;
        aurc += h * (E0 - K0 * s) + s * m;
        augrc += (2.0 * E0 + e) * m * scale;
        for (int64_t q = 0; q < ncov; q++)
            if (before <= N - k_at[q] && N - k_at[q] < below)
                out[4 + q] = (E0 + (k_at[q] - K0) * e / m) / k_at[q];
        m = e = 0.0;
    }
    out[0] = gap / N;
    out[1] = best / N;
    out[2] = aurc / N;
    out[3] = augrc;
}

/* cece / sce under the bootstrap (calibration.py): per count row, the resampled count of each label
 * (label_out, (b, K)) and the weighted sums of the few entries above the first bin, entry e of
 * sample hi_sample[e] adding w * hi_value[e] to cell hi_cell[e] (hi_out, (b, cells)); the entries
 * come sorted by sample, so each cell sums in the order of the sparse product it replaces. */
void calbench_classwise_rows(int64_t b, int64_t n, const double *W, const int64_t *labels, int64_t K,
                             int64_t cells, int64_t nhi, const int64_t *hi_sample, const int64_t *hi_cell,
                             const double *hi_value, double *label_out, double *hi_out)
{
    for (int64_t row = 0; row < b; row++) {
        const double *w = W + row * n;
        double *lab = label_out + row * K, *hi = hi_out + row * cells;
        memset(lab, 0, sizeof(double) * (size_t)K);
        memset(hi, 0, sizeof(double) * (size_t)cells);
        for (int64_t i = 0; i < n; i++)
            lab[labels[i]] += w[i];
        for (int64_t e = 0; e < nhi; e++)
            hi[hi_cell[e]] += w[hi_sample[e]] * hi_value[e];
    }
}

/* Rows of the (n, width) matrix data permuted in place, new row i = old row order[i] (the
 * bootstrap's sort of its (n, K) probabilities without a second (n, K) array): each cycle of the
 * permutation is followed once, its first row held aside. Returns -1 when order is not a
 * permutation of 0 .. n - 1 (data is then partly permuted) or memory runs out. */
int calbench_permute_rows(int64_t n, int64_t width, double *data, const int64_t *order)
{
    size_t row = sizeof(double) * (size_t)width;
    uint8_t *done = calloc((size_t)(n > 0 ? n : 1), 1);
    double *held = malloc(row > 0 ? row : 1);
    int rc = 0;
    if (!done || !held)
        rc = -1;
    for (int64_t i = 0; i < n && rc == 0; i++)
        if (order[i] < 0 || order[i] >= n)
            rc = -1;
    for (int64_t start = 0; start < n && rc == 0; start++) {
        if (done[start])
            continue;
        memcpy(held, data + start * width, row);
        int64_t j = start;
        for (;;) {
            int64_t k = order[j];
            done[j] = 1;
            if (k == start) {
                memcpy(data + j * width, held, row);
                break;
            }
            if (done[k]) {
                rc = -1;
                break;
            }
            memcpy(data + j * width, data + k * width, row);
            j = k;
        }
    }
    free(done);
    free(held);
    return rc;
}
