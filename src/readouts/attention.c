/* AttentionReadout, neuralpredictors 0.3.0 as intended (spec §2.10): the conv
 * padding is int(k > 1) (0.3.0 passes a bool, which torch 1.13 rejects).
 *
 * Legend: B batch, C = c channels, n neurons, hw = h*w pixels, k kernel, L = attention_layers.
 *
 *   z0 = x;  for l < L-1:  z_{l+1} = elu(bn_l(conv_l(z_l)))   conv_l: C -> C, k x k
 *   a[b,o,:]  = softmax over hw of (conv_L(z_{L-1})[b,o] + cbias[o])   conv_L: C -> n
 *   T[b,o,c]  = sum_hw a[b,o,hw] x[b,c,hw]
 *   y[b,o]    = sum_c T[b,o,c] features[o,c] + bias[o]
 *
 * Parameter names follow the 0.3.0 Sequential: hidden layer l is attention.conv<l>,
 * attention.norm<l> (BatchNorm2d: weight, bias and the buffers running_mean,
 * running_var, num_batches_tracked; momentum 0.1, eps 1e-5) and attention.nonlin<l>
 * (ELU, no parameters); the last conv is attention.conv<L> (its for-else names it
 * after the layer count, so conv<L-1> never exists). BatchNorm uses the batch
 * statistics and updates the running ones when r->train, the running ones otherwise.
 * Kernel 1 or 3 only (with padding int(k > 1) any other size changes the map and the
 * 0.3.0 einsum fails).
 *
 * Per image: im2col (k = 3), last conv as a GEMM, softmax, T as a GEMM; the
 * backward mirrors it (softmax Jacobian, two GEMMs into dx, col2im). The hidden
 * layers run on the whole batch with the conv2d / batchnorm / ELU kernels.
 * Workspace: A (max_batch*n*hw), T (max_batch*n*c), cols/dcols (c*k*k*hw),
 * dA (n*hw), dT (n*c); with L > 1 also per hidden layer the conv output, the BN
 * output and the ELU output (max_batch*c*hw each) and the BN cache (2c doubles),
 * two gradient buffers (max_batch*c*hw) and the conv2d scratch. Threads: OpenBLAS
 * inside the GEMMs, the kernels' own OpenMP; elementwise loops OpenMP over neurons. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/activation.h"
#include "kernels/batchnorm.h"
#include "kernels/conv2d.h"
#include "readouts/readout.h"

#define A16(n) (((size_t)(n) + 15) / 16 * 16)

/* table indices of hidden layer l (conv<l>, norm<l>) */
typedef struct {
    int w, b;               /* conv weight (C, C, k, k), bias (C) */
    int gamma, beta;        /* norm weight, bias (C) */
    int rmean, rvar, nbt;   /* norm buffers (C), (C), scalar int64 */
} at_hidden;

typedef struct {
    int nh;                 /* hidden layers, attention_layers - 1 */
    at_hidden h[];
} at_impl;

typedef struct {
    float *A, *T, *cols, *dcols, *dA, *dT;
    float *g0, *g1;         /* (max_batch, C, hw) gradient ping-pong (L > 1) */
    void *conv_ws;          /* conv2d scratch of conv_bytes */
    size_t conv_bytes;
} at_ws;

/* hidden layer l's activations: conv out z, BN out v, ELU out a (max_batch, C, hw), BN cache */
typedef struct {
    float *z, *v, *a;
    double *mean, *invstd;  /* (C) */
} at_layer_ws;

static npred_conv2d_params hidden_conv(const npred_readout_config *c, int B)
{
    int k = c->attention_kernel;
    return npred_conv2d_params_square(B, c->c, c->h, c->w, c->c, k, 1, k > 1, 1, 1);
}

static size_t conv_bytes(const npred_readout_config *c, int max_batch)
{
    if (c->attention_layers < 2) return 0;
    npred_conv2d_params p = hidden_conv(c, max_batch);
    return npred_conv2d_workspace_size(&p, NPRED_CONV2D_ALGO_AUTO);
}

