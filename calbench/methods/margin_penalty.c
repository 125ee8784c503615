/* Fused cross-entropy + logit-distance penalty on CPU rows (calbench/methods/margin_penalty.py;
 * compiled and loaded by calbench/native.py).
 *
 * For each row i of x (n x k), with M = max_j x_ij, d_ik = M - x_ik, s = sum_k exp(x_ik - M):
 *   loss_i  = log s - (x_iy - M) + (1/k) sum_k P_k(d_ik)
 *   grad_ik = [ p_ik - 1[k = y_i] + (1/k) (-P'_k(d_ik) + 1[x_ik = M] / ties_i * sum_j P'_j(d_ij)) ] / n
 * (ties at the max share the max's sub-gradient evenly, as torch.amax does). Penalties, with
 * per-class arrays a, b of length k in the dtype of x:
 *   kind 0, hinge: P = a_k relu(d - m),                         P' = a_k 1[d > m]
 *   kind 1, PHR:   P = h (lam + rho h / 2) = h (act + lam) / 2 where act = lam + rho h > 0,
 *                  else -lam^2 / (2 rho);  P' = relu(lam + rho h) / m,
 *                  h = (d - m) / m, lam = a_k, rho = b_k, 1 / (2 rho) = half_inv_b_k  (CALS eq. 16)
 *                  (not (act^2 - lam^2) / (2 rho), which cancels in float32 for a large lam)
 * The gradient is written to `grad` and sum_i loss_i / n to `*loss`, summed in row order after
 * the (OpenMP) row loop so that it does not depend on the thread count. Returns 0, or 1 if a
 * target is out of range, 2 if memory ran out. NaN logits give a NaN loss, as in PyTorch.
 * exp is softmax_rows.h's branch-free polynomial (at most 1 ulp from exp over [-87, 0] in
 * float32) so that the row loops vectorise; float64 uses libm's exp.
 */
#include <stdlib.h>

#include "softmax_rows.h"  /* exp_f32 / exp_f64 and row_max_f32 / row_max_f64 */

/* One penalty: its slope P'_k(d) * scale and its value P_k(d), for d = M - x (branch-free). */
#define HINGE_TERMS(T)                                                                  \
    T excess = (mx - xi[j]) - margin;                                                  \
    T slope = (excess > 0 ? (T)1 : (T)0) * a[j];                                       \
    T value = slope * excess;
#define PHR_TERMS(T)                                                                    \
    T act = a[j] + b[j] * ((mx - xi[j]) * inv_m - (T)1);                               \
    act = act > 0 ? act : (T)0;                                                        \
    T slope = act * inv_m;                                                             \
    T h = ((mx - xi[j]) - margin) * inv_m;                                             \
    T value = act > 0 ? (T)0.5 * h * (act + a[j]) : -a[j] * a[j] * half_inv_b[j];

/* Pass 1: row max. Pass 2: exp, its sum and the ties at the max. Pass 3: penalty value, slope
 * and the gradient but for the max's share. Then the max's share goes to the tied entries (a
 * short scalar scan that stops at the last tie). */
#define ROW_PASSES(T, EXP, TERMS)                                                       \
    {                                                                                   \
        _Pragma("omp simd reduction(+:s, ties)")                                       \
        for (int64_t j = 0; j < k; ++j) {                                              \
            T e = EXP(xi[j] - mx);                                                     \
            gi[j] = e; s += e; ties += xi[j] == mx ? (T)1 : (T)0;                      \
        }                                                                              \
        const T p_scale = inv_n / s, slope_scale = c * inv_n;                          \
        _Pragma("omp simd reduction(+:pen, slope_sum)")                                \
        for (int64_t j = 0; j < k; ++j) {                                              \
            TERMS(T)                                                                   \
            gi[j] = gi[j] * p_scale - slope_scale * slope;                             \
            pen += value; slope_sum += slope;                                          \
        }                                                                              \
        const T share = slope_sum / ties * slope_scale;                                \
        for (int64_t j = 0, left = (int64_t)ties; left > 0 && j < k; ++j)              \
            if (xi[j] == mx) { gi[j] += share; --left; }                               \
    }

#define DEFINE_KERNEL(NAME, SUF, T, EXP)                                                     \
int NAME(const T *x, const int64_t *y, int64_t n, int64_t k, int kind, T margin,      \
         const T *a, const T *b, const T *half_inv_b, T *grad, T *loss) {             \
    const T inv_n = (T)(1.0 / (double)n), c = (T)(1.0 / (double)k), inv_m = (T)1 / margin; \
    double *row_loss = malloc((size_t)n * sizeof(double));                             \
    if (row_loss == NULL) return 2;                                                    \
    int64_t bad = 0;                                                                   \
    _Pragma("omp parallel for schedule(static) reduction(+:bad) if (n * k >= 8192)")   \
    for (int64_t i = 0; i < n; ++i) {                                                  \
        const T *xi = x + i * k;                                                       \
        T *gi = grad + i * k;                                                          \
        const T mx = row_max_##SUF(xi, k);                                             \
        T s = 0, ties = 0, pen = 0, slope_sum = 0;                                     \
        if (kind == 0) ROW_PASSES(T, EXP, HINGE_TERMS) else ROW_PASSES(T, EXP, PHR_TERMS) \
        const int64_t t = y[i];                                                        \
        if (t < 0 || t >= k) { bad += 1; row_loss[i] = 0.0; continue; }                \
        gi[t] -= inv_n;                                                                \
        row_loss[i] = log((double)s) - (double)(xi[t] - mx) + (double)pen / (double)k; \
    }                                                                                  \
    double total = 0.0;                                                                \
    for (int64_t i = 0; i < n; ++i) total += row_loss[i];                              \
    free(row_loss);                                                                    \
    *loss = (T)(total / (double)n);                                                    \
    return bad ? 1 : 0;                                                                \
}

DEFINE_KERNEL(calbench_ce_distance_f32, f32, float, exp_f32)
DEFINE_KERNEL(calbench_ce_distance_f64, f64, double, exp_f64)
