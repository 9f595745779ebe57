/* lmforge's decode kernel: a weight-only int8 matrix product (a scale per output channel) for a few
 * input rows, float32 or bfloat16 activations. Each weight row is read from memory once for up to four
 * input rows, converted to float32 in registers and multiplied with fused multiply-adds in several
 * independent accumulators, so that a decode step streams its weights near memory bandwidth. Built by
 * lmforge/quant/native.py for this CPU (-O3 -march=native, OpenMP over output channels); AVX2
 * intrinsics where the CPU has them, plain loops otherwise.
 *
 * out[m, n] = scale[n] * sum_k x[m, k] * w[n, k] + bias[n]
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#define ROWS 4 /* input rows per pass over a weight row */

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

static inline __m256 i8_to_f32(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
#endif

/* res[r] = sum_k x[r * K + k] * w[k] for R (a constant at each call) rows; K a multiple of 32 */
static inline __attribute__((always_inline)) void dot_i8(const float *x, long K, const int8_t *w, int R,
                                                         float *res) {
#ifdef __AVX2__
    __m256 acc[ROWS][4];
    const int U = R == 1 ? 4 : 2; /* independent accumulators a row: hide the multiply-add latency */
    for (int r = 0; r < R; r++)
        for (int u = 0; u < U; u++) acc[r][u] = _mm256_setzero_ps();
    for (long k = 0; k < K; k += 8 * U) {
        for (int u = 0; u < U; u++) {
            __m256 wv = i8_to_f32(w + k + 8 * u);
            for (int r = 0; r < R; r++) acc[r][u] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + r * K + k + 8 * u), acc[r][u]);
        }
    }
    for (int r = 0; r < R; r++) {
        __m256 s = acc[r][0];
        for (int u = 1; u < U; u++) s = _mm256_add_ps(s, acc[r][u]);
        res[r] = hsum(s);
    }
#else
    for (int r = 0; r < R; r++) {
        float s = 0.0f;
        for (long k = 0; k < K; k++) s += x[r * K + k] * (float)w[k];
        res[r] = s;
    }
#endif
}

#define DISPATCH(R, CALL)                        \
    switch (R) {                                 \
        case 1: { const int Rc = 1; CALL; break; } \
        case 2: { const int Rc = 2; CALL; break; } \
        case 3: { const int Rc = 3; CALL; break; } \
        default: { const int Rc = 4; CALL; break; } \
    }

/* x (M, K) float32 or bfloat16, w (N, K) int8, scale (N,), bias (N,) or NULL -> out (M, N) in x's dtype */
void lmf_int8_mm(const void *x, int bf16, long M, long K, const int8_t *w, const float *scale,
                 const float *bias, long N, void *out, int threads) {
    float *xf = (float *)malloc(M * K * sizeof(float));
    to_f32(x, bf16, xf, M * K);
    int parallel = threads > 1 && N * K >= (1L << 16);
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
    for (long n = 0; n < N; n++) {
        for (long m0 = 0; m0 < M; m0 += ROWS) {
            int R = M - m0 < ROWS ? (int)(M - m0) : ROWS;
            float res[ROWS];
            DISPATCH(R, dot_i8(xf + m0 * K, K, w + n * K, Rc, res));
            for (int r = 0; r < R; r++)
                store(out, bf16, (m0 + r) * N + n, res[r] * scale[n] + (bias ? bias[n] : 0.0f));
        }
    }
    free(xf);
}