/* floats of everything before the hidden-layer part, and of one hidden layer */
static size_t head_floats(const npred_readout_config *c, int max_batch)
{
    size_t hw = (size_t)c->h * c->w, n = (size_t)c->n, kk = (size_t)c->attention_kernel * c->attention_kernel;
    return A16(max_batch * n * hw) + A16(max_batch * n * c->c) + 2 * A16(c->c * kk * hw) + A16(n * hw) +
           A16(n * c->c);
}

static size_t layer_floats(const npred_readout_config *c, int max_batch)
{
    size_t act = (size_t)max_batch * c->c * c->h * c->w;
    return 3 * A16(act) + 2 * A16(2 * (size_t)c->c); /* two double arrays of C */
}

static at_ws views(const npred_readout *r, int max_batch)
{
    const npred_readout_config *c = &r->cfg;
    size_t hw = (size_t)c->h * c->w, n = (size_t)c->n, kk = (size_t)c->attention_kernel * c->attention_kernel;
    at_ws v;
    v.A = r->ws;
    v.T = v.A + A16(max_batch * n * hw);
    v.cols = v.T + A16(max_batch * n * c->c);
    v.dcols = v.cols + A16(c->c * kk * hw);
    v.dA = v.dcols + A16(c->c * kk * hw);
    v.dT = v.dA + A16(n * hw);
    v.g0 = v.g1 = NULL;
    v.conv_ws = NULL;
    v.conv_bytes = 0;
    int nh = c->attention_layers - 1;
    if (nh > 0) {
        size_t act = A16((size_t)max_batch * c->c * hw);
        v.g0 = r->ws + head_floats(c, max_batch) + (size_t)nh * layer_floats(c, max_batch);
        v.g1 = v.g0 + act;
        v.conv_ws = v.g1 + act;
        v.conv_bytes = conv_bytes(c, max_batch);
    }
    return v;
}

static at_layer_ws layer_views(const npred_readout *r, int max_batch, int l)
{
    const npred_readout_config *c = &r->cfg;
    size_t act = A16((size_t)max_batch * c->c * c->h * c->w);
    float *p = r->ws + head_floats(c, max_batch) + (size_t)l * layer_floats(c, max_batch);
    at_layer_ws v;
    v.z = p;
    v.v = v.z + act;
    v.a = v.v + act;
    v.mean = (double *)(v.a + act);
    v.invstd = (double *)(v.a + act + A16(2 * (size_t)c->c));
    return v;
}

size_t npred_attention_workspace(const npred_readout *r, int max_batch)
{
    const npred_readout_config *c = &r->cfg;
    size_t s = head_floats(c, max_batch);
    int nh = c->attention_layers - 1;
    if (nh > 0) {
        size_t act = A16((size_t)max_batch * c->c * c->h * c->w);
        s += (size_t)nh * layer_floats(c, max_batch) + 2 * act + A16(conv_bytes(c, max_batch) / sizeof(float) + 1);
    }
    return s;
}


