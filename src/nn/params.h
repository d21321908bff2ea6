/* The parameter table: every tensor of a model in one allocation.
 *
 * Entries are named by the PyTorch state_dict key of the equivalent
 * neuralpredictors model ("core.features.layer0.conv.weight",
 * "readout.21067-10-18._features", ...). Trainable parameters live in one flat
 * float buffer `data` with a parallel gradient buffer `grad` (so Adam is one
 * loop, an MPI allreduce is one call and an early-stopping snapshot is one
 * memcpy); buffers (BatchNorm running stats, num_batches_tracked, source_grid,
 * Laplace filters) live in a second flat float buffer `bufdata`.
 *
 * Usage: declare every entry (npred_ptable_add), then npred_ptable_alloc, then
 * fetch pointers with npred_ptable_ptr / npred_ptable_gradptr. */
#ifndef NPRED_NN_PARAMS_H
#define NPRED_NN_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "npred/base.h"

#define NPRED_PARAM_MAXDIM 5
#define NPRED_PARAM_NAMELEN 160

typedef enum { NPRED_PT_F32 = 0, NPRED_PT_I64 = 1 } npred_ptype; /* storage is float; I64 exported as int64 */

typedef struct {
    char name[NPRED_PARAM_NAMELEN];
    int ndim;
    int64_t shape[NPRED_PARAM_MAXDIM];
    size_t count;
    size_t offset;   /* into data (parameters) or bufdata (buffers) */
    int is_buffer;   /* 0: trainable parameter; 1: buffer */
    npred_ptype dtype;
    int alias_of;    /* -1, or the index of the entry whose storage this one shares
                        (a parameter shared across sessions appears under both keys) */
} npred_param;

typedef struct {
    npred_param *items;
    int n, cap;
    size_t n_params;  /* floats in data/grad */
    size_t n_buffers; /* floats in bufdata */
    float *data;      /* (n_params) */
    float *grad;      /* (n_params) */
    float *bufdata;   /* (n_buffers) */
    int grads_off;    /* 1: npred_ptable_gradptr returns NULL, so every backward skips its
                         parameter-gradient work (input gradients only, e.g. for MEIs) */
} npred_ptable;

void npred_ptable_init(npred_ptable *t);
void npred_ptable_free(npred_ptable *t);
/* Declare an entry; returns its index (>= 0) or -1 with an error set. */
int npred_ptable_add(npred_ptable *t, const char *name, int is_buffer, npred_ptype dtype, int ndim,
                     const int64_t *shape);
/* Declare `name` as another key for the storage of entry `target` (same shape). */
int npred_ptable_alias(npred_ptable *t, const char *name, int target);
/* Allocate data/grad/bufdata (zeroed). */
npred_status npred_ptable_alloc(npred_ptable *t);
int npred_ptable_find(const npred_ptable *t, const char *name);
float *npred_ptable_ptr(const npred_ptable *t, int idx);     /* data or bufdata */
float *npred_ptable_gradptr(const npred_ptable *t, int idx); /* NULL for buffers and with grads_off */
void npred_ptable_zero_grad(npred_ptable *t);
/* Number of trainable floats whose name starts with prefix (all if NULL). */
size_t npred_ptable_count(const npred_ptable *t, const char *prefix);

#endif
