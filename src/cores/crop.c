/* A core evaluated on a crop of its input (crop.h). */
#include "cores/crop.h"

#include "kernels/fast_exp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

npred_status npred_core_receptive_field(const npred_core *core, int *lo, int *hi)
{
    const npred_core_config *c = &core->cfg;
    *lo = *hi = 0;
    if (c->rot_eq) return npred_errorf(NPRED_ERR_UNSUPPORTED, "core: a RotationEquivariant2dCore is not cropped");
    for (int l = 0; l < c->layers; l++) {
        const npred_core_layer *L = &core->L[l];
        if (L->has_se)
            return npred_errorf(NPRED_ERR_UNSUPPORTED, "core layer %d: a squeeze-excitation block reads the whole map",
                                l);
        if (L->att) return npred_errorf(NPRED_ERR_UNSUPPORTED, "core layer %d: an attention conv is not cropped", l);
        /* the spatial conv: the only one in a plain layer, the middle one in a depth-separable layer */
        const npred_conv2d_params *p = &L->cp[L->ds ? 1 : 0];
        if (p->stride_h != 1 || p->stride_w != 1)
            return npred_errorf(NPRED_ERR_UNSUPPORTED, "core layer %d: stride %d is not cropped", l, p->stride_h);
        if (p->kh != p->kw || p->pad_h != p->pad_w || p->dil_h != p->dil_w)
            return npred_errorf(NPRED_ERR_UNSUPPORTED, "core layer %d: a non-square kernel is not cropped", l);
        /* output o reads input o - pad + dil * j, j = 0 .. k - 1 */
        *lo += p->pad_h;
        *hi += p->dil_h * (p->kh - 1) - p->pad_h;
    }
    return NPRED_OK;
}

npred_status npred_core_resized(npred_core *dst, const npred_core *src, const npred_ptable *t, int in_h, int in_w,
                                int max_batch)
{
    int lo, hi;
    npred_status s = npred_core_receptive_field(src, &lo, &hi);
    if (s) return s;
    *dst = *src;
    /* nothing of src's memory: npred_core_setup allocates dst's own */
    for (int l = 0; l < NPRED_CORE_MAXLAYERS; l++) {
        npred_core_layer *L = &dst->L[l];
        L->in = NULL;
        L->owns_in = 0;
        L->t[0] = L->t[1] = NULL;
        L->z = L->v = L->u = L->a = L->out = NULL;
        L->se_pool = L->se_h = L->se_s = NULL;
        L->mean = L->invstd = NULL;
        L->dout = NULL;
        L->owns_dout = 0;
        L->att_kqv = L->att_d = NULL;
        L->weff = L->dweff = NULL;
        L->basis = NULL;
    }
    dst->output = NULL;
    dst->owns_output = 0;
    /* no bf16 block scratch: a resized core's forwards (followed by a backward) take the
     * bf16 GEMM path, as the source core's non-lean eval forwards do */
    dst->bf_ws = NULL;
    dst->bf_ws_per = 0;
    dst->bf_ws_threads = 0;
    dst->rc = 0;
    dst->output_in_dy = 0; /* its caller reads the output itself */
    for (int i = 0; i < 3; i++) dst->g[i] = NULL;
    dst->pstats = NULL;
    dst->bncoef = NULL;
    dst->ws = NULL;
    dst->ws_bytes = 0;
    dst->x = NULL;
    dst->B = 0;
    dst->in_h = in_h;
    dst->in_w = in_w;
    int h = in_h, w = in_w;
    for (int l = 0; l < dst->cfg.layers; l++) {
        npred_core_layer *L = &dst->L[l];
        L->hin = h;
        L->win = w;
        for (int i = 0; i < L->nconv; i++) {
            L->cp[i].h = h;
            L->cp[i].w = w;
            int oh, ow;
            if ((s = npred_conv2d_output_size(&L->cp[i], &oh, &ow)) || oh < 1 || ow < 1) {
                memset(dst, 0, sizeof *dst);
                return npred_errorf(NPRED_ERR_SHAPE, "core: a %dx%d crop leaves layer %d empty", in_h, in_w, l);
            }
            h = oh;
            w = ow;
        }
        L->hout = h;
        L->wout = w;
    }
    dst->out_h = dst->L[dst->cfg.stack[0]].hout;
    dst->out_w = dst->L[dst->cfg.stack[0]].wout;
    if ((s = npred_core_setup(dst, t, max_batch))) npred_core_free(dst);
    return s;
}

