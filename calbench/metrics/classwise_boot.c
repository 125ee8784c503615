/* tace under the bootstrap (calbench/metrics/classwise.py, `tace_of`; compiled and loaded by
 * calbench/native.py). Nixon et al. 2019's thresholded adaptive calibration error of each row of a
 * (b, n) count matrix W: for class k, the entries p_ik > 1e-3 sorted by (p, 1[y = k]) form a
 * multiset in which sample i appears w_i times; its T_k = sum w_i copies are cut into M equal-mass
 * groups (integer sizes differing by at most one, the first T_k % M one larger: group g ends at
 * cumulative position e_g = (T_k / M) g + min(g, T_k % M)), and the class adds
 * sum_g |sum of 1[y = k] - p over the group's positions| / max(T_k, 1). TACE = (1/K) sum_k.
 *
 * The same values as the NumPy path (class_gap_sum), which finds each e_g by a search over the
 * cumulative counts and splits the straddling sample; here one pass walks the sorted entries and
 * closes a group when the running count reaches e_g. Least work per entry and resample: one count
 * gathered, one integer add (the running count), one multiply-add (the group's gap sum).
 *
 * Layout: LANES resamples at a time, their counts packed as bytes per sample (packed[i][lane],
 * 16 bytes per sample, so a 50,000-sample group is 800 KB and stays in L2 while every class streams
 * its (index, gap) entries past it); per entry the lanes take one vector add (counts) and one
 * vector multiply and add (sums). The group ends are checked once per CHUNK entries: a lane whose
 * count reached its next end within the chunk is rolled back to the chunk's start (exact: saved
 * copies) and replayed one entry at a time. T_k comes from a first pass over the smaller side of
 * the threshold (the row's total minus the entries at or below it, when those are fewer). OpenMP
 * spreads the (lane group, class) passes over threads; every pass writes its own slot and the
 * classes are summed in order, so the result does not depend on the thread count.
 *
 * Also here: the two O(K n) steps of building the class orders (calbench_tace_keys,
 * calbench_tace_finish), around NumPy's argsort.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LANES 16
#define CHUNK 16
#define NO_END INT32_MAX
#ifdef _OPENMP
#include <omp.h>
#define THREADS() omp_get_max_threads()
#define THREAD() omp_get_thread_num()
#else
#define THREADS() 1
#define THREAD() 0
#endif

/* Counts of rows g*LANES .. g*LANES+LANES-1 of W as bytes per sample (rows past b are zero) and
 * their totals; 1 when a count is not an integer in [0, 255] or a total overflows int32. */
static int pack_group(const double *W, int64_t b, int64_t n, int64_t g, uint8_t *packed, int32_t *rowsum)
{
    for (int l = 0; l < LANES; l++) {
        int64_t r = g * LANES + l, sum = 0;
        if (r >= b) {
            for (int64_t i = 0; i < n; i++) packed[i * LANES + l] = 0;
            rowsum[l] = 0;
            continue;
        }
        const double *w = W + r * n;
        for (int64_t i = 0; i < n; i++) {
            double v = w[i];
            if (!(v >= 0.0 && v <= 255.0) || v != (double)(uint8_t)v) return 1;
            packed[i * LANES + l] = (uint8_t)v;
            sum += (uint8_t)v;
        }
        if (sum > INT32_MAX) return 1;
        rowsum[l] = (int32_t)sum;
    }
    return 0;
}

typedef struct {            /* one class's walk for LANES resamples */
    int32_t count[LANES];   /* copies walked so far */
    int32_t next[LANES];    /* cumulative position of the group end ahead (NO_END: none left) */
    int32_t group[LANES];   /* its number g, 1..bins */
    int32_t base[LANES], extra[LANES];
    double acc[LANES];      /* gap sum of the open group */
    double total[LANES];    /* sum of |gap sum| of the closed groups */
} Walk;

static inline int32_t group_end(const Walk *s, int l, int32_t g)
{
    return s->base[l] * g + (g < s->extra[l] ? g : s->extra[l]);
}

/* Lane l takes `w` copies of an entry with gap `gap`, closing every group end it reaches. */
static inline void take(Walk *s, int l, int32_t w, double gap, int32_t bins)
{
    int32_t from = s->count[l], to = from + w;
    while (s->next[l] <= to) {
        s->acc[l] += (double)(s->next[l] - from) * gap;
        s->total[l] += fabs(s->acc[l]);
        s->acc[l] = 0.0;
        from = s->next[l];
        s->group[l] += 1;
        s->next[l] = s->group[l] <= bins ? group_end(s, l, s->group[l]) : NO_END;
    }
    s->acc[l] += (double)(to - from) * gap;
    s->count[l] = to;
}

