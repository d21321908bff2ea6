/* 2-D convolution by tiled FFT (see conv2d_fft.h).
 *
 * Layouts (floats; Cp, Op: C and O rounded up to 16; Mp: the tile count rounded up to
 * the GEMM's 6 rows; nf = (n/2 + 1) * n frequencies, f = ky * n + kx):
 *   xp  (Hp, Wp, Cp)      the image, channels last, zero padded
 *   X   (nf, Mp, 2, Cp)   tile spectra: real parts, then imaginary parts
 *   wf  (Op/32, nf, C, 2, 32)  weight spectra (conjugated, scaled by 1/n^2): what one
 *                         chunk of 32 outputs reads is one contiguous stream
 *   Y   (nf, Mp, 2, 32)   per thread: the products for one chunk of 32 outputs
 * The 1-D FFTs are radix-2 on vectors of 16 lanes: 16 channels transformed at once.
 * Real input tiles: two columns form one complex FFT along y, split by symmetry;
 * real output tiles: two columns are rebuilt from their half spectra and come out of
 * one inverse FFT as its real and imaginary parts. */
#include "kernels/conv2d_fft.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/gemm.h"

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4), may_alias));
#define INL static inline __attribute__((always_inline))
#define LD(p) (*(const v16u *)(p))
#define ST(p, v) (*(v16u *)(p) = (v))

enum { NMAX = 32, OCH = 32, MR = 6, LANES = 16 };

static int g_mode = NPRED_CONV2D_FFT_AUTO;

int npred_conv2d_fft_set_mode(int mode)
{
    if (mode == NPRED_CONV2D_FFT_NEVER || mode == NPRED_CONV2D_FFT_AUTO || mode == NPRED_CONV2D_FFT_ALWAYS)
        __atomic_store_n(&g_mode, mode, __ATOMIC_RELAXED);
    return __atomic_load_n(&g_mode, __ATOMIC_RELAXED);
}

typedef struct {
    int n, lg, nf;       /* FFT size, log2, frequencies kept */
    int vh, vw, th, tw;  /* valid outputs per tile, tiles per axis */
    int M, Mp, Hp, Wp;   /* tiles, rounded up; padded input */
    int C, O, Cp, Op, oh, ow;
} plan;

static int span(int k, int d) { return d * (k - 1) + 1; }

int npred_conv2d_fft_supported(const npred_conv2d_params *p)
{
    /* the checks of npred_conv2d_output_size, without its error message */
    if (!p || p->groups != 1 || p->stride_h != 1 || p->stride_w != 1 || p->n < 1 || p->c < 1 || p->o < 1 ||
        p->kh < 1 || p->kw < 1 || p->dil_h < 1 || p->dil_w < 1 || p->pad_h < 0 || p->pad_w < 0 || p->h < 1 ||
        p->w < 1 || p->kh > 17 || p->kw > 17 || p->dil_h > 16 || p->dil_w > 16 || p->h > (1 << 20) ||
        p->w > (1 << 20) || p->pad_h > (1 << 20) || p->pad_w > (1 << 20) || p->c > (1 << 20) || p->o > (1 << 20))
        return 0;
    int sh = span(p->kh, p->dil_h), sw = span(p->kw, p->dil_w);
    return sh <= 17 && sw <= 17 && p->h + 2 * p->pad_h >= sh && p->w + 2 * p->pad_w >= sw;
}

int npred_conv2d_fft_use(const npred_conv2d_params *p)
{
    int m = __atomic_load_n(&g_mode, __ATOMIC_RELAXED);
    if (m == NPRED_CONV2D_FFT_NEVER || !npred_conv2d_fft_supported(p)) return 0;
    return m == NPRED_CONV2D_FFT_ALWAYS || (p->kh * p->kw >= 25 && p->c >= 16);
}