/* ------------------------------------------------------------------ cone --- */

typedef struct {
    int cin, c, ds, has_bn, has_act;
    int k, pad, dil, e;       /* spatial conv; e = dil (k - 1), its reach */
    npred_conv2d_params pin, psp, pout; /* 1x1 in (ds), spatial (valid, on the zero-filled region), 1x1 out (ds) */
    const float *w[3], *b[3]; /* refreshed from the table on every forward */
    float *P;                 /* spatial conv input (cin or c, ph, pw) */
    float *t0, *t1;           /* ds: 1x1 in output on the input region (c, s_in), spatial output (c, s_out) */
    float *z, *a;             /* conv output, activation (c, s_out) */
    int ph, pw;               /* P's size: output region + e */
} cone_layer;

struct npred_core_cone {
    const npred_core *core;
    int L;
    cone_layer l[NPRED_CORE_MAXLAYERS];
    int M[2][NPRED_CORE_MAXLAYERS + 1]; /* map size per axis (0 rows, 1 columns): level 0 the image, l + 1 layer l */
    int s[2][NPRED_CORE_MAXLAYERS + 1]; /* region size */
    int o[2][NPRED_CORE_MAXLAYERS + 1]; /* region starts of the last forward */
    float *g[4];                        /* backward scratch, each the largest region tensor */
    void *ws;
    size_t ws_bytes;
    const float *image;
};

void npred_core_cone_free(npred_core_cone *c)
{
    if (!c) return;
    for (int l = 0; l < c->L; l++) {
        free(c->l[l].P);
        free(c->l[l].t0);
        free(c->l[l].t1);
        free(c->l[l].z);
        free(c->l[l].a);
    }
    for (int i = 0; i < 4; i++) free(c->g[i]);
    free(c->ws);
    free(c);
}

int npred_core_cone_levels(const npred_core_cone *c) { return c->L + 1; }

void npred_core_cone_output_size(const npred_core_cone *c, int *h, int *w)
{
    *h = c->s[0][c->L];
    *w = c->s[1][c->L];
}

