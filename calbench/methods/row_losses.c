/* Fused softmax losses on CPU rows, value and gradient in one pass per row (calbench/methods/
 * row_losses.py; compiled and loaded by calbench/methods/native.py).
 *
 * For each row i of x (n x k): M = max_j x_ij, e_ij = exp(x_ij - M), s = sum_j e_ij, p = e / s,
 * log p_iy = (x_iy - M) - log s (in double). Every kind below has a per-row loss L_i and writes
 * grad = dL/dx, L = sum_i L_i (summed in row order after the row loop, so the value does not
 * depend on the thread count). params[] are the kind's scalars.
 *
 * kind 0, two-target cross-entropy (mixup family): rows i < split: L_i = -w0 log p_iy;
 *   rows i >= split: L_i = -w1 (lam log p_iy + (1 - lam) log p_iz), z = y2[i - split].
 *   grad = W (p - a e_y - b e_z) with the row's weights. params = {split, w0, w1, lam}.
 * kind 1, focal / inverse focal with a per-bin gamma (AdaFocal): gamma_i = gammas[bin(p_iy)],
 *   bin = number of inner edges <= p_iy; base = 1 - p_y (= -expm1(log p_y)) if gamma >= 0 else
 *   1 + p_y, floored at 1e-6; L_i = -w base^|g| log p_y;  dL_i/dlog p_y = G, grad = G (e_y - p),
 *   G = -w (base^|g| + |g| base^(|g|-1) dbase log p_y) with dbase = -p_y or +p_y (0 where the
 *   floor holds strictly, as clamp_min's sub-gradient). params = {w, nbins}; arrays edges (nbins-1
 *   inner edges), gammas (nbins).
 * kind 2, dual focal: p_j = max {p_k : p_k < p_y} (0 if none); raw = 1 - p_y + p_j, base =
 *   max(raw, 1e-6), weight = base^gamma, slope = gamma base^(gamma-1) if raw > 1e-6 else 0;
 *   L_i = -w weight log p_y; grad = w (A (e_y - p) + C (e_j - p)), A = -weight + log p_y slope p_y,
 *   C = -log p_y slope p_j. params = {w, gamma}.
 * kind 3, CE + ACLS (margin >= 0): d_ik = relu(M - margin - x_ik), over_i = relu(M - margin),
 *   t_i = ties at the max; L_i = -w log p_y + cn sum_k d_ik^2 + cp t_i over_i^2;
 *   grad = w (p - e_y) - 2 cn d + 2 cp over 1[x = M]. params = {w, margin, cn, cp}.
 * Returns 0, 1 if a target is out of range, 2 if memory ran out.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static inline float exp_f32(float v) {
    /* Called with v <= 0 (Cody-Waite reduction, Cephes polynomial, at most 1 ulp over [-87, 0]). */
    float t = v < -87.3f ? -87.3f : v;
    float nf = (float)(int32_t)(t * 1.44269504088896341f - 0.5f);
    float r = t - nf * 0.693359375f + nf * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { float f; int32_t i; } scale;
    scale.i = ((int32_t)nf + 127) << 23;
    return v < -87.3f ? 0.0f : p * scale.f;
}

static inline double exp_f64(double v) { return exp(v); }

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

