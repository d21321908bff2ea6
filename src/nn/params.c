#include "nn/params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void npred_ptable_init(npred_ptable *t) { memset(t, 0, sizeof *t); }

void npred_ptable_free(npred_ptable *t)
{
    free(t->items);
    free(t->data);
    free(t->grad);
    free(t->bufdata);
    memset(t, 0, sizeof *t);
}

int npred_ptable_add(npred_ptable *t, const char *name, int is_buffer, npred_ptype dtype, int ndim,
                     const int64_t *shape)
{
    if (t->data || t->bufdata) {
        npred_errorf(NPRED_ERR_ARG, "parameter table: '%s' declared after allocation", name);
        return -1;
    }
    if (ndim < 0 || ndim > NPRED_PARAM_MAXDIM || strlen(name) >= NPRED_PARAM_NAMELEN) {
        npred_errorf(NPRED_ERR_ARG, "parameter table: invalid entry '%s'", name);
        return -1;
    }
    if (npred_ptable_find(t, name) >= 0) {
        npred_errorf(NPRED_ERR_ARG, "parameter table: duplicate entry '%s'", name);
        return -1;
    }
    if (t->n == t->cap) {
        int cap = t->cap ? 2 * t->cap : 32;
        npred_param *it = realloc(t->items, (size_t)cap * sizeof *it);
        if (!it) {
            npred_errorf(NPRED_ERR_NOMEM, "parameter table: out of memory");
            return -1;
        }
        t->items = it;
        t->cap = cap;
    }
    npred_param *p = &t->items[t->n];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->count = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            npred_errorf(NPRED_ERR_ARG, "parameter table: negative dimension in '%s'", name);
            return -1;
        }
        p->shape[i] = shape[i];
        p->count *= (size_t)shape[i];
    }
    p->is_buffer = is_buffer;
    p->dtype = dtype;
    p->alias_of = -1;
    /* keep every tensor 16-float aligned inside the flat buffers (64 bytes) */
    size_t *total = is_buffer ? &t->n_buffers : &t->n_params;
    p->offset = *total;
    *total += (p->count + 15) / 16 * 16;
    return t->n++;
}

int npred_ptable_alias(npred_ptable *t, const char *name, int target)
{
    if (target < 0 || target >= t->n) {
        npred_errorf(NPRED_ERR_ARG, "parameter table: alias '%s' of a missing entry", name);
        return -1;
    }
    while (t->items[target].alias_of >= 0) target = t->items[target].alias_of;
    npred_param src = t->items[target];
    size_t n_params = t->n_params, n_buffers = t->n_buffers;
    int idx = npred_ptable_add(t, name, src.is_buffer, src.dtype, src.ndim, src.shape);
    if (idx < 0) return -1;
    t->n_params = n_params; /* an alias takes no storage of its own */
    t->n_buffers = n_buffers;
    t->items[idx].offset = src.offset;
    t->items[idx].alias_of = target;
    return idx;
}

npred_status npred_ptable_alloc(npred_ptable *t)
{
    size_t np = t->n_params ? t->n_params : 16, nb = t->n_buffers ? t->n_buffers : 16; /* multiples of 16 */
    /* calloc: large blocks come zeroed from the kernel and are only committed when
     * touched (an eval-only model never touches its gradient buffer) */
    t->data = calloc(np, sizeof(float));
    t->grad = calloc(np, sizeof(float));
    t->bufdata = calloc(nb, sizeof(float));
    if (!t->data || !t->grad || !t->bufdata)
        return npred_errorf(NPRED_ERR_NOMEM, "parameter table: cannot allocate %zu floats", np + nb);
    return NPRED_OK;
}

int npred_ptable_find(const npred_ptable *t, const char *name)
{
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->items[i].name, name)) return i;
    return -1;
}

float *npred_ptable_ptr(const npred_ptable *t, int idx)
{
    if (idx < 0 || idx >= t->n) return NULL;
    const npred_param *p = &t->items[idx];
    return (p->is_buffer ? t->bufdata : t->data) + p->offset;
}

float *npred_ptable_gradptr(const npred_ptable *t, int idx)
{
    if (t->grads_off || idx < 0 || idx >= t->n || t->items[idx].is_buffer) return NULL;
    return t->grad + t->items[idx].offset;
}

void npred_ptable_zero_grad(npred_ptable *t)
{
    if (t->grad) memset(t->grad, 0, (t->n_params ? t->n_params : 16) * sizeof(float));
}

size_t npred_ptable_count(const npred_ptable *t, const char *prefix)
{
    size_t c = 0, pl = prefix ? strlen(prefix) : 0;
    for (int i = 0; i < t->n; i++)
        if (!t->items[i].is_buffer && t->items[i].alias_of < 0 && (!prefix || !strncmp(t->items[i].name, prefix, pl))) c += t->items[i].count;
    return c;
}