npred_status npred_core_cone_create(npred_core_cone **out, const npred_core *core)
{
    *out = NULL;
    int lo, hi;
    npred_status st = npred_core_receptive_field(core, &lo, &hi);
    if (st) return st;
    const npred_core_config *cf = &core->cfg;
    if (cf->skip > 1) return npred_errorf(NPRED_ERR_UNSUPPORTED, "core cone: skip connections");
    if (cf->n_stack != 1 || cf->stack[0] != cf->layers - 1)
        return npred_errorf(NPRED_ERR_UNSUPPORTED, "core cone: a stack of layers other than the last");
    npred_core_cone *c = calloc(1, sizeof *c);
    if (!c) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    c->core = core;
    c->L = cf->layers;
    c->M[0][0] = core->in_h;
    c->M[1][0] = core->in_w;
    for (int l = 0; l < c->L; l++) {
        const npred_core_layer *L = &core->L[l];
        if (L->p_bias2d >= 0 || L->p_scale2d >= 0) {
            npred_core_cone_free(c);
            return npred_errorf(NPRED_ERR_UNSUPPORTED, "core cone: a Bias2D / Scale2D layer");
        }
        cone_layer *q = &c->l[l];
        const npred_conv2d_params *sp = &L->cp[L->ds ? 1 : 0];
        q->cin = L->cin, q->c = L->cout, q->ds = L->ds, q->has_bn = L->has_bn, q->has_act = L->has_act;
        q->k = sp->kh, q->pad = sp->pad_h, q->dil = sp->dil_h, q->e = sp->dil_h * (sp->kh - 1);
        c->M[0][l + 1] = L->hout;
        c->M[1][l + 1] = L->wout;
    }
    /* region sizes from the top: 2 taps, then each layer's reach */
    for (int a = 0; a < 2; a++) {
        c->s[a][c->L] = 2 < c->M[a][c->L] ? 2 : c->M[a][c->L];
        for (int l = c->L - 1; l >= 0; l--) {
            int need = c->s[a][l + 1] + c->l[l].e;
            c->s[a][l] = need < c->M[a][l] ? need : c->M[a][l];
        }
    }
    size_t gmax = 0, ws = 0;
    for (int l = 0; l < c->L && !st; l++) {
        cone_layer *q = &c->l[l];
        const npred_core_layer *L = &core->L[l];
        int hi_ = c->s[0][l], wi = c->s[1][l], ho = c->s[0][l + 1], wo = c->s[1][l + 1];
        q->ph = ho + q->e;
        q->pw = wo + q->e;
        int pc = q->ds ? q->c : q->cin; /* channels of the spatial conv's input */
        q->psp = npred_conv2d_params_square(1, pc, q->ph, q->pw, q->c, q->k, 1, 0, q->dil, q->ds ? q->c : 1);
        q->psp.h = q->ph, q->psp.w = q->pw;
        if (q->ds) {
            q->pin = npred_conv2d_params_square(1, q->cin, hi_, wi, q->c, 1, 1, 0, 1, 1);
            q->pout = npred_conv2d_params_square(1, q->c, ho, wo, q->c, 1, 1, 0, 1, 1);
            q->pin.bf16 = L->cp[0].bf16, q->pout.bf16 = L->cp[2].bf16;
        }
        q->psp.bf16 = L->cp[L->ds ? 1 : 0].bf16; /* the model's precision */
        size_t nP = (size_t)pc * q->ph * q->pw, nin = (size_t)q->c * hi_ * wi, nout = (size_t)q->c * ho * wo;
        q->P = malloc(sizeof(float) * nP);
        q->z = malloc(sizeof(float) * nout);
        q->a = malloc(sizeof(float) * nout);
        if (q->ds) {
            q->t0 = malloc(sizeof(float) * nin);
            q->t1 = malloc(sizeof(float) * nout);
        }
        if (!q->P || !q->z || !q->a || (q->ds && (!q->t0 || !q->t1)))
            st = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        size_t nx = (size_t)q->cin * hi_ * wi;
        size_t m = nP > nin ? nP : nin;
        if (nout > m) m = nout;
        if (nx > m) m = nx;
        if (m > gmax) gmax = m;
        const npred_conv2d_params *ps[3] = {&q->pin, &q->psp, &q->pout};
        for (int i = 0; i < 3; i++) {
            if (!q->ds && i != 1) continue;
            size_t b = npred_conv2d_workspace_size(ps[i], NPRED_CONV2D_ALGO_AUTO);
            if (b > ws) ws = b;
        }
    }
    for (int i = 0; i < 4 && !st; i++)
        if (!(c->g[i] = malloc(sizeof(float) * gmax))) st = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    if (!st && ws) {
        c->ws = aligned_alloc(64, (ws + 63) / 64 * 64);
        c->ws_bytes = ws;
        if (!c->ws) st = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    }
    if (st) {
        npred_core_cone_free(c);
        return st;
    }
    *out = c;
    return NPRED_OK;
}

static int clamp_start(int v, int size, int map) { return v < 0 ? 0 : v > map - size ? map - size : v; }

void npred_core_cone_place(const npred_core_cone *c, int ty, int tx, int *oy, int *ox)
{
    int *o[2] = {oy, ox}, t[2] = {ty, tx};
    for (int a = 0; a < 2; a++) {
        o[a][c->L] = clamp_start(t[a], c->s[a][c->L], c->M[a][c->L]);
        for (int l = c->L - 1; l >= 0; l--)
            o[a][l] = clamp_start(o[a][l + 1] - c->l[l].pad, c->s[a][l], c->M[a][l]);
    }
}

/* P (ch, ph, pw) = src's region (ch, sh, sw at map start sy, sx) read at map positions
 * [y0, y0 + ph) x [x0, x0 + pw), zero outside the map (mh, mw) */