static int make_plan(const npred_conv2d_params *p, plan *P)
{
    if (!npred_conv2d_fft_supported(p)) return -1;
    int sh = span(p->kh, p->dil_h), sw = span(p->kw, p->dil_w);
    P->oh = p->h + 2 * p->pad_h - sh + 1, P->ow = p->w + 2 * p->pad_w - sw + 1;
    P->n = sh <= 9 && sw <= 9 ? 16 : 32;
    P->lg = P->n == 16 ? 4 : 5;
    P->nf = (P->n / 2 + 1) * P->n;
    P->vh = P->n - sh + 1, P->vw = P->n - sw + 1;
    P->th = (P->oh + P->vh - 1) / P->vh, P->tw = (P->ow + P->vw - 1) / P->vw;
    P->M = P->th * P->tw;
    P->Mp = (P->M + MR - 1) / MR * MR;
    P->Hp = (P->th - 1) * P->vh + P->n, P->Wp = (P->tw - 1) * P->vw + P->n;
    P->C = p->c, P->O = p->o;
    P->Cp = (p->c + LANES - 1) / LANES * LANES, P->Op = (p->o + OCH - 1) / OCH * OCH;
    return 0;
}

size_t npred_conv2d_fft_weights_floats(const npred_conv2d_params *p)
{
    plan P;
    if (make_plan(p, &P)) return 0;
    return (size_t)P.nf * P.C * 2 * P.Op;
}

static size_t round64(size_t floats) { return (floats * sizeof(float) + 63) / 64 * 64; }

static size_t shared_bytes(const plan *P)
{
    return round64((size_t)P->Hp * P->Wp * P->Cp) + round64((size_t)P->nf * P->Mp * 2 * P->Cp);
}

static size_t thread_bytes(const plan *P) { return round64((size_t)P->nf * P->Mp * 2 * OCH); }

size_t npred_conv2d_fft_workspace_size(const npred_conv2d_params *p, int threads)
{
    plan P;
    if (make_plan(p, &P)) return 0;
    if (threads < 1) threads = 1;
    return 64 + shared_bytes(&P) + (size_t)threads * thread_bytes(&P);
}

npred_status npred_conv2d_fft_reserve(void **ws, size_t *ws_bytes, const npred_conv2d_params *p)
{
#ifdef _OPENMP
    size_t need = npred_conv2d_fft_workspace_size(p, omp_get_max_threads());
#else
    size_t need = npred_conv2d_fft_workspace_size(p, 1);
#endif
    if (need <= *ws_bytes) return NPRED_OK;
    free(*ws);
    *ws_bytes = 0;
    if (!(*ws = malloc(need))) return npred_errorf(NPRED_ERR_NOMEM, "conv2d fft: out of memory for a workspace");
    *ws_bytes = need;
    return NPRED_OK;
}

/* cos and sin of 2 pi j / 32, j < 16 */
static void twiddles(float *tw)
{
    for (int j = 0; j < NMAX / 2; j++) {
        double a = 2.0 * 3.14159265358979323846 * j / NMAX;
        tw[2 * j] = (float)cos(a), tw[2 * j + 1] = (float)sin(a);
    }
}

/* in-place FFT of length n (2^lg) on 16 lanes: sign -1 forward, +1 inverse, unscaled */
INL void fft1(v16 *re, v16 *im, int n, int lg, const float *tw, int inverse)
{
    for (int i = 0; i < n; i++) {
        int j = 0;
        for (int b = 0; b < lg; b++) j |= ((i >> b) & 1) << (lg - 1 - b);
        if (i < j) {
            v16 t = re[i];
            re[i] = re[j], re[j] = t;
            t = im[i], im[i] = im[j], im[j] = t;
        }
    }
    for (int len = 2; len <= n; len <<= 1) {
        int half = len / 2, step = NMAX / len;
        for (int i = 0; i < n; i += len) { /* k = 0: the twiddle is 1 */
            v16 ar = re[i], ai = im[i], br = re[i + half], bi = im[i + half];
            re[i] = ar + br, im[i] = ai + bi, re[i + half] = ar - br, im[i + half] = ai - bi;
        }
        for (int k = 1; k < half; k++) {
            float c = tw[2 * k * step], s = inverse ? tw[2 * k * step + 1] : -tw[2 * k * step + 1];
            for (int i = k; i < n; i += len) {
                v16 xr = re[i + half], xi = im[i + half];
                v16 tr = xr * c - xi * s, ti = xr * s + xi * c;
                v16 ar = re[i], ai = im[i];
                re[i] = ar + tr, im[i] = ai + ti, re[i + half] = ar - tr, im[i + half] = ai - ti;
            }
        }
    }
}

