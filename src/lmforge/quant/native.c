/* lmforge's decode kernels: weight-only int8 (a scale per output channel) and int4 (a scale and an
 * offset per group of inputs) matrix products for a few input rows, float32 or bfloat16 activations.
 * Each weight row is read from memory once for up to four input rows (int4: eight), so that a decode
 * step streams its weights near memory bandwidth. Built by lmforge/quant/native.py for this CPU (-O3 -march=native,
 * OpenMP over output channels): 512-bit integer multiply-accumulates (VPDPWSSD) where the CPU has AVX-512
 * VNNI, AVX2 intrinsics where it has those, plain loops otherwise.
 *
 * int8: out[m, n] = scale[n] * sum_g sx[m, g] * sum_{k in g} x16[m, k] * w[n, k] + bias[n]: the
 * activations enter as int16 per row and group of 32-128 inputs (as int4's do, below), so that 16
 * products of codes and activations are one integer multiply-add, half the instructions of converting
 * the codes to float32 (which had left the kernel short of memory bandwidth, at 12-15 GB/s a core).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define LMF_AVX512 1 /* one VPDPWSSD multiplies 32 codes by 32 activations and adds the products in */
#endif
#if defined(__AVX2__) || defined(LMF_AVX512)
#include <immintrin.h>
#endif

#define ROWS 4    /* input rows per pass over a weight row (int8) */
#define ROWS_I4 8 /* int4: expanding the codes costs more than the multiply-adds, so more rows share it */

/* Ask for weight row `ahead` (rows of `bytes`) before it is needed, about 2 KB past the row being read
 * (`rows_ahead`, worked out once a call): the hardware prefetcher alone left a streamed row short of the
 * memory's pace (C harness, Xeon, 2 threads, runs on a shared box varying by 20-30%: bf16 15 -> 20-24
 * GB/s, int4 11 -> 15-16; int8 about the same) */
static inline long rows_ahead(long bytes) { return bytes >= 2048 ? 1 : 2048 / bytes; }

static inline __attribute__((always_inline)) void prefetch_row(const void *rows, long ahead, long N, long bytes) {
    if (ahead >= N) return;
    const char *p = (const char *)rows + ahead * bytes;
    for (long i = 0; i < bytes; i += 64) __builtin_prefetch(p + i);
}

static void to_f32(const void *x, int bf16, float *dst, long n) {
    if (!bf16) {
        memcpy(dst, x, n * sizeof(float));
        return;
    }
    const uint16_t *s = (const uint16_t *)x;
    for (long i = 0; i < n; i++) {
        uint32_t u = (uint32_t)s[i] << 16;
        memcpy(dst + i, &u, sizeof u);
    }
}

static void store(void *out, int bf16, long i, float v) {
    if (!bf16) {
        ((float *)out)[i] = v;
        return;
    }
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        ((uint16_t *)out)[i] = (uint16_t)((u >> 16) | 0x40); /* NaN stays NaN */
        return;
    }
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
    ((uint16_t *)out)[i] = (uint16_t)(u >> 16);
}

#ifdef __AVX2__
static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

/* res[r] = sum_g sx[r, g] * sum_{k in g} x16[r * K + k] * w[k] for R (a constant at each call) rows;
 * groups of `group` inputs, a multiple of 32 (per lane, a group's int32 sum stays below 2^31 up to
 * groups of 4096 inputs: each multiply-add adds two products of at most 127 x 32767) */
