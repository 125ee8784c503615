/* CPC's two penalty sums and the cross-entropy, with their gradients, O(K log K) per row
 * (calbench/methods/penalties.py, `_NativePenalties`; compiled and loaded by calbench/native.py).
 * For row i with label y:
 *   BD_i = sum_{k != y} log sigmoid(l_y - l_k)                         (K terms, direct)
 *   S_i  = sum_{j != k, both != y} log sigmoid(v_j - v_k)              (the exclusion pair sum)
 * Let s_0 <= ... <= s_{m-1} be the m = K - 1 logits other than l_y, sorted. Pairing (j, k) with
 * (k, j), a = s_k - s_j >= 0 and u = exp(-a) in (0, 1] for j < k:
 *   S_i = sum_{j < k} [log sigmoid(a) + log sigmoid(-a)] = -sum_{j < k} a  -  2 sum_{j < k} log(1 + u_jk).
 * (a) sum_{j < k} (s_k - s_j) = sum_k (2k - m + 1) s_k: exact, in double.
 * (b) log(1 + u) is analytic on [0, 1] (nearest singularity u = -1), so the polynomial
 *     log(1 + u) ~= sum_{n=1}^{d} c_n u^n (u times the interpolant of log(1 + u) / u at the d
 *     Chebyshev points of [0, 1]: a pair far apart contributes exactly 0) converges like
 *     (3 + sqrt 8)^-d. u_jk^n = exp(-n (s_k - s_j)) factors, so sum_{j<k} u_jk^n = sum_k P_k^(n) with
 *     P_0 = 0, P_k^(n) = r_k^n (P_{k-1}^(n) + 1), r_k = exp(-(s_k - s_{k-1})) in [0, 1]:
 *     one exp per element, powers by multiplication, every factor <= 1 (no overflow; an underflow
 *     to 0 only drops a term below 1e-38), P_k^(n) <= k.
 * (c) dS_i/dv_q = -sum_{p != q} sign(v_q - v_p) tanh(|v_q - v_p| / 2), tanh(a / 2) = 1 - 2 g(u),
 *     g(u) = u / (1 + u) ~= sum_{n=1}^{d} b_n u^n (same construction and convergence). At sorted
 *     position k the k pairs below give k - 2 sum_n b_n P_k^(n), the m - 1 - k pairs above
 *     -((m - 1 - k) - 2 sum_n b_n Q_k^(n)) with Q_{m-1} = 0, Q_k^(n) = r_{k+1}^n (Q_{k+1}^(n) + 1):
 *       dS_i/ds_k = -(2k - m + 1) + 2 sum_n b_n (P_k^(n) - Q_k^(n)).
 *     A tie (u = 1) contributes 1 - 2 g(1) = 0 either way, so the order of tied logits does not
 *     matter; dS/dl_y = 0. The gradient goes back through the order's permutation.
 * Degrees (max error of the polynomials over their interval, coefficients rounded to double,
 * measured at 2001 points in 60-digit arithmetic): float32 d = 12 on u in [0, e^(1/8)] (the rows
 * are in bucket order, not sorted: below), log(1 + u) 2.2e-10, g 2.0e-9 (a pair's value is
 * >= 2 log 2 and its tanh comes out to 3.9e-9 absolute: below float32 rounding); float64 d = 22
 * on [0, 1], 2.8e-17 and 6.4e-17 (below float64 rounding). The recursions, and r_k (by a
 * double exp polynomial), run in double for float32 logits too: in float, the P_k of a tight
 * cluster of logits (r_k ~ 1, P_k ~ k) pick up rounding like eps k^2. Measured against a float64
 * direct pair sum at K = 1000: float32 S to 2.5e-13 relative and dS to 3e-8 (K - 1) absolute (the
 * exact float32 pair loop this replaced: 9e-9 and 1.8e-6 (K - 1)); float64 2e-16 and 4e-16 (K - 1)
 * on N(0, 25) rows, 1.1e-14 (K - 1) on a tight cluster (1e-3 N(0, 1): P_k ~ k cancel).
 * The cross-entropy of the row comes from the same recursions (row_softmax): the caller's loss
 * CE + BD + BE is one call.
 *
 * Order of the pairs. The identities of (a) - (c) hold for the pairs j < k of ANY order of the m
 * values (a = s_k - s_j may be negative: log sigmoid(a) + log sigmoid(-a) = -a - 2 log(1 + e^-a)
 * and tanh(a / 2) = 1 - 2 g(e^-a) for every real a); the order only has to keep every u = e^-a
 * of a pair j < k inside the polynomials' interval. Float32 rows are put in bucket order
 * (order_f32: a counting sort into buckets at most 0.12 wide, a bucket's values left as they
 * come, so u < e^(1/8), r_k <= e^(1/8) and P_k^(n) <= k e^(n/8)): no comparison sort at all.
 * Float64 rows, and float32 rows wider than the buckets allow, are sorted (u <= 1), in O(m) for
 * spread-out rows: counting sort into 2m equal-width buckets over [min, max];
 * when no bucket holds more than WINDOW + 1 values, an element's rank is its bucket-order position
 * corrected by the WINDOW neighbours on either side (branch-free: whatever lies further away is in
 * another bucket); otherwise insertion sort, after a qsort of any bucket of more than CROWDED
 * values, so clustered rows stay O(m log m). Keys are the float bit patterns (made unsigned-
 * monotone), compared 16 to a vector; ties go by position (the scatter into buckets is stable, so
 * in the window a tie before an element comes first, one after it comes later; the crowded case
 * sorts 64-bit keys with the position in the low 32 bits). The ranks place each value (as double)
 * and its column straight into sorted order. Float64 rows are then fixed up by their exact values
 * (only logits that round to the same float can be out of order).
 * The recursions run LANES rows in lockstep (one SIMD lane per row; every row has the same m), so
 * each lane does the same operations and a row's result does not depend on its neighbours. The
 * sums over rows are taken in row order after the (OpenMP) loop over row groups: independent of
 * the thread count. BD in float32: exp by a polynomial (below), log(1 + e) = 2 atanh(e / (2 + e))
 * by its odd series (7 terms, z <= 1/3: truncation below 2e-8 relative); float64: libm's exp and
 * log1p.
 * A row with a non-finite logit gets NaN sums and NaN gradients (as the pair formula gives).
 * Returns 0, 1 if a label is out of range, 2 if memory ran out.
 *
 * Where the time goes (B = 128, K = 1000, float32, one thread, each part taken out in turn, of
 * ~0.53 ms): the recursions 28%, BD with the gather of the chains' gradient 20%, the exps of the
 * gaps 16%, the transpositions 6%, the rest (the bucket order, mostly its scalar count and
 * scatter passes; (a); CE) 30%. The whole cpc loss (CE included) is then ~4.7-4.8x the
 * cross-entropy alone (benchmarks/bench_losses.py, wall or --clock cpu, load ~3).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LANES 16
#define CROWDED 48
#define WINDOW 7   /* buckets of at most WINDOW + 1 values are ranked branch-free */

/* The recursions are compiled for AVX-512, AVX2 + FMA and baseline x86-64, chosen at load time,
 * unless the build already targets AVX-512 (-march=native on such a machine: the clones would add
 * nothing, and GCC 12 fails with an internal error on the x86-64-v3 clone of group_f64 there). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && !defined(__AVX512F__)
#define WIDE_SIMD __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define WIDE_SIMD
#endif
/* Helpers are inlined into the target clones, so that they use the clone's registers too. */
#define INLINE static inline __attribute__((always_inline))

