/* Fused softmax losses on CPU rows, value and gradient in one pass per row (calbench/methods/
 * row_losses.py; compiled and loaded by calbench/native.py; the row prologue, max and
 * exp, is softmax_rows.h).
 *
 * For each row i of x (n x k): M = max_j x_ij, e_ij = exp(x_ij - M), s = sum_j e_ij, p = e / s,
 * log p_iy = (x_iy - M) - log s (in double). Every loss writes grad = dL/dx and L to *loss (in
 * x's dtype), the row values summed in row order after the row loop, so that L does not depend
 * on the thread count. Each function returns 0, 1 if a target (or a partner) is out of range,
 * 2 if memory ran out.
 *
 * calbench_row_losses: a per-row loss L_i, L = sum_i L_i; params[] are the kind's scalars.
 * kind 0, two-target cross-entropy (mixup family): rows i < split: L_i = -w0 log p_iy;
 *   rows i >= split: L_i = -w1 (lam log p_iy + (1 - lam) log p_iz), z = y2[i - split].
 *   grad = W (p - a e_y - b e_z) with the row's weights. params = {split, w0, w1, lam}.
 * kind 1, focal / inverse focal with a per-bin gamma (AdaFocal): gamma_i = gammas[bin(p_iy)],
 *   bin = number of inner edges <= p_iy; base = 1 - p_y (= -expm1(log p_y)) if gamma >= 0 else
 *   1 + p_y, floored at 1e-6; L_i = -w base^|g| log p_y;  dL_i/dlog p_y = G, grad = G (e_y - p),
 *   G = -w (base^|g| + |g| base^(|g|-1) dbase log p_y) with dbase = -p_y or +p_y (0 where the
 *   floor holds strictly, as clamp_min's sub-gradient). params = {w, nbins}; arrays edges (nbins-1
 *   inner edges), gammas (nbins).
 * kind 2, dual focal: p_j = max {p_k : p_k < p_y} (0 if none; j the first such class); raw =
 *   1 - p_y + p_j, base = max(raw, 1e-6), weight = base^gamma, slope = gamma base^(gamma-1) if
 *   raw > 1e-6 else 0; L_i = -w weight log p_y; grad = w (A (e_y - p) + C (e_j - p)),
 *   A = -weight + log p_y slope p_y, C = -log p_y slope p_j. params = {w, gamma}.
 * kind 3, CE + ACLS (margin >= 0): d_ik = relu(M - margin - x_ik), over_i = relu(M - margin),
 *   t_i = ties at the max; L_i = -w log p_y + cn sum_k d_ik^2 + cp t_i over_i^2;
 *   grad = w (p - e_y) - 2 cn d + 2 cp over 1[x = M]. params = {w, margin, cn, cp}.
 *
 * calbench_batch_penalty: a base loss plus a penalty on batch means (two passes over the rows).
 * kind 4, MDCA on CE, label smoothing (alpha > 0) or focal loss (gamma > 0): L = (1/n) sum_i B_i
 *   + (beta/k) sum_k |m_k - f_k|, m = mean_i p_i, f the target frequencies, B_i = (1 - alpha)
 *   (-log p_iy) + (alpha/k) sum_k -log p_ik, or kind 1's focal row with one bin of this gamma;
 *   grad_i = u_i p_i - v_i e_y - alpha/(k n) + p_i (.) (g - <g, p_i>), g_k = beta sign(m_k - f_k)
 *   / (k n) (sign(0) = 0, as abs's sub-gradient); u = 1/n, v = (1 - alpha)/n, or u = v = -G_i/n.
 * kind 5, DCA: L = (1/n) sum_i -log p_iy + beta |mean_i c_i - mean_i 1[a_i = y_i]|, c_i = p_ia,
 *   a_i the first class of the row's largest e (torch.max's index); the accuracy is piecewise
 *   constant, so grad_i = (p_i - e_y)/n + (beta/n) sign(.) c_i (e_a - p_i).
 *
 * calbench_rank_mixup: RankMixup, rows [clean (n); copy 1 (n); ...; copy M (n)]; CE on the clean
 * rows; the relevance of copy m of sample i is 1 if y[perm[m][i]] = y[i], else max(lam_m, 1 - lam_m).
 * kind 6, M-NDCG: confidences c = max_k p (amax: ties at the max share its gradient evenly), the
 *   clean row first, then the copies by decreasing relevance (stable); DCG_i = sum_r c_r d_r,
 *   IDCG_i = sum_r rel_r d_r, d_r = 1/log2(r + 2); NDCG_i = DCG/IDCG if IDCG > DCG else IDCG/DCG;
 *   L = CE + (weight/n) sum_i (1 - NDCG_i). dc gives p_tied (1[x = M]/t - p) per row.
 * kind 7, MRL (M = 1): L = CE + (weight/n) sum_i 1[rel_i < 1] relu(M_mixed,i - M_clean,i + margin);
 *   the hinge's gradient goes to the tied maxima of both rows (1/t each, as amax), 0 at the kink.
 */