npred_status npred_attention_declare(npred_readout *r, npred_ptable *t)
{
    const npred_readout_config *c = &r->cfg;
    int k = c->attention_kernel, L = c->attention_layers, C = c->c, n = c->n;
    if (k != 1 && k != 3)
        return npred_errorf(NPRED_ERR_CONFIG, "attention_kernel %d: with padding int(k > 1) only 1 and 3 keep the map",
                            k);
    if (L < 1 || L > 64)
        return npred_errorf(NPRED_ERR_CONFIG, "attention_layers %d: expected 1 to 64", L);
    if (c->shared_features || c->shared_grid)
        return npred_errorf(NPRED_ERR_CONFIG, "AttentionReadout has no shared features/grid");
    at_impl *im = calloc(1, sizeof *im + (size_t)(L - 1) * sizeof im->h[0]);
    if (!im) return npred_errorf(NPRED_ERR_NOMEM, "AttentionReadout: cannot allocate %d layer records", L - 1);
    free(r->impl);
    r->impl = im;
    im->nh = L - 1;
    char rest[64];
    if ((r->p_features = npred_readout_param(t, r, "features", 0, NPRED_PT_F32, 2, n, C, 0, 0)) < 0)
        return NPRED_ERR_ARG;
    for (int l = 0; l < im->nh; l++) {
        at_hidden *h = &im->h[l];
#define ADD(field, fmt, buf, dt, nd, d0, d1, d2, d3)                                                                   \
    do {                                                                                                               \
        snprintf(rest, sizeof rest, fmt, l);                                                                           \
        if ((h->field = npred_readout_param(t, r, rest, buf, dt, nd, d0, d1, d2, d3)) < 0) return NPRED_ERR_ARG;       \
    } while (0)
        ADD(w, "attention.conv%d.weight", 0, NPRED_PT_F32, 4, C, C, k, k);
        ADD(b, "attention.conv%d.bias", 0, NPRED_PT_F32, 1, C, 0, 0, 0);
        ADD(gamma, "attention.norm%d.weight", 0, NPRED_PT_F32, 1, C, 0, 0, 0);
        ADD(beta, "attention.norm%d.bias", 0, NPRED_PT_F32, 1, C, 0, 0, 0);
        ADD(rmean, "attention.norm%d.running_mean", 1, NPRED_PT_F32, 1, C, 0, 0, 0);
        ADD(rvar, "attention.norm%d.running_var", 1, NPRED_PT_F32, 1, C, 0, 0, 0);
        ADD(nbt, "attention.norm%d.num_batches_tracked", 1, NPRED_PT_I64, 0, 0, 0, 0, 0);
#undef ADD
    }
    snprintf(rest, sizeof rest, "attention.conv%d.weight", L);
    if ((r->p_att_w = npred_readout_param(t, r, rest, 0, NPRED_PT_F32, 4, n, C, k, k)) < 0) return NPRED_ERR_ARG;
    snprintf(rest, sizeof rest, "attention.conv%d.bias", L);
    if ((r->p_att_b = npred_readout_param(t, r, rest, 0, NPRED_PT_F32, 1, n, 0, 0, 0)) < 0) return NPRED_ERR_ARG;
    if (c->bias && (r->p_bias = npred_readout_param(t, r, "bias", 0, NPRED_PT_F32, 1, n, 0, 0, 0)) < 0)
        return NPRED_ERR_ARG;
    return NPRED_OK;
}

/* xavier_normal_ of a conv weight (O, C, k, k): std = sqrt(2 / (C*k*k + O*k*k)) */
static void xavier(float *w, int O, int C, int k, npred_rng *rng)
{
    double kk = (double)k * k, std = sqrt(2.0 / ((double)C * kk + (double)O * kk));
    for (size_t i = 0; i < (size_t)O * C * k * k; i++) w[i] = (float)(std * npred_rng_normal(rng));
}

/* 0.3.0 order: features ~ N(0, init_noise), (bias: npred_readout_init_params), then
 * Module.apply visits the convs in Sequential order (conv0, conv1, ..., conv<L>):
 * xavier weights, zero biases. BatchNorm gets its defaults (weight 1, bias 0,
 * running_mean 0, running_var 1, num_batches_tracked 0) without drawing. */
