/* A core evaluated on a crop of its input (crop.h). */
#include "cores/crop.h"

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
        L->att_kqv = L->att_d = NULL;
        L->weff = L->dweff = NULL;
        L->basis = NULL;
    }
    dst->output = NULL;
    dst->owns_output = 0;
    for (int i = 0; i < 3; i++) dst->g[i] = NULL;
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