/* LANES values in one SIMD vector (GCC / Clang vector extension, lowered to the target's widest
 * registers: one zmm for AVX-512, two ymm for AVX2, four xmm for SSE2): LANES rows in the
 * recursions, LANES consecutive logits of a row elsewhere. */
typedef float vec_f32 __attribute__((vector_size(LANES * sizeof(float))));
typedef double vec_f64 __attribute__((vector_size(LANES * sizeof(double))));

typedef int32_t vec_i32 __attribute__((vector_size(LANES * sizeof(int32_t))));
typedef uint32_t vec_u32 __attribute__((vector_size(LANES * sizeof(uint32_t))));
typedef int64_t vec_i64 __attribute__((vector_size(LANES * sizeof(int64_t))));
/* HALF doubles: one 512-bit vector, the unit of the double-precision loops (the 22 chain states of
 * one half stay in the 32 zmm registers; those of 16 lanes would spill). */
#define HALF (LANES / 2)
typedef double half_f64 __attribute__((vector_size(HALF * sizeof(double))));
typedef int64_t half_i64 __attribute__((vector_size(HALF * sizeof(int64_t))));

INLINE vec_f32 select_f32(vec_i32 mask, vec_f32 a, vec_f32 b) {
    return (vec_f32)((mask & (vec_i32)a) | (~mask & (vec_i32)b));
}

INLINE half_f64 select_half(half_i64 mask, half_f64 a, half_f64 b) {
    return (half_f64)((mask & (half_i64)a) | (~mask & (half_i64)b));
}

/* c_n and b_n of log(1 + u) ~= sum_n c_n u^n and u / (1 + u) ~= sum_n b_n u^n; entry n - 1 is u^n. */
/* Degree 12 on [0, e^(1/8)] (float32 logits, in bucket order: see order_f32), degree 22 on [0, 1]. */
static const double LOG1P_12[12] = {
    9.999999996083083e-1, -4.9999990009315465e-1, 3.333290551022476e-1, -2.4992713815846657e-1,
    1.9934691185201012e-1, -1.631272453947321e-1, 1.3026659721462017e-1, -9.391853819950063e-2,
    5.539026686835178e-2, -2.3878683972628906e-2, 6.483611795736014e-3, -8.177559563962409e-4};
static const double SIGMOID_12[12] = {
    9.999999963035662e-1, -9.999990568212335e-1, 9.999595368527169e-1, -9.993085135230027e-1,
    9.937684406860223e-1, -9.659549104105911e-1, 8.774428751426123e-1, -6.920351284993469e-1,
    4.32967338463551e-1, -1.9388077923110525e-1, 5.39590074179344e-2, -6.91880542583085e-3};
static const double LOG1P_22[22] = {
    1.0, -4.9999999999999834e-1, 3.3333333333306461e-1, -2.4999999998264811e-1,
    1.9999999940349815e-1, -1.6666665403691092e-1, 1.428569630956731e-1, -1.2499817769513954e-1,
    1.1109740896460193e-1, -9.9921278217600168e-2, 9.0555675155907331e-2, -8.207163680437429e-2,
    7.3290152555349544e-2, -6.2887546707831463e-2, 5.007742395391704e-2, -3.5530525401441245e-2,
    2.1511022653356974e-2, -1.061469636358553e-2, 4.047809893467512e-3, -1.1093809681700343e-3,
    1.9330794553431146e-4, -1.6020216725538193e-5};
static const double SIGMOID_22[22] = {
    9.9999999999999997e-1, -9.9999999999997212e-1, 9.9999999999548879e-1, -9.9999999970855543e-1,
    9.9999998997331633e-1, -9.999997874803432e-1, 9.9999697098717136e-1, -9.9996923936209483e-1,
    9.9976818508028997e-1, -9.986643576507731e-1, 9.9398180550240152e-1, -9.7841383991820512e-1,
    9.3746332175107981e-1, -8.5178223758601761e-1, 7.0898043064424729e-1, -5.1989114145238589e-1,
    3.2241482733669193e-1, -1.61899320675807e-1, 6.2532578457163943e-2, -1.7301628940854161e-2,
    3.0364833241718455e-3, -2.5304027701432046e-4};

/* exp(v) for v <= 0 on every lane, in float: Cody-Waite reduction and the Cephes polynomial (at most
 * 1 ulp over [-87, 0]), 0 below -87.3. */
INLINE vec_f32 exp_vec_f32(vec_f32 v) {
    const vec_i32 under = v < -87.3f;
    const vec_f32 zero = {0}, t = select_f32(under, zero - 87.3f, v);
    const vec_f32 nf = __builtin_convertvector(__builtin_convertvector(t * 1.44269504088896341f - 0.5f, vec_i32), vec_f32);
    const vec_f32 r = t - nf * 0.693359375f + nf * 2.12194440e-4f;
    vec_f32 p = zero + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const vec_i32 scale = (__builtin_convertvector(nf, vec_i32) + 127) << 23;
    return select_f32(under, zero, p * (vec_f32)scale);
}

/* exp(v) for v <= 0 on every lane, in double: 2^n exp(r) with n = round(v / log 2) and
 * |r| <= log(2) / 2 (log 2 split in two, fdlibm's constants), exp(r) by its Taylor polynomial to
 * r^13 (truncation below 4e-18 relative); 0 below -708. On HALF lanes: one 512-bit vector (GCC 12
 * lowers a 1024-bit compare lane by lane, which made this 6x slower). The terms r^4 .. r^13 in
 * Estrin's scheme, the last four steps by Horner's: 20% faster than Horner's throughout (the
 * chain, not the operation count, set the pace), and as accurate where it matters (a tight
 * cluster's gradient multiplies hundreds of r_q: 1.1e-14 x (K - 1) from the pair sum either
 * way, where Estrin's throughout gave 1.5e-14). */
INLINE half_f64 exp_half_f64(half_f64 v) {
    const half_i64 under = v < -708.0;
    const half_f64 zero = {0}, t = select_half(under, zero - 708.0, v);
    const half_i64 n = __builtin_convertvector(t * 1.4426950408889634 - 0.5, half_i64);
    const half_f64 nf = __builtin_convertvector(n, half_f64);
    const half_f64 r = (t - nf * 6.93147180369123816490e-01) - nf * 1.90821492927058770002e-10;
    static const double inverse_factorial[14] = {
        1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040, 1.0 / 40320,
        1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600, 1.0 / 6227020800.0};
    const double *f = inverse_factorial;
    const half_f64 r2 = r * r, r4 = r2 * r2;
    const half_f64 tail = (((f[4] + f[5] * r) + (f[6] + f[7] * r) * r2) + ((f[8] + f[9] * r) + (f[10] + f[11] * r) * r2) * r4)
                          + (f[12] + f[13] * r) * (r4 * r4);
    half_f64 p = tail;
    for (int j = 3; j >= 0; --j) p = p * r + f[j];
    const half_i64 scale = (n + 1023) << 52;
    return select_half(under, zero, p * (half_f64)scale);
}


/* ---- sorting ---- */

/* The float's bits made unsigned-monotone: their unsigned order is the order of the floats. */
static inline uint32_t order_bits(float v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return u ^ ((uint32_t)((int32_t)u >> 31) | 0x80000000u);
}