void npred_attention_init(npred_readout *r, npred_ptable *t, npred_rng *rng)
{
    const npred_readout_config *c = &r->cfg;
    const at_impl *im = r->impl;
    int C = c->c, k = c->attention_kernel;
    float *f = npred_ptable_ptr(t, r->p_features);
    for (size_t i = 0; i < (size_t)c->n * C; i++) f[i] = (float)(c->init_noise * npred_rng_normal(rng));
    for (int l = 0; l < im->nh; l++) {
        const at_hidden *h = &im->h[l];
        xavier(npred_ptable_ptr(t, h->w), C, C, k, rng);
        float *b = npred_ptable_ptr(t, h->b), *g = npred_ptable_ptr(t, h->gamma), *be = npred_ptable_ptr(t, h->beta);
        float *rm = npred_ptable_ptr(t, h->rmean), *rv = npred_ptable_ptr(t, h->rvar);
        for (int i = 0; i < C; i++) b[i] = be[i] = rm[i] = 0.0f, g[i] = rv[i] = 1.0f;
        npred_ptable_ptr(t, h->nbt)[0] = 0.0f;
    }
    xavier(npred_ptable_ptr(t, r->p_att_w), c->n, C, k, rng);
    float *cb = npred_ptable_ptr(t, r->p_att_b);
    for (int i = 0; i < c->n; i++) cb[i] = 0.0f;
}

/* hidden layers on the whole batch; *z = the last conv's input (B, C, hw) */
static npred_status hidden_forward(npred_readout *r, npred_ptable *t, const float **z, const float *x, int B)
{
    const npred_readout_config *c = &r->cfg;
    const at_impl *im = r->impl;
    at_ws v = views(r, r->max_batch);
    npred_conv2d_params p = hidden_conv(c, B);
    size_t N = (size_t)B * c->c * c->h * c->w;
    const float *in = x;
    for (int l = 0; l < im->nh; l++) {
        const at_hidden *h = &im->h[l];
        at_layer_ws lw = layer_views(r, r->max_batch, l);
        npred_status s = npred_conv2d_forward(lw.z, in, npred_ptable_ptr(t, h->w), npred_ptable_ptr(t, h->b), &p,
                                              v.conv_ws, v.conv_bytes);
        if (s) return npred_error_prefix(s, "attention.conv%d", l);
        float *nbt = npred_ptable_ptr(t, h->nbt);
        int64_t count = (int64_t)nbt[0];
        s = npred_batchnorm2d_forward(lw.v, lw.mean, lw.invstd, npred_ptable_ptr(t, h->rmean),
                                      npred_ptable_ptr(t, h->rvar), &count, lw.z, npred_ptable_ptr(t, h->gamma),
                                      npred_ptable_ptr(t, h->beta), B, c->c, c->h, c->w, r->train,
                                      NPRED_BATCHNORM_MOMENTUM, NPRED_BATCHNORM_EPS);
        if (s) return npred_error_prefix(s, "attention.norm%d", l);
        nbt[0] = (float)count;
        npred_elu_forward(lw.a, lw.v, N);
        in = lw.a;
    }
    *z = in;
    return NPRED_OK;
}

/* g0 (B, C, hw) = dL/d(last conv input) on entry; accumulates into the hidden
 * layers' parameter gradients and into dx (NULL: skipped). Clobbers g0, g1. */
static void hidden_backward(npred_readout *r, npred_ptable *t, float *dx, int B)
{
    const npred_readout_config *c = &r->cfg;
    const at_impl *im = r->impl;
    at_ws v = views(r, r->max_batch);
    npred_conv2d_params p = hidden_conv(c, B);
    size_t N = (size_t)B * c->c * c->h * c->w;
    float *g = v.g0, *tmp = v.g1;
    for (int l = im->nh - 1; l >= 0; l--) {
        const at_hidden *h = &im->h[l];
        at_layer_ws lw = layer_views(r, r->max_batch, l);
        memset(tmp, 0, N * sizeof *tmp); /* dL/d(BN out) */
        npred_elu_backward(tmp, g, lw.v, N);
        memset(g, 0, N * sizeof *g); /* dL/d(conv out) */
        (void)npred_batchnorm2d_backward(g, npred_ptable_gradptr(t, h->gamma), npred_ptable_gradptr(t, h->beta), tmp,
                                         lw.z, npred_ptable_ptr(t, h->gamma), lw.mean, lw.invstd, B, c->c, c->h,
                                         c->w, r->train);
        const float *in = l ? layer_views(r, r->max_batch, l - 1).a : r->x;
        float *din = dx;
        if (l) {
            memset(tmp, 0, N * sizeof *tmp); /* dL/d(previous ELU out) */
            din = tmp;
        }
        (void)npred_conv2d_backward(din, npred_ptable_gradptr(t, h->w), npred_ptable_gradptr(t, h->b), g, in,
                                    npred_ptable_ptr(t, h->w), &p, v.conv_ws, v.conv_bytes);
        float *s = g;
        g = tmp, tmp = s;
    }
}