static inline __attribute__((always_inline)) void dot_i8(const int16_t *x16, const float *sx, long K,
                                                         const int8_t *w, long group, long groups, int R,
                                                         float *res) {
#if defined(LMF_AVX512)
    __m512 total[ROWS];
    for (int r = 0; r < R; r++) total[r] = _mm512_setzero_ps();
    for (long g = 0, g0 = 0; g0 < K; g++, g0 += group) {
        __m512i acc[ROWS][2]; /* two a row, blocks of 32 in turn: a multiply-accumulate takes 4-5 cycles */
        for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
        for (long k = g0; k < g0 + group; k += 64) {
            __m512i w0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(w + k)));
            for (int r = 0; r < R; r++)
                acc[r][0] = _mm512_dpwssd_epi32(acc[r][0], w0, _mm512_loadu_si512(x16 + r * K + k));
            if (k + 32 == g0 + group) break; /* a group of 32 */
            __m512i w1 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(w + k + 32)));
            for (int r = 0; r < R; r++)
                acc[r][1] = _mm512_dpwssd_epi32(acc[r][1], w1, _mm512_loadu_si512(x16 + r * K + k + 32));
        }
        for (int r = 0; r < R; r++)
            total[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc[r][0], acc[r][1])),
                                       _mm512_set1_ps(sx[r * groups + g]), total[r]);
    }
    for (int r = 0; r < R; r++) res[r] = _mm512_reduce_add_ps(total[r]);
#elif defined(__AVX2__)
    __m256 total[ROWS];
    for (int r = 0; r < R; r++) total[r] = _mm256_setzero_ps();
    for (long g = 0, g0 = 0; g0 < K; g++, g0 += group) {
        __m256i acc[ROWS];
        for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_si256();
        for (long k = g0; k < g0 + group; k += 32) {
            __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + k)));
            __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + k + 16)));
            for (int r = 0; r < R; r++) {
                const int16_t *xr = x16 + r * K + k;
                __m256i p0 = _mm256_madd_epi16(w0, _mm256_loadu_si256((const __m256i *)xr));
                __m256i p1 = _mm256_madd_epi16(w1, _mm256_loadu_si256((const __m256i *)(xr + 16)));
                acc[r] = _mm256_add_epi32(acc[r], _mm256_add_epi32(p0, p1));
            }
        }
        for (int r = 0; r < R; r++)
            total[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r]), _mm256_set1_ps(sx[r * groups + g]), total[r]);
    }
    for (int r = 0; r < R; r++) res[r] = hsum(total[r]);
#else
    for (int r = 0; r < R; r++) {
        float total = 0.0f;
        for (long g = 0, g0 = 0; g0 < K; g++, g0 += group) {
            int32_t s = 0;
            for (long k = g0; k < g0 + group; k++) s += (int32_t)w[k] * x16[r * K + k];
            total += (float)s * sx[r * groups + g];
        }
        res[r] = total;
    }
#endif
}

/* x (rows, K) as int16 per row and group of `group` inputs (rows * K / group groups, in order): x16,
 * the step sx (the group's largest |x| / 32767: each value at most half a step off; NaN where the
 * group holds a NaN or infinity, so that it reaches the output as it would in float) and, where xsum
 * is not NULL, the group's float sum */
static void to_int16(const float *xf, long n_groups, long group, int16_t *x16, float *sx, float *xsum) {
    for (long i = 0; i < n_groups; i++) {
        const float *xg = xf + i * group;
        float amax = 0.0f, s = 0.0f;
        for (long k = 0; k < group; k++) {
            amax = fabsf(xg[k]) > amax ? fabsf(xg[k]) : amax;
            s += xg[k];
        }
        float step = amax / 32767.0f, inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
        for (long k = 0; k < group; k++) x16[i * group + k] = (int16_t)lrintf(xg[k] * inv);
        sx[i] = s == s ? step : NAN;
        if (xsum) xsum[i] = s;
    }
}

#define DISPATCH(R, CALL)                        \
    switch (R) {                                 \
        case 1: { const int Rc = 1; CALL; break; } \
        case 2: { const int Rc = 2; CALL; break; } \
        case 3: { const int Rc = 3; CALL; break; } \
        default: { const int Rc = 4; CALL; break; } \
    }

#define DISPATCH8(R, CALL)                         \
    switch (R) {                                   \
        case 1: { const int Rc = 1; CALL; break; } \
        case 2: { const int Rc = 2; CALL; break; } \
        case 3: { const int Rc = 3; CALL; break; } \
        case 4: { const int Rc = 4; CALL; break; } \
        case 5: { const int Rc = 5; CALL; break; } \
        case 6: { const int Rc = 6; CALL; break; } \
        case 7: { const int Rc = 7; CALL; break; } \
        default: { const int Rc = 8; CALL; break; } \
    }

