/* The row-softmax prologue shared by calbench's C kernels (row_losses.c, margin_penalty.c; built
 * by calbench/native.py, which hashes this header into the build key with the source).
 *
 * exp_f32 is a branch-free polynomial (Cody-Waite reduction, Cephes coefficients; at most 1 ulp
 * from exp over [-87, 0] in float32), so that the row loops vectorise at the machine's full width
 * (native.py builds with -march=native); float64 uses libm's exp. For a row x of length k:
 *   row_max_T(x, k)              M = max_j x_j (a NaN only propagates from x_0, as before);
 *   row_exp_T(x, k, M, e, &ties) e_j = exp(x_j - M) written to e, returns s = sum_j e_j and sets
 *                                ties = #{j : x_j = M} (the entries that share the max's gradient).
 */
#ifndef CALBENCH_SOFTMAX_ROWS_H
#define CALBENCH_SOFTMAX_ROWS_H

#include <math.h>
#include <stdint.h>

static inline float exp_f32(float v) {
    /* Called with v <= 0; below -87.3 the result is 0 (a softmax term under 1e-38). */
    /* nf = round(t / ln 2) by the 1.5 * 2^23 trick: a float-to-int truncation here stops gcc
     * from vectorising the loop (13x slower with AVX-512); |t / ln 2| < 2^22 keeps it exact. */
    float t = v < -87.3f ? -87.3f : v;
    float nf = (t * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
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

#define CALBENCH_DEFINE_ROW_PROLOGUE(SUF, T, EXP)                                         \
static inline T row_max_##SUF(const T *x, int64_t k) {                                    \
    T mx = x[0];                                                                          \
    _Pragma("omp simd reduction(max:mx)")                                                 \
    for (int64_t j = 0; j < k; ++j) mx = x[j] > mx ? x[j] : mx;                           \
    return mx;                                                                            \
}                                                                                         \
static inline T row_exp_##SUF(const T *x, int64_t k, T mx, T *e, T *ties) {               \
    T s = 0, t = 0;                                                                       \
    _Pragma("omp simd reduction(+:s, t)")                                                 \
    for (int64_t j = 0; j < k; ++j) {                                                     \
        const T v = EXP(x[j] - mx);                                                       \
        e[j] = v; s += v; t += x[j] == mx ? (T)1 : (T)0;                                  \
    }                                                                                     \
    *ties = t;                                                                            \
    return s;                                                                             \
}

CALBENCH_DEFINE_ROW_PROLOGUE(f32, float, exp_f32)
CALBENCH_DEFINE_ROW_PROLOGUE(f64, double, exp_f64)

#endif