/* The half spectrum of a real n x n tile of 16 lanes: pixel (y, x) at src + y*rs + x*cs;
 * frequency f = ky * n + kx (ky <= n/2) written at dst + f*fs (real), + imo (imaginary). */
INL void tile_forward(const float *src, ptrdiff_t rs, ptrdiff_t cs, int n, int lg, const float *tw, float *dst,
                      ptrdiff_t fs, ptrdiff_t imo)
{
    v16 ur[NMAX / 2 + 1][NMAX], ui[NMAX / 2 + 1][NMAX], zr[NMAX], zi[NMAX];
    const int h = n / 2;
    for (int p = 0; p < h; p++) { /* columns 2p, 2p + 1 as one complex column */
        for (int y = 0; y < n; y++) {
            zr[y] = LD(src + y * rs + 2 * p * cs);
            zi[y] = LD(src + y * rs + (2 * p + 1) * cs);
        }
        fft1(zr, zi, n, lg, tw, 0);
        for (int k = 0; k <= h; k++) {
            int nk = (n - k) & (n - 1);
            ur[k][2 * p] = 0.5f * (zr[k] + zr[nk]), ui[k][2 * p] = 0.5f * (zi[k] - zi[nk]);
            ur[k][2 * p + 1] = 0.5f * (zi[k] + zi[nk]), ui[k][2 * p + 1] = 0.5f * (zr[nk] - zr[k]);
        }
    }
    for (int k = 0; k <= h; k++) {
        fft1(ur[k], ui[k], n, lg, tw, 0);
        for (int x = 0; x < n; x++) {
            float *d = dst + (ptrdiff_t)(k * n + x) * fs;
            ST(d, ur[k][x]);
            ST(d + imo, ui[k][x]);
        }
    }
}

/* The first vh x vw pixels of the real tile whose half spectrum is at src + f*fs (real),
 * + imo (imaginary): out[y * vw + x] (16 lanes each), unscaled. */
INL void tile_inverse(const float *src, ptrdiff_t fs, ptrdiff_t imo, int n, int lg, const float *tw, int vh, int vw,
                      v16 *out)
{
    v16 ur[NMAX / 2 + 1][NMAX], ui[NMAX / 2 + 1][NMAX], qr[NMAX], qi[NMAX];
    const int h = n / 2;
    for (int k = 0; k <= h; k++) {
        for (int x = 0; x < n; x++) {
            const float *s = src + (ptrdiff_t)(k * n + x) * fs;
            ur[k][x] = LD(s), ui[k][x] = LD(s + imo);
        }
        fft1(ur[k], ui[k], n, lg, tw, 1);
    }
    for (int x1 = 0; x1 < vw; x1 += 2) { /* columns x1, x1 + 1: real and imaginary part of one inverse */
        int x2 = x1 + 1;
        qr[0] = ur[0][x1], qi[0] = ur[0][x2];
        qr[h] = ur[h][x1], qi[h] = ur[h][x2];
        for (int k = 1; k < h; k++) {
            qr[k] = ur[k][x1] - ui[k][x2], qi[k] = ui[k][x1] + ur[k][x2];
            qr[n - k] = ur[k][x1] + ui[k][x2], qi[n - k] = ur[k][x2] - ui[k][x1];
        }
        fft1(qr, qi, n, lg, tw, 1);
        for (int y = 0; y < vh; y++) {
            out[y * vw + x1] = qr[y];
            if (x2 < vw) out[y * vw + x2] = qi[y];
        }
    }
}

/* Y rows m0..m0+5, 32 outputs (re, im at y + r*64, + 32): sum over c of X * W; each sum
 * runs c = 0..C-1 into a zero start, the same for every row and call */