static int by_key(const void *a, const void *b) {
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Insertion sort of src[0..m) into dst (few inversions expected), after a qsort of every bucket
 * (ends in start[]) that holds more than CROWDED keys. */
static void insertion_sort(uint64_t *src, uint64_t *dst, const int32_t *start, int64_t nb, int64_t m) {
    for (int64_t b = 0, begin = 0; b < nb; begin = start[b++])
        if (start[b] - begin > CROWDED) qsort(src + begin, (size_t)(start[b] - begin), sizeof(uint64_t), by_key);
    for (int64_t j = 0; j < m; ++j) {
        const uint64_t x = src[j];
        int64_t p = j;
        while (p > 0 && dst[p - 1] > x) { dst[p] = dst[p - 1]; --p; }
        dst[p] = x;
    }
}

/* Counts -> exclusive prefix sums in place, LANES at a time (a log-step scan in each vector);
 * returns the largest count. nb is a multiple of LANES. */
INLINE int32_t exclusive_scan(int32_t *start, int64_t nb) {
    const vec_i32 zero = {0};
    vec_i32 carry = zero, most = zero, c, x;
    for (int64_t b = 0; b < nb; b += LANES) {
        memcpy(&c, start + b, sizeof c);
        const vec_i32 larger = c > most;
        most = (larger & c) | (~larger & most);
        x = c + __builtin_shufflevector(zero, c, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30);
        x += __builtin_shufflevector(zero, x, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29);
        x += __builtin_shufflevector(zero, x, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27);
        x += __builtin_shufflevector(zero, x, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23);
        const vec_i32 out = carry + x - c;
        memcpy(start + b, &out, sizeof out);
        carry += __builtin_shufflevector(x, x, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15);
    }
    int32_t largest = 0;
    for (int l = 0; l < LANES; ++l) largest = most[l] > largest ? most[l] : largest;
    return largest;
}

/* lo, hi = the least and largest of f[0..m), m >= 1. */
INLINE void min_max(const float *f, int64_t m, float *lo_out, float *hi_out) {
    const vec_f32 zero = {0};
    vec_f32 lo_v = zero + f[0], hi_v = lo_v, block;
    int64_t q0 = 0;
    for (; q0 + LANES <= m; q0 += LANES) {
        memcpy(&block, f + q0, sizeof block);
        lo_v = select_f32(block < lo_v, block, lo_v);
        hi_v = select_f32(block > hi_v, block, hi_v);
    }
    float lo = f[0], hi = f[0];
    for (int l = 0; l < LANES; ++l) { lo = lo_v[l] < lo ? lo_v[l] : lo; hi = hi_v[l] > hi ? hi_v[l] : hi; }
    for (; q0 < m; ++q0) { lo = f[q0] < lo ? f[q0] : lo; hi = f[q0] > hi ? f[q0] : hi; }
    *lo_out = lo;
    *hi_out = hi;
}

/* rank[q] = the rank of w[q] in the order of (w, q), for w[0..m) in bucket order with buckets of at
 * most WINDOW + 1 keys: q - WINDOW plus the keys of the window on either side that come first
 * (whatever lies further away is in another bucket). LANES positions at a time; w has WINDOW
 * keys of room on either side, and LANES more at the end (read, never used). */
INLINE void window_ranks(uint32_t *w, int64_t m, int32_t *rank) {
    for (int d = 1; d <= WINDOW; ++d) { w[-d] = 0; w[m - 1 + d] = UINT32_MAX; }
    vec_i32 offset;
    for (int l = 0; l < LANES; ++l) offset[l] = l - WINDOW;
    for (int64_t q0 = 0; q0 < m; q0 += LANES) {
        vec_u32 here, there;
        vec_i32 r = offset + (int32_t)q0;
        memcpy(&here, w + q0, sizeof here);
        for (int d = -WINDOW; d < 0; ++d) { memcpy(&there, w + q0 + d, sizeof there); r -= there <= here; }
        for (int d = 1; d <= WINDOW; ++d) { memcpy(&there, w + q0 + d, sizeof there); r -= there < here; }
        if (q0 + LANES <= m) memcpy(rank + q0, &r, sizeof r);
        else for (int64_t q = q0; q < m; ++q) rank[q] = r[q - q0];
    }
}

/* Sorts the finite floats f[0..m) (f[q]: the key of v[q], the row without its label) and writes
 * them out in ascending order: sv[j] = v[p] (as double), col[j] = p's column in the full row
 * (p, or p + 1 past the label). Ties keep their positions' order. Scratch: wk m + 2 WINDOW,
 * wp m, bucket m, start 2m + LANES, key and pad m each (the crowded case). */
#define DEFINE_SORT_ROW(NAME, T)                                                              \
static inline __attribute__((always_inline)) void NAME(const float *f, const T *v, int64_t m, int64_t label, \
        double *sv, int32_t *col, uint32_t *wk, int32_t *wp, int32_t *bucket, int32_t *start, \
        uint64_t *key, uint64_t *pad) {                                                       \
    float lo, hi;                                                                             \
    min_max(f, m, &lo, &hi);                                                                  \
    if (hi == lo) {                                        /* all equal: positions are the order */ \
        for (int64_t q = 0; q < m; ++q) { sv[q] = (double)v[q]; col[q] = (int32_t)(q + (q >= label)); } \
        return;                                                                               \
    }                                                                                         \
    const int64_t nb = (2 * m + LANES - 1) / LANES * LANES;                                   \
    const double scale = (double)(2 * m) / ((double)hi - (double)lo);                         \
    _Pragma("omp simd")                                                                       \
    for (int64_t q = 0; q < m; ++q) {                                                         \
        const int32_t b = (int32_t)(((double)f[q] - (double)lo) * scale);                     \
        bucket[q] = b < 2 * m ? b : (int32_t)(2 * m) - 1;                                     \
    }                                                                                         \
    memset(start, 0, (size_t)nb * sizeof(int32_t));                                           \
    for (int64_t q = 0; q < m; ++q) start[bucket[q]] += 1;                                    \
    const int32_t most = exclusive_scan(start, nb);                                           \
    uint32_t *w = wk + WINDOW;                                                                \
    for (int64_t q = 0; q < m; ++q) {                      /* start[b]: then bucket b's end */ \
        const int32_t d = start[bucket[q]]++;                                                 \
        w[d] = order_bits(f[q]);                                                              \
        wp[d] = (int32_t)q;                                                                   \
    }                                                                                         \
    if (most > WINDOW + 1) {                                                                  \
        for (int64_t j = 0; j < m; ++j) pad[j] = ((uint64_t)w[j] << 32) | (uint32_t)wp[j];    \
        insertion_sort(pad, key, start, 2 * m, m);                                            \
        for (int64_t j = 0; j < m; ++j) {                                                     \
            const int32_t p = (int32_t)(uint32_t)key[j];                                      \
            sv[j] = (double)v[p];                                                             \
            col[j] = p + (p >= label);                                                        \
        }                                                                                     \
        return;                                                                               \
    }                                                                                         \
    window_ranks(w, m, bucket);                                                               \
    for (int64_t q = 0; q < m; ++q) {                                                         \
        const int32_t p = wp[q], j = bucket[q];                                               \
        sv[j] = (double)v[p];                                                                 \
        col[j] = p + (p >= label);                                                            \
    }                                                                                         \
}

DEFINE_SORT_ROW(sort_row_f32, float)
DEFINE_SORT_ROW(sort_row_f64, double)

static void exact_fix(double *sv, int32_t *col, int64_t m);
static inline const float *floats_f64(const double *v, float *vf, int64_t m);

/* Float32 rows need no sort: the formulas of (a) - (c) hold for the pairs j < k of ANY order (a
 * pair's a = s_k - s_j may be negative: log sigmoid(a) + log sigmoid(-a) = -a - 2 log(1 + e^-a)
 * and tanh(a / 2) = 1 - 2 g(e^-a) for every real a), as long as the polynomials hold for every
 * u = e^-a that occurs. order_f32 puts the row in bucket order (counting sort into nb equal-width
 * buckets of width at most ORDER_WIDTH = 0.12, values in a bucket left in row order): a pair out
 * of order lies in one bucket, so a > -0.12 and u < e^(1/8), the interval the float32
 * polynomials are fitted on (LOG1P_12 / SIGMOID_12). As few buckets as that width allows
 * (range / 0.12 + 1, a multiple of LANES: ~300 for a row of N(0, 25) logits, where 2m buckets
 * made the count's scan and clearing 6x dearer); a row too wide for ORDER_BUCKETS(m) is sorted
 * (sort_row_f32). sv[j] = the value at place j (double), pos[q] = the place of column q (the
 * label's: m, past the others). */
#define ORDER_WIDTH 0.12
#define ORDER_BUCKETS(m) ((m) < 64 ? 256 : 4 * (m))
static inline __attribute__((always_inline)) void order_f32(const float *xi, float *v, int64_t m, int64_t label,
        double *sv, int32_t *pos, uint32_t *wk, int32_t *wp, int32_t *bucket, int32_t *start, uint64_t *key,
        uint64_t *pad) {
    float lo, hi;
    min_max(xi, m + 1, &lo, &hi);                          /* the label's logit included */
    const double range = (double)hi - (double)lo;
    const double wanted = range / ORDER_WIDTH + 1.0;
    if (range == 0.0 || wanted > (double)ORDER_BUCKETS(m)) {   /* all equal, or too wide */
        memcpy(v, xi, (size_t)label * sizeof(float));
        memcpy(v + label, xi + label + 1, (size_t)(m - label) * sizeof(float));
        sort_row_f32(v, v, m, label, sv, pos, wk, wp, bucket, start, key, pad);
        for (int64_t j = 0; j < m; ++j) wp[pos[j]] = (int32_t)j;     /* columns -> places */
        wp[label] = (int32_t)m;
        memcpy(pos, wp, (size_t)(m + 1) * sizeof(int32_t));
        return;
    }
    const int64_t nb = ((int64_t)wanted + LANES - 1) / LANES * LANES;
    const double scale = (double)nb / range;
    _Pragma("omp simd")
    for (int64_t q = 0; q <= m; ++q) {
        const int32_t b = (int32_t)(((double)xi[q] - (double)lo) * scale);
        bucket[q] = b < nb ? b : (int32_t)nb - 1;
    }
    bucket[label] = (int32_t)nb;                           /* the label last, at place m */
    /* Counted in two histograms, of the even and the odd places (independent chains of
     * increments: 2% of the kernel faster than one). */
    int32_t *odd = start + ORDER_BUCKETS(m) + 2 * LANES;
    memset(start, 0, (size_t)(nb + LANES) * sizeof(int32_t));
    memset(odd, 0, (size_t)(nb + LANES) * sizeof(int32_t));
    int64_t q = 0;
    for (; q < m; q += 2) { start[bucket[q]] += 1; odd[bucket[q + 1]] += 1; }
    if (q == m) start[bucket[m]] += 1;
    _Pragma("omp simd")
    for (int64_t b = 0; b < nb + LANES; ++b) start[b] += odd[b];
    (void)exclusive_scan(start, nb + LANES);
    for (q = 0; q <= m; ++q) {                             /* start[b]: then bucket b's end */
        const int32_t d = start[bucket[q]]++;
        sv[d] = (double)xi[q];
        pos[q] = d;
    }
}

/* Float64 rows, sorted: the row without its label copied to v, sorted by its float roundings,
 * then by the exact values. */
static inline __attribute__((always_inline)) void sorted_f64(const double *xi, double *v, int64_t m, int64_t label,
        double *sv, int32_t *col, uint32_t *wk, int32_t *wp, int32_t *bucket, int32_t *start, uint64_t *key,
        uint64_t *pad, float *vf) {
    memcpy(v, xi, (size_t)label * sizeof(double));
    memcpy(v + label, xi + label + 1, (size_t)(m - label) * sizeof(double));
    sort_row_f64(floats_f64(v, vf, m), v, m, label, sv, col, wk, wp, bucket, start, key, pad);
    exact_fix(sv, col, m);
}

/* ---- binary discrimination ---- */

#define FLUSH_BD 8

/* 2 (z + z^3/3 + ... + z^13/13) = log((1 + z) / (1 - z)) for z in [0, 1/3], on every lane. */
INLINE vec_f32 atanh_series_f32(vec_f32 z) {
    const vec_f32 z2 = z * z;
    vec_f32 s = z2 * (1.0f / 13.0f) + 1.0f / 11.0f;
    s = s * z2 + 1.0f / 9.0f;
    s = s * z2 + 1.0f / 7.0f;
    s = s * z2 + 1.0f / 5.0f;
    s = s * z2 + 1.0f / 3.0f;
    s = s * z2 + 1.0f;
    return 2.0f * z * s;
}

/* e = exp(-|a|) for one block of LANES logits x of a row with label logit ly, a = l_y - l_k. */
INLINE vec_f32 bd_exp(vec_f32 x, float ly) {
    const vec_f32 a = ly - x;
    return exp_vec_f32(select_f32(a < 0, a, -a));
}

/* The rest of that block, given its e: the terms where `other` is set go into the running sums,
 * -w sigmoid(-a) (0 elsewhere) is returned. log sigmoid(a) = min(a, 0) - log(1 + e),
 * log(1 + e) = 2 atanh(e / (2 + e)) and sigmoid(-a) = (a >= 0 ? e : 1) / (1 + e), one division
 * for both. */
INLINE vec_f32 bd_rest(vec_f32 x, vec_f32 e, float ly, float w, vec_i32 other, vec_f32 *sum, vec_f32 *to_label) {
    const vec_f32 zero = {0}, a = ly - x;
    const vec_f32 u = 1.0f + e, inv = 1.0f / (u * (u + 1.0f));
    const vec_f32 log_sig = select_f32(a < 0, a, zero) - atanh_series_f32(e * u * inv);
    const vec_f32 sig_neg = select_f32(a >= 0, e, zero + 1.0f) * (u + 1.0f) * inv;
    *sum += select_f32(other, log_sig, zero);
    *to_label += select_f32(other, sig_neg, zero);
    return select_f32(other, -w * sig_neg, zero);
}

/* Row i's BD_i (returned) and w dBD_i/dl added into g (g[label] set): dBD/dl_k = -sigmoid(l_k - l_y)
 * for k != y and dBD/dl_y = the sum of those sigmoids. The exp of each block is taken two blocks
 * ahead: one block's chain (exp, division, series) is ~60 dependent operations, and the CPU
 * overlapped too few of them (BD 1.2 -> 0.73 us per row of 1000, same values). LANES logits at a
 * time (the last block padded); per-lane sums in float over FLUSH_BD blocks, then in double. */
/* (float) chain[pos[0 .. LANES)], the chains' gradient terms of LANES consecutive columns (pos:
 * their places in the order), by scalar loads (on AMD Zen 4, two 8-wide AVX-512 gathers made the
 * whole kernel 5% slower). */
INLINE vec_f32 gather_chain(const double *chain, const int32_t *pos) {
    vec_f32 out;
    for (int l = 0; l < LANES; ++l) out[l] = (float)chain[pos[l]];
    return out;
}

INLINE double bd_f32(const float *xi, int64_t label, int64_t k, float w, float *g, const double *chain,
                     const int32_t *pos) {
    const float ly = xi[label];
    const vec_f32 zero = {0};
    vec_f64 sum = {0}, to_label = {0};
    vec_f32 part_sum = zero, part_to_label = zero, x, grad;
    vec_i32 lane;
    for (int l = 0; l < LANES; ++l) lane[l] = l;
    const int64_t full = k / LANES * LANES;
    vec_f32 e_next = zero, x_next = zero, e_after = zero, x_after = zero;
    if (full > 0) { memcpy(&x_next, xi, sizeof x_next); e_next = bd_exp(x_next, ly); }
    if (full > LANES) { memcpy(&x_after, xi + LANES, sizeof x_after); e_after = bd_exp(x_after, ly); }
    for (int64_t j0 = 0; j0 < full; j0 += LANES) {
        x = x_next;
        const vec_f32 e = e_next;
        x_next = x_after;
        e_next = e_after;
        if (j0 + 2 * LANES < full) { memcpy(&x_after, xi + j0 + 2 * LANES, sizeof x_after); e_after = bd_exp(x_after, ly); }
        grad = bd_rest(x, e, ly, w, lane != (int32_t)(label - j0), &part_sum, &part_to_label);
        if (chain != NULL) grad += gather_chain(chain, pos + j0);
        memcpy(g + j0, &grad, sizeof grad);
        if ((j0 / LANES) % FLUSH_BD == FLUSH_BD - 1) {
            sum += __builtin_convertvector(part_sum, vec_f64);
            to_label += __builtin_convertvector(part_to_label, vec_f64);
            part_sum = part_to_label = zero;
        }
    }
    if (full < k) {
        x = zero + ly;
        for (int64_t j = full; j < k; ++j) x[j - full] = xi[j];
        const vec_i32 other = (lane != (int32_t)(label - full)) & (lane < (int32_t)(k - full));
        grad = bd_rest(x, bd_exp(x, ly), ly, w, other, &part_sum, &part_to_label);
        for (int64_t j = full; j < k; ++j) g[j] = grad[j - full] + (chain != NULL ? (float)chain[pos[j]] : 0.0f);
    }
    sum += __builtin_convertvector(part_sum, vec_f64);
    to_label += __builtin_convertvector(part_to_label, vec_f64);
    double total = 0.0, label_grad = 0.0;
    for (int l = 0; l < LANES; ++l) { total += sum[l]; label_grad += to_label[l]; }
    g[label] = w * (float)label_grad;
    return total;
}

INLINE double bd_f64(const double *xi, int64_t label, int64_t k, double w, double *g, const double *chain,
                     const int32_t *pos) {
    (void)chain, (void)pos;                                /* float64: scattered before */
    const double ly = xi[label];
    double sum = 0.0, to_label = 0.0;
    for (int64_t j = 0; j < k; ++j) {
        const double a = ly - xi[j], e = exp(-fabs(a)), sig_neg = (a >= 0 ? e : 1.0) / (1.0 + e);
        if (j == label) continue;
        sum += (a < 0 ? a : 0.0) - log1p(e);
        to_label += sig_neg;
        g[j] += -w * sig_neg;
    }
    g[label] = w * to_label;
    return sum;
}

/* ---- the exclusion pair sum, with the cross-entropy ---- */

/* One step of the recursions of (b) / (c) on HALF lanes: p[n] = r^(n + 1) (p[n] + 1), returns
 * sum_n b_n p[n], and adds p[n] into sum[n] when `sum` is given (the forward pass: (b) needs
 * sum_k P_k). SCALED: the states are b_n P^(n) (recursion b_n P_k = r_k^n (b_n P_{k-1} + b_n)),
 * so that the returned sum is their plain sum (D multiplications fewer per step); used for
 * float32 logits only: in float64, a tight cluster's gradient (P_k ~ k, the alternating b_n P_k
 * cancelling to ~k / 2) came out 10x further from the pair sum (1e-13 x (K - 1) against
 * 1.1e-14). Powers r^(n + 1) by a product tree (depth log2 D). */
INLINE half_f64 chain_step(half_f64 *p, half_f64 *sum, half_f64 rk, int d, const double *sigmoid, int scaled) {
    half_f64 pw[22], acc = {0};
    pw[0] = rk;
    for (int n = 1; n < d; ++n) pw[n] = pw[(n + 1) / 2 - 1] * pw[n - (n + 1) / 2];
    for (int n = 0; n < d; ++n) {
        p[n] = pw[n] * (p[n] + (scaled ? sigmoid[n] : 1.0));
        acc += scaled ? p[n] : sigmoid[n] * p[n];
        if (sum != NULL) sum[n] += p[n];
    }
    return acc;
}

/* Cross-entropy from the sorted row, per lane: sum_k exp(s_k - s_{m-1}) = 1 + P_{m-1}^(1)
 * (p1: the first state after the forward pass, b_1 P^(1) when scaled), so with
 * M = max(s_{m-1}, l_y), c = exp(s_{m-1} - M), Z = c (1 + P_{m-1}^(1)) + exp(l_y - M):
 * CE = M - l_y + log Z, p_y = exp(l_y - M) / Z, and p at sorted position k is c E_k / Z with
 * E_k = exp(s_k - s_{m-1}) = r_{k+1} E_{k+1} (E_{m-1} = 1), a product the backward pass forms.
 * Returns w_ce c / Z, the factor of E_k in the gradient. */
INLINE double row_softmax(double p1, double b1, double top, double ly, double w_ce, double *ce, double *py) {
    const double others = 1.0 + p1 / b1;
    if (top >= ly) {                                       /* M = s_{m-1}, c = 1 */
        const double ey = exp(ly - top), z = others + ey;
        *ce = (top - ly) + log(z);
        *py = ey / z;
        return w_ce / z;
    }
    const double c = exp(top - ly), z = 1.0 + c * others;  /* M = l_y */
    *ce = log1p(c * others);
    *py = 1.0 / z;
    return w_ce * c / z;
}

/* The recursions of (b) and (c) for LANES rows, HALF at a time, r[k * LANES + l] = r_k of lane l
 * (r_0 unused), with the cross-entropy of the same rows (row_softmax; top[l] = s_{m-1} and ly[l]
 * = l_y of lane l). Out: g[k * LANES + l] = w_be dS/ds_k + w_ce dCE/ds_k at sorted position k,
 * value[l] = sum_n c_n sum_k P_k^(n), ce[l] = CE of the row, py[l] = its softmax at the label. */
#define DEFINE_CHAINS(NAME, D, LOG1P, SIGMOID, SCALED)                                        \
static inline __attribute__((always_inline)) void NAME(const double *r, int64_t m, const double *top, \
        const double *ly, double w_ce, double w_be, double *g, double *value, double *ce, double *py) { \
    for (int h = 0; h < LANES; h += HALF) {                                                   \
        half_f64 p[D], sum[D], rk, acc, up, e, scale, zero = {0};                             \
        for (int n = 0; n < D; ++n) p[n] = sum[n] = zero;                                     \
        memcpy(g + h, &zero, sizeof zero);                                                    \
        for (int64_t k = 1; k < m; ++k) {                                                     \
            memcpy(&rk, r + k * LANES + h, sizeof rk);                                        \
            acc = chain_step(p, sum, rk, D, SIGMOID, SCALED);                                 \
            memcpy(g + k * LANES + h, &acc, sizeof acc);                                      \
        }                                                                                     \
        for (int l = 0; l < HALF; ++l) {                                                      \
            value[h + l] = 0.0;                                                               \
            for (int n = 0; n < D; ++n) value[h + l] += LOG1P[n] / (SCALED ? SIGMOID[n] : 1.0) * sum[n][l]; \
            scale[l] = row_softmax(p[0][l], SCALED ? SIGMOID[0] : 1.0, top[h + l], ly[h + l], w_ce, \
                                   ce + h + l, py + h + l);                                   \
        }                                                                                     \
        for (int n = 0; n < D; ++n) p[n] = zero;                   /* now Q */                \
        e = zero + 1.0;                                            /* E_k */                  \
        memcpy(&up, g + (m - 1) * LANES + h, sizeof up);                                      \
        up = w_be * ((double)(1 - m) + 2.0 * up) + scale;                                     \
        memcpy(g + (m - 1) * LANES + h, &up, sizeof up);                                      \
        for (int64_t k = m - 2; k >= 0; --k) {                                                \
            memcpy(&rk, r + (k + 1) * LANES + h, sizeof rk);                                  \
            acc = chain_step(p, NULL, rk, D, SIGMOID, SCALED);                                \
            e *= rk;                                                                          \
            memcpy(&up, g + k * LANES + h, sizeof up);                                        \
            up = w_be * ((double)(m - 1 - 2 * k) + 2.0 * (up - acc)) + scale * e;             \
            memcpy(g + k * LANES + h, &up, sizeof up);                                        \
        }                                                                                     \
    }                                                                                         \
}

DEFINE_CHAINS(chains_f32, 12, LOG1P_12, SIGMOID_12, 1)
DEFINE_CHAINS(chains_f64, 22, LOG1P_22, SIGMOID_22, 0)

/* The floats that the sort keys are made of: float32 logits themselves; float64 ones rounded and
 * saturated to the float range, a weak order of the values that exact_fix then makes strict. */
static inline const float *floats_f64(const double *v, float *vf, int64_t m) {
    for (int64_t q = 0; q < m; ++q) vf[q] = (float)(v[q] > 3.4e38 ? 3.4e38 : v[q] < -3.4e38 ? -3.4e38 : v[q]);
    return vf;
}

/* exp(v) for v <= 1 on every lane, in double, for the gaps of float32 rows (which need it to
 * ~1e-15, not to 1 ulp): 2^(n / 8) exp(r) with n = round(8 v / log 2), |r| <= log(2) / 16, 2^(j / 8)
 * from a table of 8 (one permutation of a register), exp(r) by its Taylor polynomial to r^8
 * (truncation below 2e-18 relative): within 2 ulp of libm, 8 terms where exp_half_f64 takes 13. */
INLINE half_f64 exp_gap_f64(half_f64 v) {
    static const double eighth_powers[8] = {
        1.0, 1.0905077326652577, 1.189207115002721, 1.2968395546510096,
        1.4142135623730951, 1.5422108254079407, 1.681792830507429, 1.8340080864093424};
    const half_i64 under = v < -708.0;
    const half_f64 zero = {0}, shifter = zero + 6755399441055744.0, t = select_half(under, zero - 708.0, v);
    const half_f64 nf = (t * 11.541560327111707 + shifter) - shifter;     /* round(8 t / log 2) */
    const half_i64 n = __builtin_convertvector(nf, half_i64);
    const half_f64 r = (t - nf * (6.93147180369123816490e-01 / 8)) - nf * (1.90821492927058770002e-10 / 8);
    half_f64 p = zero + 1.0 / 40320;
    static const double inverse_factorial[8] = {1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040};
    for (int j = 7; j >= 0; --j) p = p * r + inverse_factorial[j];
    half_f64 table, power;
    memcpy(&table, eighth_powers, sizeof table);
#if defined(__GNUC__) && !defined(__clang__)
    power = __builtin_shuffle(table, n & 7);
#else
    for (int l = 0; l < HALF; ++l) power[l] = eighth_powers[n[l] & 7];
#endif
    const half_i64 scale = ((n >> 3) + 1023) << 52;
    return select_half(under, zero, p * power * (half_f64)scale);
}

/* out[q] = r_q = exp(-(s_q - s_{q-1})) for q >= 1 (out[0] unused), in double, two vectors of HALF
 * at a time (independent exps side by side: 15% faster than one at a time), the rest padded. */
#define DEFINE_GAPS(NAME, EXP, WIDTH)                                                         \
static inline __attribute__((always_inline)) void NAME(const double *s, int64_t m, double *out) { \
    out[0] = 0.0;                                                                             \
    int64_t q0 = 1;                                                                           \
    for (; q0 + WIDTH * HALF <= m; q0 += WIDTH * HALF) {                                      \
        half_f64 hi[WIDTH], lo[WIDTH], r[WIDTH];                                              \
        for (int j = 0; j < WIDTH; ++j) {                                                     \
            memcpy(hi + j, s + q0 + j * HALF, sizeof hi[j]);                                  \
            memcpy(lo + j, s + q0 + j * HALF - 1, sizeof lo[j]);                              \
        }                                                                                     \
        for (int j = 0; j < WIDTH; ++j) r[j] = EXP(lo[j] - hi[j]);                            \
        for (int j = 0; j < WIDTH; ++j) memcpy(out + q0 + j * HALF, r + j, sizeof r[j]);      \
    }                                                                                         \
    for (; q0 < m; q0 += HALF) {                                                              \
        const int64_t rest = m - q0 < HALF ? m - q0 : HALF;                                   \
        half_f64 hi = {0}, lo = {0};                                                          \
        for (int l = 0; l < rest; ++l) { hi[l] = s[q0 + l]; lo[l] = s[q0 + l - 1]; }          \
        const half_f64 r = EXP(lo - hi);                                                      \
        for (int l = 0; l < rest; ++l) out[q0 + l] = r[l];                                    \
    }                                                                                         \
}

DEFINE_GAPS(gaps_f32, exp_gap_f64, 2)
DEFINE_GAPS(gaps_f64, exp_half_f64, 2)

/* (a): sum_q (2q - m + 1) s_q over the ordered s, as sum_q (2q - m + 1) (s_q - s_{m/2}) (the
 * weights sum to 0; the centred terms are smaller, so is their rounding), HALF terms at a time in
 * two vectors (the weights are integers, exact in double), their lanes added in order at the end. */
INLINE double spread_of(const double *s, int64_t m) {
    const double centre = s[m / 2];
    half_f64 acc0 = {0}, acc1 = {0}, weight, block0, block1;
    for (int l = 0; l < HALF; ++l) weight[l] = (double)(2 * l - m + 1);
    int64_t q = 0;
    for (; q + 2 * HALF <= m; q += 2 * HALF) {
        memcpy(&block0, s + q, sizeof block0);
        memcpy(&block1, s + q + HALF, sizeof block1);
        acc0 += weight * (block0 - centre);
        acc1 += (weight + 2.0 * HALF) * (block1 - centre);
        weight += 4.0 * HALF;
    }
    double total = 0.0;
    for (int l = 0; l < HALF; ++l) total += acc0[l] + acc1[l];
    for (; q < m; ++q) total += (double)(2 * q - m + 1) * (s[q] - centre);
    return total;
}

/* Float64: insertion passes by the exact values over the values sorted by their float roundings
 * (sv), their columns moved along. */
static void exact_fix(double *sv, int32_t *col, int64_t m) {
    for (int64_t j = 1; j < m; ++j) {
        const double x = sv[j];
        const int32_t c = col[j];
        int64_t p = j;
        while (p > 0 && sv[p - 1] > x) { sv[p] = sv[p - 1]; col[p] = col[p - 1]; --p; }
        sv[p] = x;
        col[p] = c;
    }
}

/* The scratch of one group, carved from one buffer: key, pad (uint64, m each); sv (double, m); rl,
 * r, g (double, LANES m each: rows of r_q, then of the gradient terms; r and g in lane order);
 * v (T, m); vf (float, m); wk (uint32, m + 2 WINDOW + LANES); wp, bucket (int32, m each), start
 * (2m + LANES), col (LANES m). Part j starts at 192 j bytes past a 4 KiB boundary: parts read and
 * written in step at the same index would otherwise often be a multiple of 4 KiB apart (m = 999:
 * sv and rl 8 KiB), and the CPU then takes each load for a read of the store before it. */
struct parts {
    uint64_t *key, *pad;
    double *sv, *rl, *r, *g;
    void *v;
    float *vf;
    uint32_t *wk;
    int32_t *wp, *bucket, *start, *col;
};

enum { PARTS = 13 };

/* The parts' offsets into at[] in the order of struct parts; returns the total size in bytes. */
static size_t layout(int64_t k, size_t t_size, size_t at[PARTS]) {
    const size_t mm = (size_t)(k > 1 ? k - 1 : 1);
    const size_t bytes[PARTS] = {
        mm * sizeof(uint64_t), mm * sizeof(uint64_t), (mm + 1) * sizeof(double), (LANES * mm + 1) * sizeof(double),
        LANES * mm * sizeof(double), LANES * mm * sizeof(double), mm * t_size, mm * sizeof(float),
        (mm + 2 * WINDOW + LANES) * sizeof(uint32_t), (mm + 1) * sizeof(int32_t), (mm + 1) * sizeof(int32_t),
        2 * (ORDER_BUCKETS(mm) + 2 * LANES) * sizeof(int32_t), LANES * (mm + 1) * sizeof(int32_t)};
    size_t end = 0;
    for (int j = 0; j < PARTS; ++j) {
        at[j] = (end + 4095) / 4096 * 4096 + 192 * (size_t)j;
        end = at[j] + bytes[j];
    }
    return end;
}

static size_t group_bytes(int64_t k, size_t t_size) {
    size_t at[PARTS];
    return layout(k, t_size, at);
}

static struct parts carve(char *buf, int64_t k, size_t t_size) {
    size_t at[PARTS];
    layout(k, t_size, at);
    const struct parts s = {
        (uint64_t *)(buf + at[0]), (uint64_t *)(buf + at[1]), (double *)(buf + at[2]), (double *)(buf + at[3]),
        (double *)(buf + at[4]), (double *)(buf + at[5]), buf + at[6], (float *)(buf + at[7]),
        (uint32_t *)(buf + at[8]), (int32_t *)(buf + at[9]), (int32_t *)(buf + at[10]),
        (int32_t *)(buf + at[11]), (int32_t *)(buf + at[12])};
    return s;
}

/* 1 if the k logits are all finite (inf * 0 and NaN * 0 are NaN; the order of the sum is free). */
#define DEFINE_FINITE(NAME, T)                                                                \
static inline __attribute__((always_inline)) int NAME(const T *xi, int64_t k) {               \
    T check = 0;                                                                              \
    _Pragma("omp simd reduction(+:check)")                                                    \
    for (int64_t j = 0; j < k; ++j) check += xi[j] * (T)0;                                    \
    return check == 0;                                                                        \
}

DEFINE_FINITE(finite_f32, float)
DEFINE_FINITE(finite_f64, double)

/* Lane l of a group, for a finite row xi with label `label` and m >= 1 other logits: those logits
 * ordered (col[l k ..]: places by column for float32, columns by place for float64), the
 * recursion inputs r_q into column l of r, the largest
 * other logit s_{m-1} into *top; returns sum_q (2q - m + 1) s_q, (a). */
#define DEFINE_PREPARE(NAME, T, ORDER, GAPS, ...)                                             \
static inline __attribute__((always_inline)) double NAME(const T *xi, int64_t label, int64_t m, int l, \
                                                         const struct parts *s, double *top) { \
    int32_t *col = s->col + l * (m + 1);                                                      \
    ORDER(xi, (T *)s->v, m, label, s->sv, col, s->wk, s->wp, s->bucket, s->start, s->key, s->pad __VA_ARGS__); \
    GAPS(s->sv, m, s->rl + l * m);                                                            \
    *top = s->sv[m - 1];                                                                      \
    return spread_of(s->sv, m);                                                               \
}

DEFINE_PREPARE(prepare_f32, float, order_f32, gaps_f32)
DEFINE_PREPARE(prepare_f64, double, sorted_f64, gaps_f64, , s->vf)

/* The 8 x 8 transposition of v[0..8) in registers: out[j][i] = v[i][j] (unpack, then 4 x 4 and
 * 2 x 2 blocks of 128-bit lanes). */
INLINE void transpose_8x8(const half_f64 *v, half_f64 *out) {
    half_f64 a[8], b[8];
    for (int i = 0; i < 8; i += 2) {
        a[i] = __builtin_shufflevector(v[i], v[i + 1], 0, 8, 2, 10, 4, 12, 6, 14);
        a[i + 1] = __builtin_shufflevector(v[i], v[i + 1], 1, 9, 3, 11, 5, 13, 7, 15);
    }
    for (int i = 0; i < 8; i += 4)
        for (int j = 0; j < 2; ++j) {
            b[i + j] = __builtin_shufflevector(a[i + j], a[i + j + 2], 0, 1, 8, 9, 4, 5, 12, 13);
            b[i + j + 2] = __builtin_shufflevector(a[i + j], a[i + j + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        }
    for (int j = 0; j < 4; ++j) {
        out[j] = __builtin_shufflevector(b[j], b[j + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        out[j + 4] = __builtin_shufflevector(b[j], b[j + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
}

/* lanes[q LANES + l] = rows[l m + q] for the LANES rows of m values: 8 x 8 tiles transposed in
 * registers (element by element it took 5% of the kernel), the last m % 8 columns one by one. */
INLINE void to_lanes(const double *rows, int64_t m, double *lanes) {
    int64_t q0 = 0;
    for (; q0 + 8 <= m; q0 += 8)
        for (int l0 = 0; l0 < LANES; l0 += 8) {
            half_f64 v[8], t[8];
            for (int i = 0; i < 8; ++i) memcpy(v + i, rows + (l0 + i) * m + q0, sizeof v[i]);
            transpose_8x8(v, t);
            for (int j = 0; j < 8; ++j) memcpy(lanes + (q0 + j) * LANES + l0, t + j, sizeof t[j]);
        }
    for (; q0 < m; ++q0)
        for (int l = 0; l < LANES; ++l) lanes[q0 * LANES + l] = rows[l * m + q0];
}

/* The inverse: rows[l m + q] = lanes[q LANES + l], by the same tiles (the gradient scatter then
 * reads each row in order; reading the lanes with a stride of LANES cost 2x more). */
INLINE void from_lanes(const double *lanes, int64_t m, double *rows) {
    int64_t q0 = 0;
    for (; q0 + 8 <= m; q0 += 8)
        for (int l0 = 0; l0 < LANES; l0 += 8) {
            half_f64 v[8], t[8];
            for (int j = 0; j < 8; ++j) memcpy(v + j, lanes + (q0 + j) * LANES + l0, sizeof v[j]);
            transpose_8x8(v, t);
            for (int i = 0; i < 8; ++i) memcpy(rows + (l0 + i) * m + q0, t + i, sizeof t[i]);
        }
    for (; q0 < m; ++q0)
        for (int l = 0; l < LANES; ++l) rows[l * m + q0] = lanes[q0 * LANES + l];
}

/* One group of LANES rows from `first`: BD_i, S_i and CE_i into rows[i], rows[n + i] and
 * rows[2n + i], the gradient w_ce dCE/dl + w_bd dBD/dl + w_be dS/dl (w[] = {w_ce, w_bd, w_be})
 * into grad. The chains' part comes back to row layout (from_lanes), then float32 rows gather
 * it in BD's pass by each column's place in the order (col holds the places there: one pass
 * over the row, no scattered stores; 4% of the kernel), float64 rows scatter it to their
 * sorted columns (col holds the columns) before BD's pass adds its part; the label's entry is
 * set last. Returns the number of out-of-range labels. state: 0 no row, -1 bad label,
 * 1 finite, 2 not (NaN values and gradient). */
#define DEFINE_GROUP(NAME, T, BD, CHAINS, FINITE, PREPARE, SCATTER)                           \
WIDE_SIMD static int64_t NAME(const T *x, const int64_t *y, int64_t n, int64_t k, int64_t first, \
                              const double *w, T *grad, double *rows, char *buf) {            \
    const int64_t m = k - 1;                                                                  \
    const struct parts s = carve(buf, k, sizeof(T));                                          \
    double spread[LANES], value[LANES] = {0}, top[LANES], ly[LANES], ce[LANES] = {0}, py[LANES]; \
    int state[LANES], live[LANES], lives = 0;                                                 \
    for (int l = 0; l < LANES; ++l) {                                                         \
        const int64_t i = first + l, label = i < n ? y[i] : -1;                               \
        state[l] = i >= n ? 0 : label < 0 || label >= k ? -1 : FINITE(x + i * k, k) ? 1 : 2;  \
        spread[l] = state[l] == 2 ? NAN : 0.0;                                                \
        top[l] = ly[l] = 0.0;                                                                 \
        if (state[l] == 1 && m > 0) {                                                         \
            spread[l] = PREPARE(x + i * k, label, m, l, &s, top + l);                         \
            ly[l] = (double)x[i * k + label];                                                 \
            live[lives++] = l;                                                                \
        } else memset(s.rl + l * m, 0, (size_t)m * sizeof(double));                          \
    }                                                                                         \
    if (m > 0) {                                                                              \
        to_lanes(s.rl, m, s.r);                                                               \
        CHAINS(s.r, m, top, ly, w[0], w[2], s.g, value, ce, py);                              \
    }                                                                                         \
    if (m > 0) from_lanes(s.g, m, s.rl);                                                      \
    for (int j = 0; j < lives && SCATTER; ++j) {   /* to the sorted columns */                \
        const int l = live[j];                                                                \
        const int32_t *cl = s.col + l * k;                                                    \
        const double *gl = s.rl + l * m;                                                      \
        T *gi = grad + (first + l) * k;                                                       \
        for (int64_t q = 0; q < m; ++q) gi[cl[q]] = (T)gl[q];                                 \
    }                                                                                         \
    int64_t bad = 0;                                                                          \
    for (int l = 0; l < LANES && first + l < n; ++l) {                                        \
        const int64_t i = first + l;                                                          \
        T *gi = grad + i * k;                                                                 \
        rows[i] = rows[n + i] = rows[2 * n + i] = 0.0;                                        \
        if (state[l] < 0) { bad += 1; continue; }                                             \
        if (state[l] == 2 || m == 0) memset(gi, 0, (size_t)k * sizeof(T));                    \
        gi[y[i]] = 0;                                                                         \
        rows[i] = BD(x + i * k, y[i], k, (T)w[1], gi, state[l] == 1 && m > 0 ? s.rl + l * m : NULL, \
                     s.col + l * k);                                                          \
        rows[n + i] = -spread[l] - 2.0 * value[l];                                            \
        rows[2 * n + i] = state[l] == 2 ? NAN : ce[l];                                        \
        if (state[l] == 1 && m > 0) gi[y[i]] += (T)(w[0] * (py[l] - 1.0));                    \
        if (state[l] == 2) for (int64_t j = 0; j < k; ++j) gi[j] = (T)NAN;                    \
    }                                                                                         \
    return bad;                                                                               \
}

DEFINE_GROUP(group_f32, float, bd_f32, chains_f32, finite_f32, prepare_f32, 0)
DEFINE_GROUP(group_f64, double, bd_f64, chains_f64, finite_f64, prepare_f64, 1)

/* The scratch of one group: one buffer per thread, kept between calls (a fresh allocation of this
 * size is an mmap, whose page faults cost more than the whole group). */
static char *scratch(size_t bytes) {
    static _Thread_local char *buf = NULL;
    static _Thread_local size_t capacity = 0;
    if (bytes > capacity) {
        free(buf);
        buf = malloc(bytes);
        capacity = buf != NULL ? bytes : 0;
    }
    return buf;
}

/* For n rows of k logits: sums[0] = sum_i BD_i, sums[1] = sum_i S_i, sums[2] = sum_i CE_i, and
 * grad = w_ce dCE/dx + w_bd dBD/dx + w_be dS/dx (the weights of the caller's loss, so that one
 * pass gives its gradient). */
#define DEFINE_KERNEL(NAME, T, GROUP)                                                         \
int NAME(const T *x, const int64_t *y, int64_t n, int64_t k, double w_ce, double w_bd, double w_be, \
         T *grad, double *sums) {                                                             \
    double *rows = malloc((size_t)(3 * (n > 0 ? n : 1)) * sizeof(double));                   \
    if (rows == NULL) return 2;                                                              \
    const double w[3] = {w_ce, w_bd, w_be};                                                  \
    const int64_t groups = (n + LANES - 1) / LANES;                                          \
    int64_t bad = 0, oom = 0;                                                                \
    _Pragma("omp parallel for schedule(dynamic, 1) reduction(+:bad, oom) if (n * k >= (1 << 14))") \
    for (int64_t grp = 0; grp < groups; ++grp) {                                             \
        char *buf = scratch(group_bytes(k, sizeof(T)));                                      \
        if (buf == NULL) { oom += 1; continue; }                                             \
        bad += GROUP(x, y, n, k, grp * LANES, w, grad, rows, buf);                           \
    }                                                                                        \
    double total[3] = {0.0, 0.0, 0.0};                                                       \
    for (int64_t i = 0; i < n; ++i)                                                          \
        for (int j = 0; j < 3; ++j) total[j] += rows[j * n + i];                             \
    free(rows);                                                                              \
    for (int j = 0; j < 3; ++j) sums[j] = total[j];                                          \
    return oom ? 2 : bad ? 1 : 0;                                                            \
}

DEFINE_KERNEL(calbench_cpc_penalties_f32, float, group_f32)
DEFINE_KERNEL(calbench_cpc_penalties_f64, double, group_f64)