#include <stdlib.h>

#include "softmax_rows.h"

/* AdaFocal's dL/dlog p_y and the row loss (kind 1). */
static double focal_row(double lp, double w, const double *edges, const double *gammas, int64_t nbins,
                        double py_binned, double *row_loss) {
    int64_t b = 0;
    while (b < nbins - 1 && edges[b] <= py_binned) ++b;
    const double g = gammas[b], ag = fabs(g), py = exp(lp);
    const double raw = g >= 0 ? -expm1(lp) : 1.0 + py;
    const double base = raw < 1e-6 ? 1e-6 : raw;
    const double dbase = raw >= 1e-6 ? (g >= 0 ? -py : py) : 0.0;
    const double weight = ag == 0 ? 1.0 : pow(base, ag);
    const double slope = ag == 0 ? 0.0 : ag * pow(base, ag - 1.0);
    *row_loss = -w * weight * lp;
    return -w * (weight + slope * dbase * lp);
}

/* dual focal's weight and its two gradient coefficients (kind 2), from log p_y, p_y and p_j. */
static double dual_focal_row(double lp, double p_j, double w, double gamma, double *A, double *C) {
    const double raw = -expm1(lp) + p_j;
    const double base = raw < 1e-6 ? 1e-6 : raw;
    const double weight = pow(base, gamma);
    const double slope = raw > 1e-6 ? gamma * pow(base, gamma - 1.0) : 0.0;
    *A = w * (-weight + lp * slope * exp(lp));
    *C = w * (-lp * slope * p_j);
    return -w * weight * lp;
}

