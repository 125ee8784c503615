/* CPC's binary exclusion pair sum with its gradient, one pass over the unordered pairs of each row
 * (calbench/methods/penalties.py, `_NativePairSum`; compiled and loaded by calbench/methods/native.py).
 *
 * For row i with label y and the other logits v (the K - 1 entries k != y):
 *   S_i = sum_{j != k, both != y} log sigmoid(v_j - v_k)
 *       = sum_{j < k} [log sigmoid(a) + log sigmoid(-a)] = sum_{j < k} (-|a| - 2 log(1 + e^{-|a|})),
 *   dS_i/dv_m = -sum_k tanh((v_m - v_k) / 2),  tanh(|a| / 2) = (1 - e^{-|a|}) / (1 + e^{-|a|}),
 * with a = v_j - v_k: each unordered pair is visited once (half the ordered pairs) with one exp,
 * and its tanh goes to both ends with opposite signs; dS/dl_y = 0. No exact form cheaper than the
 * K (K - 1) / 2 pairs exists (penalties.py, `_PairSum`). The row value is summed in double; S =
 * sum_i S_i in row order after the (OpenMP) row loop, independent of the thread count.
 * float32: exp is the polynomial of margin_penalty.c, log(1 + e) = 2 atanh(e / (2 + e)) by its
 * odd series (one division per pair serves it and the tanh) (7 terms: z <= 1/3, truncation below 2e-8 relative), so the inner loop vectorises;
 * the inner sums run in float over at most K terms of size <= 1 (|a| + 2 log(1 + e) per pair for
 * the value), then go to double. float64: libm's exp, log1p and expm1.
 * Returns 0, 1 if a label is out of range, 2 if memory ran out.
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

/* 2 (z + z^3/3 + ... + z^13/13) = log((1 + z) / (1 - z)) for z in [0, 1/3]. */
static inline float atanh_series_f32(float z) {
    const float z2 = z * z;
    float s = 1.0f / 13.0f;
    s = s * z2 + 1.0f / 11.0f;
    s = s * z2 + 1.0f / 9.0f;
    s = s * z2 + 1.0f / 7.0f;
    s = s * z2 + 1.0f / 5.0f;
    s = s * z2 + 1.0f / 3.0f;
    s = s * z2 + 1.0f;
    return 2.0f * z * s;
}

/* One pair term: its value |a| + 2 log(1 + e^{-|a|}) (= -[log s(a) + log s(-a)]) and sign(a) tanh(|a|/2). */
#define PAIR_F32                                                                          \
    const float a = vj - v[q], aa = fabsf(a), e = exp_f32(-aa);                          \
    const float u = 1.0f + e, inv = 1.0f / (u * (u + 1.0f));  /* one division for both: */ \
    const float t = (1.0f - e) * (u + 1.0f) * inv;             /* (1 - e) / (1 + e)     */ \
    const float z = e * u * inv;                               /* e / (2 + e)           */ \
    const float value = aa + 2.0f * atanh_series_f32(z), signed_t = a >= 0 ? t : -t;
#define PAIR_F64                                                                          \
    const double a = vj - v[q], aa = fabs(a), e = exp(-aa);                              \
    const double t = -expm1(-aa) / (1.0 + e);                                            \
    const double value = aa + 2.0 * log1p(e), signed_t = a >= 0 ? t : -t;

#define DEFINE_KERNEL(NAME, T, PAIR)                                                      \
int NAME(const T *x, const int64_t *y, int64_t n, int64_t k, T *grad, double *total) {   \
    double *row_sum = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));                  \
    if (row_sum == NULL) return 2;                                                       \
    int64_t bad = 0, oom = 0;                                                            \
    _Pragma("omp parallel for schedule(dynamic, 1) reduction(+:bad, oom) if (n * k * k >= (1 << 16))") \
    for (int64_t i = 0; i < n; ++i) {                                                    \
        const T *xi = x + i * k;                                                         \
        T *gi = grad + i * k;                                                            \
        const int64_t label = y[i], m = k - 1;                                           \
        row_sum[i] = 0.0;                                                                \
        if (label < 0 || label >= k) { bad += 1; continue; }                             \
        T *v = malloc((size_t)(2 * (m > 0 ? m : 1)) * sizeof(T));                        \
        if (v == NULL) { oom += 1; continue; }                                           \
        T *gv = v + m;                                                                   \
        for (int64_t j = 0, c = 0; j < k; ++j) if (j != label) { v[c] = xi[j]; gv[c] = 0; ++c; } \
        double sum = 0.0;                                                                \
        for (int64_t j = 0; j < m; ++j) {                                                \
            const T vj = v[j];                                                           \
            T val = 0, g = 0;                                                            \
            _Pragma("omp simd reduction(+:val, g)")                                     \
            for (int64_t q = j + 1; q < m; ++q) {                                       \
                PAIR                                                                     \
                val += value; g += signed_t; gv[q] += signed_t;                          \
            }                                                                            \
            sum -= (double)val;                                                          \
            gv[j] -= g;                                                                  \
        }                                                                                \
        for (int64_t j = 0, c = 0; j < k; ++j) gi[j] = j == label ? (T)0 : gv[c++];      \
        row_sum[i] = sum;                                                                \
        free(v);                                                                         \
    }                                                                                    \
    double s = 0.0;                                                                      \
    for (int64_t i = 0; i < n; ++i) s += row_sum[i];                                     \
    free(row_sum);                                                                       \
    *total = s;                                                                          \
    return oom ? 2 : bad ? 1 : 0;                                                        \
}

DEFINE_KERNEL(calbench_cpc_pairs_f32, float, PAIR_F32)
DEFINE_KERNEL(calbench_cpc_pairs_f64, double, PAIR_F64)