/* T_k of each lane: the counts of the entries above the threshold (order[start:]), summed over
 * whichever side of `start` is shorter. */
static void class_totals(const uint8_t *packed, const int32_t *order, int64_t n, int64_t start,
                         const int32_t *rowsum, int32_t *T)
{
    int32_t s[LANES] = {0};
    int below = start <= n - start;
    int64_t lo = below ? 0 : start, hi = below ? start : n;
    for (int64_t i = lo; i < hi; i++) {
        const uint8_t *w = packed + (int64_t)order[i] * LANES;
        for (int l = 0; l < LANES; l++) s[l] += w[l];
    }
    for (int l = 0; l < LANES; l++) T[l] = below ? rowsum[l] - s[l] : s[l];
}

static void start_walk(Walk *s, const int32_t *T, int32_t bins)
{
    for (int l = 0; l < LANES; l++) {
        s->count[l] = 0;
        s->group[l] = 1;
        s->base[l] = T[l] / bins;
        s->extra[l] = T[l] % bins;
        s->next[l] = T[l] > 0 ? group_end(s, l, 1) : NO_END;
        s->acc[l] = 0.0;
        s->total[l] = 0.0;
    }
}

/* The walk's vector part without AVX-512 (walk_class below has its own): every lane takes entries
 * lo .. hi-1, no group end checked. With AVX2 one sample's 16 count bytes widen to int32 (the
 * running counts) and to float64 (times the entry's gap, added to the open groups' sums);
 * elsewhere the same per lane. */
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

static inline void walk_chunk(const uint8_t *restrict packed, const int32_t *restrict order,
                              const double *restrict gap, int64_t lo, int64_t hi,
                              int32_t *restrict count, double *restrict acc)
{
#if defined(__AVX2__)
    __m256i c0 = _mm256_loadu_si256((const __m256i *)count), c1 = _mm256_loadu_si256((const __m256i *)(count + 8));
    __m256d a[4];
    for (int q = 0; q < 4; q++) a[q] = _mm256_loadu_pd(acc + 4 * q);
    for (int64_t i = lo; i < hi; i++) {
        const uint8_t *p = packed + (int64_t)order[i] * LANES;
        __m256i w0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
        __m256i w1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8)));
        __m256d g = _mm256_set1_pd(gap[i]);
        c0 = _mm256_add_epi32(c0, w0);
        c1 = _mm256_add_epi32(c1, w1);
        a[0] = _mm256_add_pd(a[0], _mm256_mul_pd(_mm256_cvtepi32_pd(_mm256_castsi256_si128(w0)), g));
        a[1] = _mm256_add_pd(a[1], _mm256_mul_pd(_mm256_cvtepi32_pd(_mm256_extracti128_si256(w0, 1)), g));
        a[2] = _mm256_add_pd(a[2], _mm256_mul_pd(_mm256_cvtepi32_pd(_mm256_castsi256_si128(w1)), g));
        a[3] = _mm256_add_pd(a[3], _mm256_mul_pd(_mm256_cvtepi32_pd(_mm256_extracti128_si256(w1, 1)), g));
    }
    _mm256_storeu_si256((__m256i *)count, c0);
    _mm256_storeu_si256((__m256i *)(count + 8), c1);
    for (int q = 0; q < 4; q++) _mm256_storeu_pd(acc + 4 * q, a[q]);
#else
    for (int64_t i = lo; i < hi; i++) {
        const uint8_t *restrict w = packed + (int64_t)order[i] * LANES;
        double g = gap[i];
        for (int l = 0; l < LANES; l++) {
            count[l] += w[l];
            acc[l] += (double)w[l] * g;
        }
    }
#endif
}

/* Lane l redoes entries lo .. hi-1 one at a time (its state rolled back to lo), closing its ends. */
static void replay(Walk *s, int l, const uint8_t *packed, const int32_t *order, const double *gap,
                   int64_t lo, int64_t hi, int32_t bins)
{
    for (int64_t i = lo; i < hi; i++) {
        int32_t w = packed[(int64_t)order[i] * LANES + l];
        if (w) take(s, l, w, gap[i], bins);
    }
}

#if defined(__AVX512F__)
/* One 16-byte load per entry widened to the running counts (int32) and, times the gap, to the
 * open groups' sums (float64); even and odd entries go to two sums (two dependency chains),
 * joined at each chunk's end, where one compare finds the lanes that reached an end. */