/* x (M, K) float32 or bfloat16, w (N, K) int8, scale (N,), bias (N,) or NULL -> out (M, N) in x's dtype */
int lmf_int8_mm(const void *x, int bf16, long M, long K, const int8_t *w, const float *scale,
                const float *bias, long N, void *out, int threads) {
    long group = K % 128 == 0 ? 128 : K % 64 == 0 ? 64 : 32, groups = K / group;
    float *xf = (float *)malloc((M * K + M * groups) * sizeof(float));
    float *sx = xf + M * K;
    int16_t *x16 = (int16_t *)malloc(M * K * sizeof(int16_t));
    if (!xf || !x16) {
        free(xf);
        free(x16);
        return -1;
    }
    to_f32(x, bf16, xf, M * K);
    to_int16(xf, M * groups, group, x16, sx, NULL);
    int parallel = threads > 1 && N * K >= (1L << 16);
    long ahead = rows_ahead(K);
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
    for (long n = 0; n < N; n++) {
        prefetch_row(w, n + ahead, N, K);
        for (long m0 = 0; m0 < M; m0 += ROWS) {
            int R = M - m0 < ROWS ? (int)(M - m0) : ROWS;
            float res[ROWS];
#define DOT_I8(G) DISPATCH(R, dot_i8(x16 + m0 * K, sx + m0 * groups, K, w + n * K, G, groups, Rc, res))
            if (group == 128) DOT_I8(128)
            else if (group == 64) DOT_I8(64)
            else DOT_I8(32)
            for (int r = 0; r < R; r++)
                store(out, bf16, (m0 + r) * N + n, res[r] * scale[n] + (bias ? bias[n] : 0.0f));
        }
    }
    free(x16);
    free(xf);
    return 0;
}

/* int4: codes q in 0..15 with w = scale * q + offset per group of inputs; each 32 inputs are 16 bytes,
 * byte j holding input j in its low nibble and input j + 16 in its high one. The activations enter as
 * int16, one scale per row and group (their largest magnitude / 32767: at most 2^-16 of it off, finer
 * than bfloat16 for the group's largest values), so that 16 products of codes and activations are one
 * integer multiply-add (sums stay in int32: 16 x 15 x 32767 per lane for a group of 128); each group's
 * sum is converted once and scaled by both scales. The offsets multiply each group's float32 sum of
 * the activations.
 * out[m, n] = sum_g (scale[n, g] * sx[m, g] * sum_{k in g} q[n, k] * x16[m, k] + offset[n, g] * xsum[m, g])
 *             + bias[n] */
#if defined(LMF_AVX512)
/* As the AVX2 kernel below, in 512-bit registers: the 16 code bytes of a block of 32 inputs broadcast
 * to the four 128-bit lanes and shifted right by 0, 4, 8 and 12 bits in them give the block's even
 * inputs, then its odd ones (the activations' `even_odd` order), so that one multiply-accumulate takes
 * the whole block */