/* One row of kinds 0-3: gi holds e on entry, the gradient on exit; returns 1 for a bad partner. */
#define DEFINE_ROW(SUF, T)                                                                \
static int row_##SUF(const T *xi, T *gi, int64_t t, int64_t z, int64_t k, int kind, T mx, T s, \
                     T ties, const double *params, const double *edges, const double *gammas, \
                     int mixed, double *row_loss) {                                       \
    const double log_s = log((double)s);                                                  \
    const double lp = (double)(xi[t] - mx) - log_s;                                       \
    const T inv_s = (T)1 / s;                                                             \
    if (kind == 0) {                                                                      \
        double a = params[1], b = 0.0;                                                    \
        if (mixed) {                                                                      \
            if (z < 0 || z >= k) return 1;                                                \
            a = params[2] * params[3]; b = params[2] * (1.0 - params[3]);                 \
        }                                                                                 \
        *row_loss = -(a * lp + b * ((double)(xi[z] - mx) - log_s));                       \
        const T scale = (T)(a + b) * inv_s;                                               \
        _Pragma("omp simd")                                                               \
        for (int64_t j = 0; j < k; ++j) gi[j] *= scale;                                   \
        gi[t] -= (T)a; gi[z] -= (T)b;                                                     \
    } else if (kind == 1) {                                                               \
        const double G = focal_row(lp, params[0], edges, gammas, (int64_t)params[1],      \
                                   (double)(T)exp(lp), row_loss);                         \
        const T scale = (T)(-G) * inv_s;                                                  \
        _Pragma("omp simd")                                                               \
        for (int64_t j = 0; j < k; ++j) gi[j] *= scale;                                   \
        gi[t] += (T)G;                                                                    \
    } else if (kind == 2) {                                                               \
        const T p_y = gi[t] * inv_s;                                                      \
        T p_j = 0;                                                                        \
        _Pragma("omp simd reduction(max:p_j)")                                            \
        for (int64_t j = 0; j < k; ++j) {                                                 \
            const T p = gi[j] * inv_s, below = p < p_y ? p : (T)0;                        \
            gi[j] = p; p_j = below > p_j ? below : p_j;                                   \
        }                                                                                 \
        int64_t jj = k;  /* the first class holding p_j (torch.max's index); p_j < p_y */ \
        _Pragma("omp simd reduction(min:jj)")                                             \
        for (int64_t j = 0; j < k; ++j) jj = (gi[j] == p_j && j < jj) ? j : jj;           \
        if (p_j <= 0) jj = 0;                                                             \
        double A, C;                                                                      \
        *row_loss = dual_focal_row(lp, (double)p_j, params[0], params[1], &A, &C);        \
        const T scale = (T)(-(A + C));                                                    \
        _Pragma("omp simd")                                                               \
        for (int64_t j = 0; j < k; ++j) gi[j] *= scale;                                   \
        gi[t] += (T)A; gi[jj] += (T)C;                                                    \
    } else {                                                                              \
        const T w = (T)params[0], margin = (T)params[1];                                  \
        const T cn2 = (T)(2.0 * params[2]), scale = w * inv_s;                            \
        const T over = mx - margin > 0 ? mx - margin : (T)0;                              \
        T sq = 0;                                                                         \
        _Pragma("omp simd reduction(+:sq)")                                               \
        for (int64_t j = 0; j < k; ++j) {                                                 \
            T d = (mx - margin) - xi[j];                                                  \
            d = d > 0 ? d : (T)0;                                                         \
            gi[j] = gi[j] * scale - cn2 * d; sq += d * d;                                 \
        }                                                                                 \
        const T share = (T)(2.0 * params[3]) * over;                                      \
        if (over > 0)                                                                     \
            for (int64_t j = 0; j < k; ++j) if (xi[j] == mx) gi[j] += share;              \
        gi[t] -= w;                                                                       \
        *row_loss = -(double)w * lp + params[2] * (double)sq                              \
                    + params[3] * (double)ties * (double)over * (double)over;             \
    }                                                                                     \
    return 0;                                                                             \
}

#define DEFINE_ROW_LOSSES(SUF, T)                                                         \
int calbench_row_losses_##SUF(const T *x, const int64_t *y, const int64_t *y2, int64_t n, int64_t k, \
                              int kind, const double *params, const double *edges,        \
                              const double *gammas, T *grad, T *loss) {                   \
    double *row_loss = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));                 \
    if (row_loss == NULL) return 2;                                                       \
    const int64_t split = (int64_t)params[0];                                             \
    int64_t bad = 0;                                                                      \
    _Pragma("omp parallel for schedule(static) reduction(+:bad) if (n * k >= 32768)")     \
    for (int64_t i = 0; i < n; ++i) {                                                     \
        const T *xi = x + i * k;                                                          \
        T *gi = grad + i * k;                                                             \
        const int64_t t = y[i];                                                           \
        row_loss[i] = 0.0;                                                                \
        if (t < 0 || t >= k) { bad += 1; continue; }                                      \
        T ties;                                                                           \
        const T mx = row_max_##SUF(xi, k), s = row_exp_##SUF(xi, k, mx, gi, &ties);        \
        const int mixed = kind == 0 && i >= split;                                        \
        bad += row_##SUF(xi, gi, t, mixed ? y2[i - split] : t, k, kind, mx, s, ties, params, \
                         edges, gammas, mixed, &row_loss[i]);                             \
    }                                                                                     \
    double total = 0.0;                                                                   \
    for (int64_t i = 0; i < n; ++i) total += row_loss[i];                                 \
    free(row_loss);                                                                       \
    *loss = (T)total;                                                                     \
    return bad ? 1 : 0;                                                                   \
}