/* cols (c*9, hw) of x (c, h, w), 3x3, padding 1 */
static void im2col3(float *cols, const float *x, int C, int H, int W)
{
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < C; ch++)
        for (int di = 0; di < 3; di++)
            for (int dj = 0; dj < 3; dj++) {
                float *o = cols + ((size_t)(ch * 3 + di) * 3 + dj) * H * W;
                for (int i = 0; i < H; i++)
                    for (int j = 0; j < W; j++) {
                        int si = i + di - 1, sj = j + dj - 1;
                        o[i * W + j] = si >= 0 && si < H && sj >= 0 && sj < W ? x[((size_t)ch * H + si) * W + sj] : 0;
                    }
            }
}

static void col2im3_add(float *dx, const float *cols, int C, int H, int W)
{
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < C; ch++)
        for (int di = 0; di < 3; di++)
            for (int dj = 0; dj < 3; dj++) {
                const float *g = cols + ((size_t)(ch * 3 + di) * 3 + dj) * H * W;
                for (int i = 0; i < H; i++)
                    for (int j = 0; j < W; j++) {
                        int si = i + di - 1, sj = j + dj - 1;
                        if (si >= 0 && si < H && sj >= 0 && sj < W) dx[((size_t)ch * H + si) * W + sj] += g[i * W + j];
                    }
            }
}