static void fill_region(float *P, int ph, int pw, int y0, int x0, const float *src, int sh, int sw, int sy, int sx,
                        int mh, int mw, int ch)
{
    for (int k = 0; k < ch; k++)
        for (int i = 0; i < ph; i++) {
            float *row = P + ((size_t)k * ph + i) * pw;
            int y = y0 + i;
            if (y < 0 || y >= mh) {
                memset(row, 0, sizeof(float) * (size_t)pw);
                continue;
            }
            const float *s = src + ((size_t)k * sh + (y - sy)) * sw - sx;
            for (int j = 0; j < pw; j++) {
                int x = x0 + j;
                row[j] = x >= 0 && x < mw ? s[x] : 0.0f;
            }
        }
}

/* the adjoint: dst's region += P at the map positions inside the map */
static void scatter_region(float *dst, int sh, int sw, int sy, int sx, const float *P, int ph, int pw, int y0, int x0,
                           int mh, int mw, int ch)
{
    for (int k = 0; k < ch; k++)
        for (int i = 0; i < ph; i++) {
            int y = y0 + i;
            if (y < 0 || y >= mh) continue;
            const float *row = P + ((size_t)k * ph + i) * pw;
            float *d = dst + ((size_t)k * sh + (y - sy)) * sw - sx;
            for (int j = 0; j < pw; j++) {
                int x = x0 + j;
                if (x >= 0 && x < mw) d[x] += row[j];
            }
        }
}

/* eval BatchNorm scale and shift of channel ch: v = z * sc + sh */
static void bn_affine(const npred_core_layer *L, const npred_ptable *t, int ch, float *sc, float *sh)
{
    if (!L->has_bn) {
        *sc = 1.0f, *sh = 0.0f;
        return;
    }
    const float *rm = npred_ptable_ptr(t, L->p_rmean), *rv = npred_ptable_ptr(t, L->p_rvar);
    double g = L->p_gamma >= 0 ? npred_ptable_ptr(t, L->p_gamma)[ch] : 1.0;
    double b = L->p_beta >= 0 ? npred_ptable_ptr(t, L->p_beta)[ch] : 0.0;
    double inv = 1.0 / sqrt((double)rv[ch] + 1e-5);
    *sc = (float)(g * inv);
    *sh = (float)(b - rm[ch] * g * inv);
}

npred_status npred_core_cone_forward(npred_core_cone *c, const npred_ptable *t, const float *image, const int *oy,
                                     const int *ox, const float **out)
{
    const npred_core *core = c->core;
    float xs = core->act.xshift, ys = core->act.yshift;
    npred_status st;
    memcpy(c->o[0], oy, sizeof(int) * (size_t)(c->L + 1));
    memcpy(c->o[1], ox, sizeof(int) * (size_t)(c->L + 1));
    c->image = image;
    for (int l = 0; l < c->L; l++) {
        const npred_core_layer *L = &core->L[l];
        cone_layer *q = &c->l[l];
        for (int i = 0; i < 3; i++) {
            q->w[i] = L->p_w[i] >= 0 ? npred_ptable_ptr(t, L->p_w[i]) : NULL;
            q->b[i] = L->p_b[i] >= 0 ? npred_ptable_ptr(t, L->p_b[i]) : NULL;
        }
        /* the source of the spatial conv: the image (layer 0), the previous activation, or its 1x1 conv */
        const float *src;
        int sy, sx, sh, sw, ch = q->ds ? q->c : q->cin;
        if (l == 0) {
            src = image, sy = sx = 0, sh = c->M[0][0], sw = c->M[1][0];
        } else {
            src = c->l[l - 1].a, sy = c->o[0][l], sx = c->o[1][l], sh = c->s[0][l], sw = c->s[1][l];
        }
        if (q->ds) {
            if ((st = npred_conv2d_forward(q->t0, src, q->w[0], q->b[0], &q->pin, c->ws, c->ws_bytes))) return st;
            src = q->t0;
        }
        fill_region(q->P, q->ph, q->pw, c->o[0][l + 1] - q->pad, c->o[1][l + 1] - q->pad, src, sh, sw, sy, sx,
                    c->M[0][l], c->M[1][l], ch);
        if (q->ds) {
            if ((st = npred_conv2d_forward(q->t1, q->P, q->w[1], q->b[1], &q->psp, c->ws, c->ws_bytes)) ||
                (st = npred_conv2d_forward(q->z, q->t1, q->w[2], q->b[2], &q->pout, c->ws, c->ws_bytes)))
                return st;
        } else if ((st = npred_conv2d_forward(q->z, q->P, q->w[0], q->b[0], &q->psp, c->ws, c->ws_bytes))) {
            return st;
        }
        size_t hw = (size_t)c->s[0][l + 1] * c->s[1][l + 1];
        for (int k = 0; k < q->c; k++) {
            float sc, sh0;
            bn_affine(L, t, k, &sc, &sh0);
            const float *z = q->z + k * hw;
            float *a = q->a + k * hw;
            for (size_t i = 0; i < hw; i++) {
                float v = z[i] * sc + sh0;
                if (q->has_act) {
                    float u = v - xs;
                    v = (u > 0 ? u : fast_expm1(u)) + ys;
                }
                a[i] = v;
            }
        }
    }
    *out = c->l[c->L - 1].a;
    return NPRED_OK;
}