/* Pass 1 of the batch penalties: softmax rows into grad (p), row values, per-row statistics. */
#define DEFINE_BATCH_PENALTY(SUF, T)                                                      \
int calbench_batch_penalty_##SUF(const T *x, const int64_t *y, int64_t n, int64_t k, int kind, \
                                 double beta, double alpha, double gamma, T *grad, T *loss) { \
    double *stat = malloc((size_t)(3 * n + 2 * k) * sizeof(double));                     \
    int64_t *arg = malloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t));                     \
    T *sg = malloc((size_t)k * sizeof(T));                                                \
    if (stat == NULL || arg == NULL || sg == NULL) { free(stat); free(arg); free(sg); return 2; } \
    double *row_loss = stat, *conf = stat + n, *u = stat + 2 * n, *col = stat + 3 * n, *freq = col + k; \
    int64_t bad = 0;                                                                      \
    _Pragma("omp parallel for schedule(static) reduction(+:bad) if (n * k >= 32768)")     \
    for (int64_t i = 0; i < n; ++i) {                                                     \
        const T *xi = x + i * k;                                                          \
        T *gi = grad + i * k;                                                             \
        const int64_t t = y[i];                                                           \
        row_loss[i] = 0.0; conf[i] = 0.0; arg[i] = 0;                                     \
        if (t < 0 || t >= k) { bad += 1; continue; }                                      \
        T ties, sum_x = 0;                                                                \
        const T mx = row_max_##SUF(xi, k), s = row_exp_##SUF(xi, k, mx, gi, &ties);        \
        const T inv_s = (T)1 / s;                                                         \
        int64_t a = k;                                                                    \
        _Pragma("omp simd reduction(min:a) reduction(+:sum_x)")                           \
        for (int64_t j = 0; j < k; ++j) {                                                 \
            a = (gi[j] == (T)1 && j < a) ? j : a;                                         \
            gi[j] *= inv_s; sum_x += xi[j] - mx;                                          \
        }                                                                                 \
        const double log_s = log((double)s), lp = (double)(xi[t] - mx) - log_s;          \
        const double uniform = alpha > 0 ? -((double)sum_x / (double)k - log_s) : 0.0;    \
        row_loss[i] = -(1.0 - alpha) * lp + alpha * uniform;                              \
        u[i] = 1.0 / (double)n;                                                           \
        if (gamma > 0)                                                                    \
            u[i] = -focal_row(lp, 1.0, NULL, &gamma, 1, 0.0, &row_loss[i]) / (double)n;    \
        arg[i] = a < k ? a : 0;                                                           \
        conf[i] = (double)gi[arg[i]];                                                     \
    }                                                                                     \
    if (bad) { free(stat); free(arg); free(sg); return 1; }                               \
    double total = 0.0;                                                                   \
    for (int64_t i = 0; i < n; ++i) total += row_loss[i];                                 \
    total /= (double)n;                                                                   \
    total += kind == 4 ? mdca_finish_##SUF(grad, y, n, k, beta, alpha, gamma, u, col, freq, sg) \
                       : dca_finish_##SUF(grad, y, n, k, beta, conf, arg);                \
    free(stat); free(arg); free(sg);                                                      \
    *loss = (T)total;                                                                     \
    return 0;                                                                             \
}

/* Pass 2 of MDCA: the column means, the penalty, and the gradient written over p. */
#define DEFINE_MDCA_FINISH(SUF, T)                                                        \
static double mdca_finish_##SUF(T *grad, const int64_t *y, int64_t n, int64_t k, double beta, \
                                double alpha, double gamma, const double *u, double *col, \
                                double *freq, T *sg) {                                    \
    for (int64_t j = 0; j < k; ++j) { col[j] = 0.0; freq[j] = 0.0; }                      \
    for (int64_t i = 0; i < n; ++i) {                                                     \
        const T *gi = grad + i * k;                                                       \
        _Pragma("omp simd")                                                               \
        for (int64_t j = 0; j < k; ++j) col[j] += (double)gi[j];                          \
        freq[y[i]] += 1.0;                                                                \
    }                                                                                     \
    double penalty = 0.0;                                                                 \
    for (int64_t j = 0; j < k; ++j) {                                                     \
        const double d = col[j] / (double)n - freq[j] / (double)n;                        \
        penalty += fabs(d);                                                               \
        sg[j] = (T)((d > 0 ? beta : d < 0 ? -beta : 0.0) / ((double)k * (double)n));      \
    }                                                                                     \
    const T smooth = (T)(alpha / ((double)k * (double)n));                                \
    _Pragma("omp parallel for schedule(static) if (n * k >= 32768)")                      \
    for (int64_t i = 0; i < n; ++i) {                                                     \
        T *gi = grad + i * k;                                                             \
        const T ui = (T)u[i], hit = (T)(gamma > 0 ? u[i] : (1.0 - alpha) / (double)n);    \
        T dot = 0;                                                                        \
        _Pragma("omp simd reduction(+:dot)")                                              \
        for (int64_t j = 0; j < k; ++j) dot += sg[j] * gi[j];                             \
        _Pragma("omp simd")                                                               \
        for (int64_t j = 0; j < k; ++j) gi[j] = gi[j] * (ui + sg[j] - dot) - smooth;      \
        gi[y[i]] -= hit;                                                                  \
    }                                                                                     \
    return beta * penalty / (double)k;                                                    \
}