#define WIDEN(p) _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p)))
#define LO(w) _mm512_cvtepi32_pd(_mm512_castsi512_si256(w))
#define HI(w) _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(w, 1))
static void walk_class(const uint8_t *restrict packed, const int32_t *restrict order,
                       const double *restrict gap, int64_t start, int64_t n, Walk *s, int32_t bins)
{
    __m512i c = _mm512_loadu_si512(s->count), next = _mm512_loadu_si512(s->next);
    __m512d a0 = _mm512_loadu_pd(s->acc), a1 = _mm512_loadu_pd(s->acc + 8);
    for (int64_t lo = start; lo < n; lo += CHUNK) {
        int64_t hi = lo + CHUNK < n ? lo + CHUNK : n, i = lo;
        __m512i c_lo = c;
        __m512d a0_lo = a0, a1_lo = a1, b0 = _mm512_setzero_pd(), b1 = _mm512_setzero_pd();
        for (; i + 1 < hi; i += 2) {
            __m512i w = WIDEN(packed + (int64_t)order[i] * LANES), v = WIDEN(packed + (int64_t)order[i + 1] * LANES);
            __m512d g = _mm512_set1_pd(gap[i]), h = _mm512_set1_pd(gap[i + 1]);
            c = _mm512_add_epi32(_mm512_add_epi32(c, w), v);
            a0 = _mm512_add_pd(a0, _mm512_mul_pd(LO(w), g));
            a1 = _mm512_add_pd(a1, _mm512_mul_pd(HI(w), g));
            b0 = _mm512_add_pd(b0, _mm512_mul_pd(LO(v), h));
            b1 = _mm512_add_pd(b1, _mm512_mul_pd(HI(v), h));
        }
        if (i < hi) {
            __m512i w = WIDEN(packed + (int64_t)order[i] * LANES);
            __m512d g = _mm512_set1_pd(gap[i]);
            c = _mm512_add_epi32(c, w);
            a0 = _mm512_add_pd(a0, _mm512_mul_pd(LO(w), g));
            a1 = _mm512_add_pd(a1, _mm512_mul_pd(HI(w), g));
        }
        a0 = _mm512_add_pd(a0, b0);
        a1 = _mm512_add_pd(a1, b1);
        __mmask16 crossed = _mm512_cmpge_epi32_mask(c, next);
        if (!crossed) continue;
        int32_t count_lo[LANES];
        double acc_lo[LANES];
        _mm512_storeu_si512(s->count, c);
        _mm512_storeu_pd(s->acc, a0);
        _mm512_storeu_pd(s->acc + 8, a1);
        _mm512_storeu_si512(count_lo, c_lo);
        _mm512_storeu_pd(acc_lo, a0_lo);
        _mm512_storeu_pd(acc_lo + 8, a1_lo);
        for (int l = 0; l < LANES; l++) {
            if (!((crossed >> l) & 1)) continue;
            s->count[l] = count_lo[l];
            s->acc[l] = acc_lo[l];
            replay(s, l, packed, order, gap, lo, hi, bins);
        }
        c = _mm512_loadu_si512(s->count);
        next = _mm512_loadu_si512(s->next);
        a0 = _mm512_loadu_pd(s->acc);
        a1 = _mm512_loadu_pd(s->acc + 8);
    }
    _mm512_storeu_si512(s->count, c);
    _mm512_storeu_pd(s->acc, a0);
    _mm512_storeu_pd(s->acc + 8, a1);
}
#else
/* walk_chunk's CHUNK entries at a time; a lane that reached its next end is rolled back and
 * replayed entry by entry. */
static void walk_class(const uint8_t *packed, const int32_t *order, const double *gap, int64_t start,
                       int64_t n, Walk *s, int32_t bins)
{
    for (int64_t lo = start; lo < n; lo += CHUNK) {
        int64_t hi = lo + CHUNK < n ? lo + CHUNK : n;
        int32_t count_lo[LANES];
        double acc_lo[LANES];
        memcpy(count_lo, s->count, sizeof count_lo);
        memcpy(acc_lo, s->acc, sizeof acc_lo);
        walk_chunk(packed, order, gap, lo, hi, s->count, s->acc);
        for (int l = 0; l < LANES; l++) {
            if (s->count[l] < s->next[l]) continue;
            s->count[l] = count_lo[l];
            s->acc[l] = acc_lo[l];
            replay(s, l, packed, order, gap, lo, hi, bins);
        }
    }
}
#endif

/* sum_g |group gap sum| / max(T_k, 1) of class k for the LANES resamples of one packed group. */
static void class_pass(const uint8_t *packed, const int32_t *order, const double *gap, int64_t n,
                       int64_t start, int32_t bins, const int32_t *rowsum, double *out)
{
    int32_t T[LANES];
    Walk s;
    class_totals(packed, order, n, start, rowsum, T);
    start_walk(&s, T, bins);
    walk_class(packed, order, gap, start, n, &s, bins);
    for (int l = 0; l < LANES; l++) out[l] = s.total[l] / (T[l] > 1 ? (double)T[l] : 1.0);
}