static inline __attribute__((always_inline)) void dot_i4(const int16_t *x16, const float *sx, const float *xsum,
                                                         long K, const uint8_t *q, const float *so, long group,
                                                         long groups, int R, float *res) {
    const __m512i shifts = _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12);
    const __m512i nibbles = _mm512_set1_epi32(0x000f000f);
    __m512 total[ROWS_I4];
    float offsets[ROWS_I4];
    for (int r = 0; r < R; r++) total[r] = _mm512_setzero_ps(), offsets[r] = 0.0f;
    for (long g = 0, g0 = 0; g0 < K; g++, g0 += group) {
        __m512i acc[ROWS_I4][2]; /* two a row, blocks of 32 in turn (latency) */
        for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
        for (long k = g0; k < g0 + group; k += 64) {
            __m512i b0 = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(q + k / 2)));
            __m512i c0 = _mm512_and_si512(_mm512_srlv_epi32(b0, shifts), nibbles);
            for (int r = 0; r < R; r++)
                acc[r][0] = _mm512_dpwssd_epi32(acc[r][0], c0, _mm512_loadu_si512(x16 + r * K + k));
            if (k + 32 == g0 + group) break; /* an odd number of blocks */
            __m512i b1 = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(q + k / 2 + 16)));
            __m512i c1 = _mm512_and_si512(_mm512_srlv_epi32(b1, shifts), nibbles);
            for (int r = 0; r < R; r++)
                acc[r][1] = _mm512_dpwssd_epi32(acc[r][1], c1, _mm512_loadu_si512(x16 + r * K + k + 32));
        }
        for (int r = 0; r < R; r++) {
            __m512 sum = _mm512_cvtepi32_ps(_mm512_add_epi32(acc[r][0], acc[r][1]));
            total[r] = _mm512_fmadd_ps(sum, _mm512_set1_ps(so[2 * g] * sx[r * groups + g]), total[r]);
            offsets[r] += so[2 * g + 1] * xsum[r * groups + g];
        }
    }
    for (int r = 0; r < R; r++) res[r] = _mm512_reduce_add_ps(total[r]) + offsets[r];
}
#elif defined(__AVX2__)
/* The codes are widened to int16 by 32-bit variable shifts of the 16 bytes in both halves of a register,
 * not byte-to-word conversions (1.2-1.5x faster, C harness on the Zen 3: one row, 2 threads, 3072x576
 * in groups of 64, 68-86 us vs 83-105): `lo` holds the even inputs of the 32, `hi` the odd ones, so the
 * activations enter each block of 32 as its 16 even values, then its 16 odd ones (`even_odd`). The
 * offsets' products accumulate beside the groups' sums, not in a loop of their own after them. */
static inline __attribute__((always_inline)) void dot_i4(const int16_t *x16, const float *sx, const float *xsum,
                                                         long K, const uint8_t *q, const float *so, long group,
                                                         long groups, int R, float *res) {
    const __m256i shift_lo = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
    const __m256i shift_hi = _mm256_setr_epi32(8, 8, 8, 8, 12, 12, 12, 12);
    const __m256i nibbles = _mm256_set1_epi32(0x000f000f);
    __m256 total[ROWS_I4];
    float offsets[ROWS_I4];
    for (int r = 0; r < R; r++) total[r] = _mm256_setzero_ps(), offsets[r] = 0.0f;
    for (long g = 0, g0 = 0; g0 < K; g++, g0 += group) {
        __m256i acc[ROWS_I4][2]; /* two a row for one or two rows (latency), else one */
        for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
        for (long k = g0; k < g0 + group; k += 32) {
            __m256i b = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(q + k / 2)));
            __m256i lo = _mm256_and_si256(_mm256_srlv_epi32(b, shift_lo), nibbles);
            __m256i hi = _mm256_and_si256(_mm256_srlv_epi32(b, shift_hi), nibbles);
            for (int r = 0; r < R; r++) {
                const int16_t *xr = x16 + r * K + k;
                acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(lo, _mm256_loadu_si256((const __m256i *)xr)));
                acc[r][R <= 2] = _mm256_add_epi32(acc[r][R <= 2], _mm256_madd_epi16(hi, _mm256_loadu_si256((const __m256i *)(xr + 16))));
            }
        }
        for (int r = 0; r < R; r++) {
            __m256 sum = _mm256_cvtepi32_ps(R <= 2 ? _mm256_add_epi32(acc[r][0], acc[r][1]) : acc[r][0]);
            total[r] = _mm256_fmadd_ps(sum, _mm256_set1_ps(so[2 * g] * sx[r * groups + g]), total[r]);
            offsets[r] += so[2 * g + 1] * xsum[r * groups + g];
        }
    }
    for (int r = 0; r < R; r++) res[r] = hsum(total[r]) + offsets[r];
}
#endif