INL void cgemm_6x2(int C, const float *x, ptrdiff_t xrs, ptrdiff_t ximo, const float *w, ptrdiff_t wcs,
                   ptrdiff_t wimo, float *y)
{
    v16 ar[MR][2], ai[MR][2];
    _Pragma("GCC unroll 6") for (int r = 0; r < MR; r++) ar[r][0] = ar[r][1] = ai[r][0] = ai[r][1] = (v16){0};
    for (int c = 0; c < C; c++) {
        const float *wc = w + c * wcs;
        v16 wr0 = LD(wc), wr1 = LD(wc + 16), wi0 = LD(wc + wimo), wi1 = LD(wc + wimo + 16);
        _Pragma("GCC unroll 6") for (int r = 0; r < MR; r++)
        {
            float xr = x[r * xrs + c], xi = x[r * xrs + ximo + c];
            ar[r][0] += xr * wr0, ar[r][1] += xr * wr1;
            ai[r][0] += xr * wi0, ai[r][1] += xr * wi1;
            ar[r][0] -= xi * wi0, ar[r][1] -= xi * wi1;
            ai[r][0] += xi * wr0, ai[r][1] += xi * wr1;
        }
    }
    _Pragma("GCC unroll 6") for (int r = 0; r < MR; r++)
    {
        ST(y + r * 64, ar[r][0]), ST(y + r * 64 + 16, ar[r][1]);
        ST(y + r * 64 + 32, ai[r][0]), ST(y + r * 64 + 48, ai[r][1]);
    }
}

/* input tile m, channels cb*16.. of the padded image xp into X */
INL void fwd_tile_body(const plan *P, const float *tw, const float *xp, float *X, int m, int cb)
{
    int a = m / P->tw, b = m % P->tw;
    const float *src = xp + ((size_t)a * P->vh * P->Wp + (size_t)b * P->vw) * P->Cp + cb * LANES;
    float *dst = X + (size_t)m * 2 * P->Cp + cb * LANES;
    tile_forward(src, (ptrdiff_t)P->Wp * P->Cp, P->Cp, P->n, P->lg, tw, dst, (ptrdiff_t)P->Mp * 2 * P->Cp, P->Cp);
}

/* outputs oc*32..oc*32+31 of one image: the GEMM per frequency into Y, the inverse per
 * tile, the bias, written to y (O, OH, OW) */
INL void chunk_body(const plan *P, const float *tw, const float *X, const float *wf, const float *bias, float *Y,
                    float *y, int oc)
{
    const ptrdiff_t xfs = (ptrdiff_t)P->Mp * 2 * P->Cp, wfs = (ptrdiff_t)P->C * 2 * OCH, yfs = (ptrdiff_t)P->Mp * 64;
    for (int f = 0; f < P->nf; f++) {
        const float *wc = wf + ((ptrdiff_t)oc * P->nf + f) * wfs;
        for (int m0 = 0; m0 < P->Mp; m0 += MR) {
            /* the next frequency's block (4C cache lines), spread over the row blocks */
            if (f + 1 < P->nf)
                for (int i = m0 / MR; i < 4 * P->C; i += P->Mp / MR) __builtin_prefetch(wc + wfs + i * 16);
            cgemm_6x2(P->C, X + f * xfs + (ptrdiff_t)m0 * 2 * P->Cp, 2 * P->Cp, P->Cp, wc, 2 * OCH, OCH,
                      Y + f * yfs + m0 * 64);
        }
    }
    v16 out[NMAX * NMAX];
    size_t plane = (size_t)P->oh * P->ow;
    for (int m = 0; m < P->M; m++) {
        int oy0 = m / P->tw * P->vh, ox0 = m % P->tw * P->vw;
        int ny = P->oh - oy0 < P->vh ? P->oh - oy0 : P->vh, nx = P->ow - ox0 < P->vw ? P->ow - ox0 : P->vw;
        for (int j = 0; j < OCH / LANES; j++) {
            int o0 = oc * OCH + j * LANES;
            if (o0 >= P->O) break;
            int nl = P->O - o0 < LANES ? P->O - o0 : LANES;
            tile_inverse(Y + m * 64 + j * LANES, yfs, 32, P->n, P->lg, tw, P->vh, P->vw, out);
            for (int l = 0; l < nl; l++) {
                float bo = bias ? bias[o0 + l] : 0.0f, *yo = y + (size_t)(o0 + l) * plane;
                for (int yy = 0; yy < ny; yy++)
                    for (int xx = 0; xx < nx; xx++)
                        yo[(size_t)(oy0 + yy) * P->ow + ox0 + xx] = out[yy * P->vw + xx][l] + bo;
            }
        }
    }
}