/* Pass 2 of DCA: mean confidence and accuracy, the penalty, the gradient written over p. */
#define DEFINE_DCA_FINISH(SUF, T)                                                         \
static double dca_finish_##SUF(T *grad, const int64_t *y, int64_t n, int64_t k, double beta, \
                               const double *conf, const int64_t *arg) {                  \
    double mean_conf = 0.0, hits = 0.0;                                                   \
    for (int64_t i = 0; i < n; ++i) { mean_conf += conf[i]; hits += arg[i] == y[i]; }     \
    const double d = mean_conf / (double)n - hits / (double)n;                            \
    const double sg = (d > 0 ? beta : d < 0 ? -beta : 0.0) / (double)n;                   \
    const T inv_n = (T)(1.0 / (double)n);                                                 \
    _Pragma("omp parallel for schedule(static) if (n * k >= 32768)")                      \
    for (int64_t i = 0; i < n; ++i) {                                                     \
        T *gi = grad + i * k;                                                             \
        const T c = (T)(sg * conf[i]), scale = inv_n - c;                                 \
        _Pragma("omp simd")                                                               \
        for (int64_t j = 0; j < k; ++j) gi[j] *= scale;                                   \
        gi[arg[i]] += c; gi[y[i]] -= inv_n;                                               \
    }                                                                                     \
    return beta * fabs(d);                                                                \
}

/* RankMixup's ranking term for sample i: its loss, and per row r of the sample the coefficients
 * of p (a) and of the tied maxima (b) in the gradient (kinds 6 and 7; the header above). */
#define DEFINE_RANKING(SUF, T)                                                            \
static double ranking_##SUF(int64_t i, int64_t n, int64_t copies, int kind, const int64_t *y, \
                            const int64_t *perm, const double *lam, const T *mx, const T *inv_s, \
                            const T *ties, double weight, double margin, double *a, double *b, \
                            double *rel, int64_t *rank) {                                 \
    const double c = weight / (double)n;                                                  \
    for (int64_t m = 0; m < copies; ++m) {                                                \
        const double top = lam[m] > 1.0 - lam[m] ? lam[m] : 1.0 - lam[m];                 \
        rel[m] = y[perm[m * n + i]] == y[i] ? 1.0 : top;                                  \
    }                                                                                     \
    if (kind == 7) {                                                                      \
        const int64_t r = n + i;                                                          \
        const T gap = (mx[r] - mx[i]) + (T)margin;                                        \
        if (!(rel[0] < 1.0 && gap > 0)) return 0.0;                                       \
        b[i] -= c / (double)ties[i]; b[r] += c / (double)ties[r];                         \
        return (double)gap;                                                               \
    }                                                                                     \
    for (int64_t m = 0; m < copies; ++m) {                                                \
        rank[m] = 0;                                                                      \
        for (int64_t q = 0; q < copies; ++q)                                              \
            rank[m] += rel[q] > rel[m] || (rel[q] == rel[m] && q < m);                    \
    }                                                                                     \
    double dcg = (double)inv_s[i], idcg = 1.0;                                            \
    for (int64_t m = 0; m < copies; ++m) {                                                \
        const double d = 1.0 / log2((double)rank[m] + 3.0);                               \
        dcg += (double)inv_s[(m + 1) * n + i] * d; idcg += rel[m] * d;                    \
    }                                                                                     \
    const int below = idcg > dcg;                                                         \
    const double ndcg = below ? dcg / idcg : idcg / dcg;                                  \
    const double slope = below ? -c / idcg : c * idcg / (dcg * dcg);  /* dL/dDCG */       \
    for (int64_t m = -1; m < copies; ++m) {                                               \
        const int64_t r = (m + 1) * n + i;                                                \
        const double d = m < 0 ? 1.0 : 1.0 / log2((double)rank[m] + 3.0);                 \
        const double cc = slope * d * (double)inv_s[r];  /* times dc/dx = c (tied/t - p) */ \
        a[r] -= cc; b[r] += cc / (double)ties[r];                                         \
    }                                                                                     \
    return 1.0 - ndcg;                                                                    \
}