#if defined(__AVX2__) || defined(LMF_AVX512)
/* each block of 32 activations as its 16 even values, then its 16 odd ones (dot_i4's order) */
static void even_odd(int16_t *x16, long n) {
    int16_t block[32];
    for (long b = 0; b < n; b += 32) {
        for (int j = 0; j < 16; j++) block[j] = x16[b + 2 * j], block[16 + j] = x16[b + 2 * j + 1];
        memcpy(x16 + b, block, sizeof block);
    }
}
#else
static inline void dot_i4(const int16_t *x16, const float *sx, const float *xsum, long K, const uint8_t *q,
                          const float *so, long group, long groups, int R, float *res) {
    for (int r = 0; r < R; r++) {
        float total = 0.0f;
        for (long g = 0, g0 = 0; g0 < K; g++, g0 += group) {
            int32_t s = 0;
            for (long k = g0; k < g0 + group; k += 32)
                for (int j = 0; j < 16; j++) {
                    uint8_t b = q[k / 2 + j];
                    s += (b & 15) * x16[r * K + k + j] + (b >> 4) * x16[r * K + k + 16 + j];
                }
            total += (float)s * so[2 * g] * sx[r * groups + g] + so[2 * g + 1] * xsum[r * groups + g];
        }
        res[r] = total;
    }
}
#endif

/* x (M, K) float32 or bfloat16, q (N, K/2) as above, so (N, K/group, 2) scale and offset, group a
 * multiple of 32, bias (N,) or NULL -> out (M, N) in x's dtype */
int lmf_int4_mm(const void *x, int bf16, long M, long K, const uint8_t *q, const float *so, long group,
                const float *bias, long N, void *out, int threads) {
    long groups = K / group;
    float *xf = (float *)malloc((M * K + 2 * M * groups) * sizeof(float));
    float *sx = xf + M * K, *xsum = sx + M * groups;
    int16_t *x16 = (int16_t *)malloc(M * K * sizeof(int16_t));
    if (!xf || !x16) {
        free(xf);
        free(x16);
        return -1;
    }
    to_f32(x, bf16, xf, M * K);
    to_int16(xf, M * groups, group, x16, sx, xsum);
#if defined(__AVX2__) || defined(LMF_AVX512)
    even_odd(x16, M * K);
#endif
    int parallel = threads > 1 && N * K >= (1L << 17);
    long ahead = rows_ahead(K / 2);
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
    for (long n = 0; n < N; n++) {
        const float *son = so + n * groups * 2;
        prefetch_row(q, n + ahead, N, K / 2);
        for (long m0 = 0; m0 < M; m0 += ROWS_I4) {
            int R = M - m0 < ROWS_I4 ? (int)(M - m0) : ROWS_I4;
            float res[ROWS_I4];
#define DOT_I4(G) DISPATCH8(R, dot_i4(x16 + m0 * K, sx + m0 * groups, xsum + m0 * groups, K, q + n * (K / 2), son, G, groups, Rc, res))
            if (group == 32) DOT_I4(32)
            else if (group == 64) DOT_I4(64)
            else if (group == 128) DOT_I4(128)
            else DOT_I4(group)
            for (int r = 0; r < R; r++) {
                store(out, bf16, (m0 + r) * N + n, res[r] + (bias ? bias[n] : 0.0f));
            }
        }
    }
    free(x16);
    free(xf);
    return 0;
}

/* bfloat16 weights (a bf16 model's linears, one or a few rows at a time): w (N, K) bf16, x (M, K)
 * float32 or bfloat16, bias (N,) float32 or NULL -> out (M, N) in x's dtype. Where the CPU has AVX-512
 * BF16 the activations are rounded to bfloat16 (exact for bfloat16 ones) and one VDPBF16PS multiplies
 * 32 weights by 32 activations in pairs and adds the products into 16 float32 sums; elsewhere each
 * weight is widened to float32 (a shift) and multiplied in float32. Each weight row is read once for up
 * to four input rows. */