#define AVX512 __attribute__((target("avx512f")))
static AVX512 void fwd_tile_avx512(const plan *P, const float *tw, const float *xp, float *X, int m, int cb)
{
    fwd_tile_body(P, tw, xp, X, m, cb);
}
static void fwd_tile_generic(const plan *P, const float *tw, const float *xp, float *X, int m, int cb)
{
    fwd_tile_body(P, tw, xp, X, m, cb);
}
static AVX512 void chunk_avx512(const plan *P, const float *tw, const float *X, const float *wf, const float *bias,
                                float *Y, float *y, int oc)
{
    chunk_body(P, tw, X, wf, bias, Y, y, oc);
}
static void chunk_generic(const plan *P, const float *tw, const float *X, const float *wf, const float *bias, float *Y,
                          float *y, int oc)
{
    chunk_body(P, tw, X, wf, bias, Y, y, oc);
}

npred_status npred_conv2d_fft_weights(float *wf, const float *w, const npred_conv2d_params *p)
{
    plan P;
    if (make_plan(p, &P))
        return npred_errorf(NPRED_ERR_ARG, "conv2d fft: unsupported convolution (groups %d, stride %dx%d, kernel %dx%d, "
                            "dilation %dx%d)", p ? p->groups : 0, p ? p->stride_h : 0, p ? p->stride_w : 0,
                            p ? p->kh : 0, p ? p->kw : 0, p ? p->dil_h : 0, p ? p->dil_w : 0);
    if (!wf || !w) return npred_errorf(NPRED_ERR_ARG, "conv2d fft weights: wf and w are required");
    float tw[NMAX];
    twiddles(tw);
    const int n = P.n, kk = p->kh * p->kw;
    float *tile = aligned_alloc(64, (size_t)n * n * LANES * sizeof(float));
    if (!tile) return npred_errorf(NPRED_ERR_NOMEM, "conv2d fft weights: out of memory");
    const ptrdiff_t fs = (ptrdiff_t)P.C * 2 * OCH;
    for (int c = 0; c < P.C; c++)
        for (int o0 = 0; o0 < P.Op; o0 += LANES) {
            float *dst = wf + (ptrdiff_t)(o0 / OCH) * P.nf * fs + (ptrdiff_t)c * 2 * OCH + o0 % OCH;
            memset(tile, 0, (size_t)n * n * LANES * sizeof(float));
            for (int l = 0; l < LANES && o0 + l < P.O; l++)
                for (int ky = 0; ky < p->kh; ky++)
                    for (int kx = 0; kx < p->kw; kx++)
                        tile[((size_t)ky * p->dil_h * n + (size_t)kx * p->dil_w) * LANES + l] =
                            w[((size_t)(o0 + l) * P.C + c) * kk + ky * p->kw + kx];
            tile_forward(tile, (ptrdiff_t)n * LANES, LANES, n, P.lg, tw, dst, fs, OCH);
        }
    free(tile);
    /* correlation: the conjugate; the inverse transforms' 1/n^2 (a power of two: exact) */
    const float s = 1.0f / (float)(n * n);
    for (size_t i = 0; i < (size_t)P.nf * P.C * 2 * P.Op; i += 2 * OCH)
        for (int o = 0; o < OCH; o++) wf[i + o] *= s, wf[i + OCH + o] *= -s;
    return NPRED_OK;
}