#define DEFINE_RANK_MIXUP(SUF, T)                                                         \
int calbench_rank_mixup_##SUF(const T *x, const int64_t *y, const int64_t *perm, const double *lam, \
                              int64_t n, int64_t copies, int64_t k, int kind, double weight, \
                              double margin, T *grad, T *loss) {                          \
    const int64_t rows = n * (copies + 1);                                                \
    double *work = malloc((size_t)(3 * rows + 2 * copies + 1) * sizeof(double));         \
    T *stat = malloc((size_t)(3 * rows) * sizeof(T));                                     \
    int64_t *rank = malloc((size_t)(copies + 1) * sizeof(int64_t));                       \
    if (work == NULL || stat == NULL || rank == NULL) { free(work); free(stat); free(rank); return 2; } \
    double *a = work, *b = work + rows, *row_loss = work + 2 * rows, *rel = work + 3 * rows; \
    T *mx = stat, *inv_s = stat + rows, *ties = stat + 2 * rows;                          \
    int64_t bad = 0;                                                                      \
    for (int64_t q = 0; q < copies * n; ++q) bad += perm[q] < 0 || perm[q] >= n;          \
    for (int64_t i = 0; i < n; ++i) bad += y[i] < 0 || y[i] >= k;                         \
    if (bad) { free(work); free(stat); free(rank); return 1; }                            \
    _Pragma("omp parallel for schedule(static) if (rows * k >= 32768)")                   \
    for (int64_t r = 0; r < rows; ++r) {                                                  \
        const T *xr = x + r * k;                                                          \
        mx[r] = row_max_##SUF(xr, k);                                                     \
        const T s = row_exp_##SUF(xr, k, mx[r], grad + r * k, &ties[r]);                   \
        inv_s[r] = (T)1 / s;                                                              \
        a[r] = r < n ? 1.0 / (double)n : 0.0; b[r] = 0.0;                                 \
        row_loss[r] = r < n ? log((double)s) - (double)(xr[y[r]] - mx[r]) : 0.0;          \
    }                                                                                     \
    double ce = 0.0, rank_total = 0.0;                                                    \
    for (int64_t i = 0; i < n; ++i) {                                                     \
        ce += row_loss[i];                                                                \
        rank_total += ranking_##SUF(i, n, copies, kind, y, perm, lam, mx, inv_s, ties, weight, \
                                    margin, a, b, rel, rank);                             \
    }                                                                                     \
    _Pragma("omp parallel for schedule(static) if (rows * k >= 32768)")                   \
    for (int64_t r = 0; r < rows; ++r) {                                                  \
        const T *xr = x + r * k;                                                          \
        T *gr = grad + r * k;                                                             \
        const T scale = (T)a[r] * inv_s[r], share = (T)b[r], top = mx[r];                 \
        _Pragma("omp simd")                                                               \
        for (int64_t j = 0; j < k; ++j) gr[j] = gr[j] * scale + (xr[j] == top ? share : (T)0); \
        if (r < n) gr[y[r]] -= (T)(1.0 / (double)n);                                      \
    }                                                                                     \
    free(work); free(stat); free(rank);                                                   \
    *loss = (T)(ce / (double)n + weight / (double)n * rank_total);                        \
    return 0;                                                                             \
}

DEFINE_ROW(f32, float)
DEFINE_ROW(f64, double)
DEFINE_ROW_LOSSES(f32, float)
DEFINE_ROW_LOSSES(f64, double)
DEFINE_MDCA_FINISH(f32, float)
DEFINE_MDCA_FINISH(f64, double)
DEFINE_DCA_FINISH(f32, float)
DEFINE_DCA_FINISH(f64, double)
DEFINE_BATCH_PENALTY(f32, float)
DEFINE_BATCH_PENALTY(f64, double)
DEFINE_RANKING(f32, float)
DEFINE_RANKING(f64, double)
DEFINE_RANK_MIXUP(f32, float)
DEFINE_RANK_MIXUP(f64, double)