#if defined(__AVX512BF16__) && defined(__AVX512BW__)
static inline __attribute__((always_inline)) void dot_bf16(const void *xa, long K, const uint16_t *w, int R,
                                                           float *res) {
    const uint16_t *xb = (const uint16_t *)xa;
    __m512 acc[ROWS][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    long k = 0;
    for (; k + 64 <= K; k += 64) {
        __m512bh w0 = (__m512bh)_mm512_loadu_si512(w + k), w1 = (__m512bh)_mm512_loadu_si512(w + k + 32);
        for (int r = 0; r < R; r++) {
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], w0, (__m512bh)_mm512_loadu_si512(xb + r * K + k));
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], w1, (__m512bh)_mm512_loadu_si512(xb + r * K + k + 32));
        }
    }
    if (k < K) { /* K is a multiple of 32 */
        __m512bh w0 = (__m512bh)_mm512_loadu_si512(w + k);
        for (int r = 0; r < R; r++)
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], w0, (__m512bh)_mm512_loadu_si512(xb + r * K + k));
    }
    for (int r = 0; r < R; r++) res[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]));
}
#define BF16_ACTIVATIONS 1
#elif defined(__AVX2__)
static inline __attribute__((always_inline)) void dot_bf16(const void *xa, long K, const uint16_t *w, int R,
                                                           float *res) {
    const float *xf = (const float *)xa;
    __m256 acc[ROWS][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (long k = 0; k < K; k += 16) {
        __m256 w0 = _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + k))), 16));
        __m256 w1 = _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + k + 8))), 16));
        for (int r = 0; r < R; r++) {
            acc[r][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xf + r * K + k), acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xf + r * K + k + 8), acc[r][1]);
        }
    }
    for (int r = 0; r < R; r++) res[r] = hsum(_mm256_add_ps(acc[r][0], acc[r][1]));
}
#define BF16_ACTIVATIONS 0
#else
static inline void dot_bf16(const void *xa, long K, const uint16_t *w, int R, float *res) {
    const float *xf = (const float *)xa;
    for (int r = 0; r < R; r++) {
        float total = 0.0f;
        for (long k = 0; k < K; k++) {
            uint32_t u = (uint32_t)w[k] << 16;
            float wk;
            memcpy(&wk, &u, sizeof wk);
            total += wk * xf[r * K + k];
        }
        res[r] = total;
    }
}
#define BF16_ACTIVATIONS 0
#endif

int lmf_bf16_mm(const void *x, int bf16, long M, long K, const uint16_t *w, const float *bias, long N, void *out,
                int threads) {
    /* the activations as dot_bf16 reads them (bfloat16 where it multiplies them natively, else float32):
     * as they come where they are in that form, else one converted copy */
    long size = BF16_ACTIVATIONS ? sizeof(uint16_t) : sizeof(float);
    void *copy = NULL;
    if (bf16 != BF16_ACTIVATIONS) {
        if (!(copy = malloc(M * K * size))) return -1;
        if (BF16_ACTIVATIONS)
            for (long i = 0; i < M * K; i++) store(copy, 1, i, ((const float *)x)[i]);
        else
            to_f32(x, 1, (float *)copy, M * K);
    }
    const char *xa = copy ? (const char *)copy : (const char *)x;
    int parallel = threads > 1 && N * K >= (1L << 15);
    long ahead = rows_ahead(2 * K);
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
    for (long n = 0; n < N; n++) {
        prefetch_row(w, n + ahead, N, 2 * K);
        for (long m0 = 0; m0 < M; m0 += ROWS) {
            int R = M - m0 < ROWS ? (int)(M - m0) : ROWS;
            float res[ROWS];
            DISPATCH(R, dot_bf16(xa + m0 * K * size, K, w + n * K, Rc, res))
            for (int r = 0; r < R; r++) store(out, bf16, (m0 + r) * N + n, res[r] + (bias ? bias[n] : 0.0f));
        }
    }
    free(copy);
    return 0;
}