npred_status npred_attention_forward(npred_readout *r, npred_ptable *t, float *y, const float *x, int B)
{
    const npred_readout_config *c = &r->cfg;
    at_ws v = views(r, r->max_batch);
    int n = c->n, C = c->c, hw = c->h * c->w, k = c->attention_kernel, ck = C * k * k;
    const float *W = npred_ptable_ptr(t, r->p_att_w), *cb = npred_ptable_ptr(t, r->p_att_b);
    const float *F = npred_ptable_ptr(t, r->p_features);
    const float *bias = r->p_bias >= 0 ? npred_ptable_ptr(t, r->p_bias) : NULL;
    const float *z = x; /* (B, C, hw) input of the last conv */
    npred_status st = hidden_forward(r, t, &z, x, B);
    if (st) return st;
    for (int b = 0; b < B; b++) {
        const float *xb = x + (size_t)b * C * hw, *zb = z + (size_t)b * C * hw;
        float *A = v.A + (size_t)b * n * hw, *T = v.T + (size_t)b * n * C;
        const float *cols = zb;
        if (k == 3) {
            im2col3(v.cols, zb, C, c->h, c->w);
            cols = v.cols;
        }
        for (int o = 0; o < n; o++)
            for (int i = 0; i < hw; i++) A[(size_t)o * hw + i] = cb[o];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hw, ck, 1.0f, W, ck, cols, hw, 1.0f, A, hw);
#pragma omp parallel for schedule(static)
        for (int o = 0; o < n; o++) {
            float *a = A + (size_t)o * hw, mx = a[0];
            for (int i = 1; i < hw; i++) mx = a[i] > mx ? a[i] : mx;
            double s = 0;
            for (int i = 0; i < hw; i++) s += (a[i] = expf(a[i] - mx));
            float inv = (float)(1.0 / s);
            for (int i = 0; i < hw; i++) a[i] *= inv;
        }
        /* T (n, C) = A (n, hw) . x_b^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, C, hw, 1.0f, A, hw, xb, hw, 0.0f, T, C);
        for (int o = 0; o < n; o++) {
            double s = bias ? bias[o] : 0.0;
            for (int ch = 0; ch < C; ch++) s += (double)T[(size_t)o * C + ch] * F[(size_t)o * C + ch];
            y[(size_t)b * n + o] = (float)s;
        }
    }
    return NPRED_OK;
}

void npred_attention_backward(npred_readout *r, npred_ptable *t, const float *dy, float *dx)
{
    const npred_readout_config *c = &r->cfg;
    at_ws v = views(r, r->max_batch);
    int n = c->n, C = c->c, hw = c->h * c->w, k = c->attention_kernel, ck = C * k * k, B = r->B;
    const at_impl *im = r->impl;
    /* with hidden layers the last conv's input gradient goes to g0 first */
    const float *z = im->nh ? layer_views(r, r->max_batch, im->nh - 1).a : r->x;
    if (im->nh) memset(v.g0, 0, (size_t)B * C * hw * sizeof *v.g0);
    const float *W = npred_ptable_ptr(t, r->p_att_w), *F = npred_ptable_ptr(t, r->p_features);
    float *gW = npred_ptable_gradptr(t, r->p_att_w), *gcb = npred_ptable_gradptr(t, r->p_att_b);
    float *gF = npred_ptable_gradptr(t, r->p_features);
    if (r->p_bias >= 0 && !t->grads_off) {
        float *gb = npred_ptable_gradptr(t, r->p_bias);
        for (int b = 0; b < B; b++)
            for (int o = 0; o < n; o++) gb[o] += dy[(size_t)b * n + o];
    }
    for (int b = 0; b < B; b++) {
        const float *xb = r->x + (size_t)b * C * hw, *A = v.A + (size_t)b * n * hw, *T = v.T + (size_t)b * n * C;
        const float *zb = z + (size_t)b * C * hw;
        float *dxb = dx ? dx + (size_t)b * C * hw : NULL;
        float *dzb = im->nh ? v.g0 + (size_t)b * C * hw : dxb;
        for (int o = 0; o < n; o++) {
            float g = dy[(size_t)b * n + o];
            for (int ch = 0; ch < C; ch++) {
                if (gF) gF[(size_t)o * C + ch] += g * T[(size_t)o * C + ch];
                v.dT[(size_t)o * C + ch] = g * F[(size_t)o * C + ch];
            }
        }
        /* dA (n, hw) = dT (n, C) . x_b (C, hw); dx_b += dT^T . A */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hw, C, 1.0f, v.dT, C, xb, hw, 0.0f, v.dA, hw);
        if (dxb) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, hw, n, 1.0f, v.dT, C, A, hw, 1.0f, dxb, hw);
#pragma omp parallel for schedule(static)
        for (int o = 0; o < n; o++) { /* softmax backward, in place */
            float *d = v.dA + (size_t)o * hw;
            const float *a = A + (size_t)o * hw;
            double s = 0;
            for (int i = 0; i < hw; i++) s += (double)a[i] * d[i];
            double sb = 0;
            for (int i = 0; i < hw; i++) {
                d[i] = a[i] * (d[i] - (float)s);
                sb += d[i];
            }
            if (gcb) gcb[o] += (float)sb;
        }
        const float *cols = zb;
        if (k == 3) {
            im2col3(v.cols, zb, C, c->h, c->w);
            cols = v.cols;
        }
        if (gW) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, ck, hw, 1.0f, v.dA, hw, cols, hw, 1.0f, gW, ck);
        if (!dzb) continue;
        if (k == 1) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, hw, n, 1.0f, W, ck, v.dA, hw, 1.0f, dzb, hw);
        } else {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ck, hw, n, 1.0f, W, ck, v.dA, hw, 0.0f, v.dcols, hw);
            col2im3_add(dzb, v.dcols, C, c->h, c->w);
        }
    }
    if (im->nh) hidden_backward(r, t, dx, B);
}

void npred_attention_repr(const npred_readout *r, char *buf, size_t n)
{
    const npred_readout_config *c = &r->cfg;
    snprintf(buf, n, "AttentionReadout (%d x %d x %d -> %d)", c->c, c->h, c->w, c->n);
}