npred_status npred_conv2d_fft_forward(float *y, const float *x, const float *wf, const float *b,
                                      const npred_conv2d_params *p, void *ws, size_t ws_bytes)
{
    plan P;
    if (make_plan(p, &P))
        return npred_errorf(NPRED_ERR_ARG, "conv2d fft: unsupported convolution (groups %d, stride %dx%d, kernel %dx%d, "
                            "dilation %dx%d)", p ? p->groups : 0, p ? p->stride_h : 0, p ? p->stride_w : 0,
                            p ? p->kh : 0, p ? p->kw : 0, p ? p->dil_h : 0, p ? p->dil_w : 0);
    if (!y || !x || !wf) return npred_errorf(NPRED_ERR_ARG, "conv2d fft forward: y, x and wf are required");
    int nchunks = P.Op / OCH;
#ifdef _OPENMP
    int nt = omp_get_max_threads();
#else
    int nt = 1;
#endif
    if (nt > nchunks) nt = nchunks;
    void *own = NULL;
    if (!ws && ws_bytes == 0) {
        ws_bytes = npred_conv2d_fft_workspace_size(p, nt);
        if (!(ws = own = malloc(ws_bytes))) return npred_errorf(NPRED_ERR_NOMEM, "conv2d fft: out of memory");
    }
    size_t sh = shared_bytes(&P), tb = thread_bytes(&P);
    if (ws_bytes < 64 + sh + tb) {
        free(own);
        return npred_errorf(NPRED_ERR_ARG, "conv2d fft: workspace of %zu bytes, at least %zu needed", ws_bytes,
                            64 + sh + tb);
    }
    size_t fit = (ws_bytes - 64 - sh) / tb;
    if ((size_t)nt > fit) nt = (int)fit;
    char *base = (char *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
    float *xp = (float *)base, *X = (float *)(base + round64((size_t)P.Hp * P.Wp * P.Cp)), *Ys = (float *)(base + sh);
    float tw[NMAX];
    twiddles(tw);
    int avx = npred_gemm_avx512_active();
    size_t nx = (size_t)P.Hp * P.Wp * P.Cp, hw = (size_t)p->h * p->w;
    /* the GEMM's padding rows of X stay zero */
    for (int f = 0; f < P.nf; f++)
        memset(X + ((size_t)f * P.Mp + P.M) * 2 * P.Cp, 0, (size_t)(P.Mp - P.M) * 2 * P.Cp * sizeof(float));
    const int ncb = P.Cp / LANES;
    for (int im = 0; im < p->n; im++) {
        const float *xi = x + (size_t)im * P.C * hw;
        float *yi = y + (size_t)im * P.O * P.oh * P.ow;
        memset(xp, 0, nx * sizeof(float));
        for (int c = 0; c < P.C; c++)
            for (int r = 0; r < p->h; r++) {
                const float *s = xi + (size_t)c * hw + (size_t)r * p->w;
                float *d = xp + ((size_t)(r + p->pad_h) * P.Wp + p->pad_w) * P.Cp + c;
                for (int q = 0; q < p->w; q++) d[(size_t)q * P.Cp] = s[q];
            }
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int i = 0; i < P.M * ncb; i++) {
            if (avx) fwd_tile_avx512(&P, tw, xp, X, i / ncb, i % ncb);
            else fwd_tile_generic(&P, tw, xp, X, i / ncb, i % ncb);
        }
#pragma omp parallel num_threads(nt)
        {
#ifdef _OPENMP
            float *Y = Ys + (size_t)omp_get_thread_num() * (tb / sizeof(float));
#else
            float *Y = Ys;
#endif
#pragma omp for schedule(static)
            for (int oc = 0; oc < nchunks; oc++) {
                if (avx) chunk_avx512(&P, tw, X, wf, b, Y, yi, oc);
                else chunk_generic(&P, tw, X, wf, b, Y, yi, oc);
            }
        }
    }
    free(own);
    return NPRED_OK;
}