#define DEFINE_KERNEL(NAME, T, EXP)                                                      \
int NAME(const T *x, const int64_t *y, const int64_t *y2, int64_t n, int64_t k, int kind,  \
         const double *params, const double *edges, const double *gammas, T *grad, double *loss) { \
    double *row_loss = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));                 \
    if (row_loss == NULL) return 2;                                                     \
    int64_t bad = 0;                                                                    \
    _Pragma("omp parallel for schedule(static) reduction(+:bad) if (n * k >= 8192)")    \
    for (int64_t i = 0; i < n; ++i) {                                                   \
        const T *xi = x + i * k;                                                        \
        T *gi = grad + i * k;                                                           \
        const int64_t t = y[i];                                                         \
        if (t < 0 || t >= k) { bad += 1; row_loss[i] = 0.0; continue; }                 \
        T mx = xi[0];                                                                   \
        _Pragma("omp simd reduction(max:mx)")                                           \
        for (int64_t j = 0; j < k; ++j) mx = xi[j] > mx ? xi[j] : mx;                   \
        T s = 0, ties = 0;                                                              \
        _Pragma("omp simd reduction(+:s, ties)")                                        \
        for (int64_t j = 0; j < k; ++j) {                                               \
            T e = EXP(xi[j] - mx);                                                      \
            gi[j] = e; s += e; ties += xi[j] == mx ? (T)1 : (T)0;                       \
        }                                                                               \
        const double log_s = log((double)s);                                            \
        const double lp = (double)(xi[t] - mx) - log_s;                                 \
        const T inv_s = (T)1 / s;                                                       \
        if (kind == 0) {                                                                \
            const int64_t split = (int64_t)params[0];                                   \
            int64_t z = t;                                                              \
            double a = params[1], b = 0.0;                                              \
            if (i >= split) {                                                           \
                z = y2[i - split];                                                      \
                if (z < 0 || z >= k) { bad += 1; row_loss[i] = 0.0; continue; }         \
                a = params[2] * params[3]; b = params[2] * (1.0 - params[3]);           \
            }                                                                           \
            const double lz = (double)(xi[z] - mx) - log_s;                             \
            row_loss[i] = -(a * lp + b * lz);                                           \
            const T scale = (T)(a + b) * inv_s;                                         \
            _Pragma("omp simd")                                                         \
            for (int64_t j = 0; j < k; ++j) gi[j] *= scale;                             \
            gi[t] -= (T)a; gi[z] -= (T)b;                                               \
        } else if (kind == 1) {                                                         \
            const double py_binned = (double)(T)exp(lp);                                \
            const double G = focal_row(lp, params[0], edges, gammas, (int64_t)params[1], \
                                       py_binned, &row_loss[i]);                        \
            const T scale = (T)(-G) * inv_s;                                            \
            _Pragma("omp simd")                                                         \
            for (int64_t j = 0; j < k; ++j) gi[j] *= scale;                             \
            gi[t] += (T)G;                                                              \
        } else if (kind == 2) {                                                         \
            const T p_y = gi[t] * inv_s;                                                \
            T p_j = 0; int64_t jj = 0;                                                  \
            _Pragma("omp simd reduction(max:p_j)")                                      \
            for (int64_t j = 0; j < k; ++j) {                                           \
                const T p = gi[j] * inv_s, below = p < p_y ? p : (T)0;                 \
                p_j = below > p_j ? below : p_j;                                        \
            }                                                                           \
            if (p_j > 0)  /* the first class holding p_j (torch.max's index) */        \
                while (!(gi[jj] * inv_s == p_j && gi[jj] * inv_s < p_y)) ++jj;          \
            const double w = params[0], gamma = params[1];                              \
            const double raw = -expm1(lp) + (double)p_j;                                \
            const double base = raw < 1e-6 ? 1e-6 : raw;                                \
            const double weight = pow(base, gamma);                                     \
            const double slope = raw > 1e-6 ? gamma * pow(base, gamma - 1.0) : 0.0;     \
            const double A = -weight + lp * slope * exp(lp), C = -lp * slope * (double)p_j; \
            row_loss[i] = -w * weight * lp;                                             \
            const T scale = (T)(-w * (A + C)) * inv_s;                                  \
            _Pragma("omp simd")                                                         \
            for (int64_t j = 0; j < k; ++j) gi[j] *= scale;                             \
            gi[t] += (T)(w * A); gi[jj] += (T)(w * C);                                  \
        } else {                                                                        \
            const T w = (T)params[0], margin = (T)params[1];                            \
            const T cn2 = (T)(2.0 * params[2]), scale = w * inv_s;                      \
            const T over = mx - margin > 0 ? mx - margin : (T)0;                        \
            double sq = 0.0;                                                            \
            T sqf = 0;                                                                  \
            _Pragma("omp simd reduction(+:sqf)")                                        \
            for (int64_t j = 0; j < k; ++j) {                                           \
                T d = (mx - margin) - xi[j];                                            \
                d = d > 0 ? d : (T)0;                                                   \
                gi[j] = gi[j] * scale - cn2 * d; sqf += d * d;                          \
            }                                                                           \
            sq = (double)sqf;                                                           \
            const T share = (T)(2.0 * params[3]) * over;                                \
            if (over > 0)                                                               \
                for (int64_t j = 0; j < k; ++j) if (xi[j] == mx) gi[j] += share;        \
            gi[t] -= w;                                                                 \
            row_loss[i] = -(double)w * lp + params[2] * sq                              \
                          + params[3] * (double)ties * (double)over * (double)over;     \
        }                                                                               \
    }                                                                                   \
    double total = 0.0;                                                                 \
    for (int64_t i = 0; i < n; ++i) total += row_loss[i];                               \
    free(row_loss);                                                                     \
    *loss = total;                                                                      \
    return bad ? 1 : 0;                                                                 \
}

DEFINE_KERNEL(calbench_row_losses_f32, float, exp_f32)
DEFINE_KERNEL(calbench_row_losses_f64, double, exp_f64)