npred_status npred_core_cone_backward(npred_core_cone *c, const npred_ptable *t, const float *dout, float *dimage)
{
    const npred_core *core = c->core;
    float xs = core->act.xshift;
    npred_status st;
    const float *dA = dout;
    for (int l = c->L - 1; l >= 0; l--) {
        const npred_core_layer *L = &core->L[l];
        cone_layer *q = &c->l[l];
        size_t hw = (size_t)c->s[0][l + 1] * c->s[1][l + 1];
        float *dz = c->g[0];
        for (int k = 0; k < q->c; k++) {
            float sc, sh0;
            bn_affine(L, t, k, &sc, &sh0);
            const float *z = q->z + k * hw, *d = dA + k * hw;
            float *o = dz + k * hw;
            for (size_t i = 0; i < hw; i++) {
                float g = d[i];
                if (q->has_act) {
                    float u = z[i] * sc + sh0 - xs;
                    g = u > 0 ? g : g * fast_exp(u);
                }
                o[i] = g * sc;
            }
        }
        int ch = q->ds ? q->c : q->cin;
        float *dP = c->g[1];
        memset(dP, 0, sizeof(float) * (size_t)ch * q->ph * q->pw);
        if (q->ds) {
            float *dt1 = c->g[2];
            memset(dt1, 0, sizeof(float) * (size_t)q->c * hw);
            if ((st = npred_conv2d_backward(dt1, NULL, NULL, dz, q->t1, q->w[2], &q->pout, c->ws, c->ws_bytes)) ||
                (st = npred_conv2d_backward(dP, NULL, NULL, dt1, q->P, q->w[1], &q->psp, c->ws, c->ws_bytes)))
                return st;
        } else if ((st = npred_conv2d_backward(dP, NULL, NULL, dz, q->P, q->w[0], &q->psp, c->ws, c->ws_bytes))) {
            return st;
        }
        /* dP back onto the source region: the image, the previous activation, or the 1x1 conv's output */
        int y0 = c->o[0][l + 1] - q->pad, x0 = c->o[1][l + 1] - q->pad, mh = c->M[0][l], mw = c->M[1][l];
        if (l == 0) {
            scatter_region(dimage, mh, mw, 0, 0, dP, q->ph, q->pw, y0, x0, mh, mw, ch);
            break;
        }
        int sy = c->o[0][l], sx = c->o[1][l], sh = c->s[0][l], sw = c->s[1][l];
        float *dprev = c->g[3];
        memset(dprev, 0, sizeof(float) * (size_t)q->cin * sh * sw);
        if (q->ds) {
            float *dt0 = c->g[2];
            memset(dt0, 0, sizeof(float) * (size_t)q->c * sh * sw);
            scatter_region(dt0, sh, sw, sy, sx, dP, q->ph, q->pw, y0, x0, mh, mw, ch);
            if ((st = npred_conv2d_backward(dprev, NULL, NULL, dt0, c->l[l - 1].a, q->w[0], &q->pin, c->ws,
                                            c->ws_bytes)))
                return st;
        } else {
            scatter_region(dprev, sh, sw, sy, sx, dP, q->ph, q->pw, y0, x0, mh, mw, ch);
        }
        dA = dprev; /* g[3]: consumed by the next layer's first loop, before g[3] is written again */
    }
    return NPRED_OK;
}