/* out[r] = TACE of row r of the (b, n) float64 counts W (columns in the samples' numbering).
 * order (K, n): each class's sample indices sorted by (p, 1[y = k]); gap (K, n): 1[y = k] - p in
 * that order; start[k]: how many of class k's entries are at or below the threshold (they sort
 * first and are skipped). Returns 0; 1 when a count is not an integer in [0, 255] (the caller then
 * takes the NumPy path); 2 when memory runs out. */
int calbench_tace_rows(int64_t n, int64_t K, int32_t bins, const int32_t *order, const int64_t *start,
                       const double *gap, const double *W, int64_t b, double *out)
{
    int64_t groups = (b + LANES - 1) / LANES;
    uint8_t *packed = malloc((size_t)(groups * n * LANES) + 1);
    int32_t *rowsum = malloc(sizeof(int32_t) * (size_t)(groups * LANES) + 1);
    double *res = malloc(sizeof(double) * (size_t)(K * groups * LANES) + 1);
    int bad = 0;
    if (!packed || !rowsum || !res) {
        free(packed); free(rowsum); free(res);
        return 2;
    }
#pragma omp parallel for schedule(static) reduction(| : bad)
    for (int64_t g = 0; g < groups; g++)
        bad |= pack_group(W, b, n, g, packed + g * n * LANES, rowsum + g * LANES);
    if (!bad) {
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
        for (int64_t g = 0; g < groups; g++)
            for (int64_t k = 0; k < K; k++)
                class_pass(packed + g * n * LANES, order + k * n, gap + k * n, n, start[k], bins,
                           rowsum + g * LANES, res + (k * groups + g) * LANES);
        for (int64_t r = 0; r < b; r++) {
            double sum = 0.0;
            for (int64_t k = 0; k < K; k++) sum += res[(k * groups + r / LANES) * LANES + r % LANES];
            out[r] = sum / (double)K;
        }
    }
    free(packed); free(rowsum); free(res);
    return bad ? 1 : 0;
}

/* ClassOrders' sort keys (classwise.py): key[k][i] = (bits of P[i][k]) << 1 | 1[labels[i] = k] for
 * the (n, K) row-major probabilities (p >= 0, so the integer order is the order by (p, target)),
 * read 8 classes (one cache line of a row) at a time, in tiles of rows whose 8 key rows stay in
 * cache. */
void calbench_tace_keys(int64_t n, int64_t K, const double *P, const int64_t *labels, uint64_t *key)
{
#pragma omp parallel for schedule(static)
    for (int64_t k0 = 0; k0 < K; k0 += 8) {
        int64_t k1 = k0 + 8 < K ? k0 + 8 : K;
        for (int64_t i = 0; i < n; i++) {
            for (int64_t k = k0; k < k1; k++) {
                uint64_t bits;
                memcpy(&bits, P + i * K + k, sizeof bits);
                key[k * n + i] = (bits << 1) | (uint64_t)(labels[i] == k);
            }
        }
    }
}

/* In place, from the (K, n) keys and each class's argsort `sorted` of them (NULL: the keys are
 * sorted): key becomes the gap 1[y = k] - p in sorted order (as float64), the first K * n int32 of
 * `sorted` the sample indices (int32, (K, n)), start[k] the count of class k's entries at or below
 * the threshold. In place so that no further (K, n) array is touched (the first touch of a page
 * costs more than the pass). Returns 0, or 2 when memory runs out (nothing changed). */
int calbench_tace_finish(int64_t n, int64_t K, uint64_t *key, int64_t *sorted, double threshold, int64_t *start)
{
    uint64_t *rows = sorted ? malloc(sizeof(uint64_t) * (size_t)(n * THREADS()) + 1) : NULL;
    if (sorted && !rows) return 2;
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < K; k++) {
        uint64_t *kr = key + k * n, *row = rows ? rows + (int64_t)THREAD() * n : NULL;
        const int64_t *sr = sorted ? sorted + k * n : NULL;
        int64_t below = 0;
        if (sr) memcpy(row, kr, sizeof(uint64_t) * (size_t)n);
        for (int64_t i = 0; i < n; i++) {
            uint64_t kk = sr ? row[sr[i]] : kr[i], bits = kk >> 1;
            double p, g;
            memcpy(&p, &bits, sizeof p);
            g = (double)(kk & 1) - p;
            memcpy(kr + i, &g, sizeof g);
            below += p <= threshold;
        }
        start[k] = below;
    }
    free(rows);
    if (sorted) {                   /* narrow front to back: element e is read before it is overwritten */
        int32_t *order = (int32_t *)sorted;
        for (int64_t e = 0; e < K * n; e++) order[e] = (int32_t)sorted[e];
    }
    return 0;
}
