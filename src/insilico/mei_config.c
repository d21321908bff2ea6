/* The MEI configuration file: sinzlab/mei's gradient_ascent config dictionary
 * (components {"path": ..., "kwargs": {...}}) as JSON, checked strictly. */
#include <cJSON.h>
#include <math.h>
#include <string.h>

#include "npred/insilico.h"

typedef struct {
    const char *file;
    const char *comp; /* component being parsed, for messages */
} ctx;

static npred_status bad(const ctx *c, const char *what, const char *detail)
{
    return npred_errorf(NPRED_ERR_CONFIG, "%s: %s: %s %s", c->file, c->comp, what, detail);
}

static npred_status get_num(const ctx *c, const cJSON *v, const char *name, double *out)
{
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return bad(c, name, "must be a number");
    *out = v->valuedouble;
    return NPRED_OK;
}

static npred_status get_int(const ctx *c, const cJSON *v, const char *name, int *out)
{
    double d = 0;
    npred_status st = get_num(c, v, name, &d);
    if (st) return st;
    if (d != floor(d) || fabs(d) > 1e9) return bad(c, name, "must be an integer");
    *out = (int)d;
    return NPRED_OK;
}

/* a number for both axes, or a [y, x] pair (a Python tuple) */
static npred_status get_pair(const ctx *c, const cJSON *v, const char *name, double *y, double *x)
{
    if (cJSON_IsArray(v)) {
        if (cJSON_GetArraySize(v) != 2) return bad(c, name, "must be a number or a pair [y, x]");
        npred_status st = get_num(c, cJSON_GetArrayItem(v, 0), name, y);
        return st ? st : get_num(c, cJSON_GetArrayItem(v, 1), name, x);
    }
    npred_status st = get_num(c, v, name, y);
    *x = *y;
    return st;
}

/* The component's path and its kwargs object (NULL when absent). */
static npred_status component(const ctx *c, const cJSON *comp, const char **path, const cJSON **kwargs)
{
    if (!cJSON_IsObject(comp)) return bad(c, "", "must be an object {\"path\": ..., \"kwargs\": {...}}");
    *path = NULL;
    *kwargs = NULL;
    for (const cJSON *k = comp->child; k; k = k->next) {
        if (!strcmp(k->string, "path")) {
            if (!cJSON_IsString(k)) return bad(c, "path", "must be a string");
            *path = k->valuestring;
        } else if (!strcmp(k->string, "kwargs")) {
            if (!cJSON_IsObject(k)) return bad(c, "kwargs", "must be an object");
            *kwargs = k;
        } else {
            return npred_errorf(NPRED_ERR_CONFIG, "%s: %s: unknown key '%s' (expected path, kwargs)", c->file, c->comp,
                                k->string);
        }
    }
    if (!*path) return bad(c, "path", "is missing");
    return NPRED_OK;
}

static npred_status unknown_kwarg(const ctx *c, const char *path, const char *key, const char *known)
{
    return npred_errorf(NPRED_ERR_CONFIG, "%s: %s: %s has no kwarg '%s' here (known: %s)", c->file, c->comp, path, key,
                        known);
}

static npred_status unknown_path(const ctx *c, const char *path, const char *known)
{
    return npred_errorf(NPRED_ERR_CONFIG, "%s: %s: unsupported path '%s' (supported: %s)", c->file, c->comp, path,
                        known);
}

static npred_status parse_initial(const ctx *c, const cJSON *v)
{
    const char *path;
    const cJSON *kw;
    npred_status st = component(c, v, &path, &kw);
    if (st) return st;
    if (strcmp(path, "mei.initial.RandomNormal"))
        return unknown_path(c, path, "mei.initial.RandomNormal (a start image is given with npred mei --initial)");
    if (kw && kw->child) return unknown_kwarg(c, path, kw->child->string, "none");
    return NPRED_OK;
}

static npred_status parse_optimizer(npred_mei_config *o, const ctx *c, const cJSON *v)
{
    const char *path;
    const cJSON *kw;
    npred_status st = component(c, v, &path, &kw);
    if (st) return st;
    int adam = !strcmp(path, "torch.optim.Adam");
    if (!adam && strcmp(path, "torch.optim.SGD")) return unknown_path(c, path, "torch.optim.SGD, torch.optim.Adam");
    o->optimizer = adam ? NPRED_MEI_ADAM : NPRED_MEI_SGD;
    o->momentum = 0;
    int has_lr = 0;
    for (const cJSON *k = kw ? kw->child : NULL; k; k = k->next) {
        if (!strcmp(k->string, "lr")) {
            st = get_num(c, k, "lr", &o->lr);
            has_lr = 1;
        } else if (!adam && !strcmp(k->string, "momentum")) {
            st = get_num(c, k, "momentum", &o->momentum);
        } else if (adam && !strcmp(k->string, "betas")) {
            st = cJSON_GetArraySize(k) == 2 && cJSON_IsArray(k)
                     ? get_num(c, cJSON_GetArrayItem(k, 0), "betas", &o->beta1)
                     : bad(c, "betas", "must be a pair [beta1, beta2]");
            if (!st) st = get_num(c, cJSON_GetArrayItem(k, 1), "betas", &o->beta2);
        } else if (adam && !strcmp(k->string, "eps")) {
            st = get_num(c, k, "eps", &o->eps);
        } else {
            return unknown_kwarg(c, path, k->string, adam ? "lr, betas, eps" : "lr, momentum");
        }
        if (st) return st;
    }
    if (!has_lr) return bad(c, "lr", "is required (torch optimizers need it)");
    return NPRED_OK;
}

static npred_status parse_precondition(npred_mei_config *o, const ctx *c, const cJSON *v)
{
    const char *path;
    const cJSON *kw;
    npred_status st = component(c, v, &path, &kw);
    if (st) return st;
    if (strcmp(path, "mei.legacy.ops.GaussianBlur")) return unknown_path(c, path, "mei.legacy.ops.GaussianBlur");
    o->blur = 1;
    o->blur_decay = 0;
    o->truncate = 4;
    o->pad_mode = NPRED_PAD_REFLECT;
    int has_sigma = 0;
    for (const cJSON *k = kw ? kw->child : NULL; k; k = k->next) {
        if (!strcmp(k->string, "sigma")) {
            st = get_pair(c, k, "sigma", &o->sigma_y, &o->sigma_x);
            has_sigma = 1;
        } else if (!strcmp(k->string, "decay_factor")) {
            o->blur_decay = !cJSON_IsNull(k);
            if (o->blur_decay) st = get_num(c, k, "decay_factor", &o->decay_factor);
        } else if (!strcmp(k->string, "truncate")) {
            st = get_num(c, k, "truncate", &o->truncate);
        } else if (!strcmp(k->string, "pad_mode")) {
            const char *m = cJSON_IsString(k) ? k->valuestring : "";
            if (!strcmp(m, "reflect")) o->pad_mode = NPRED_PAD_REFLECT;
            else if (!strcmp(m, "replicate")) o->pad_mode = NPRED_PAD_REPLICATE;
            else if (!strcmp(m, "constant")) o->pad_mode = NPRED_PAD_CONSTANT;
            else st = bad(c, "pad_mode", "must be \"reflect\", \"replicate\" or \"constant\"");
        } else {
            return unknown_kwarg(c, path, k->string, "sigma, decay_factor, truncate, pad_mode");
        }
        if (st) return st;
    }
    if (!has_sigma) return bad(c, "sigma", "is required");
    return NPRED_OK;
}

static npred_status parse_transform(npred_mei_config *o, const ctx *c, const cJSON *v)
{
    const char *path;
    const cJSON *kw;
    npred_status st = component(c, v, &path, &kw);
    if (st) return st;
    if (strcmp(path, "mei.legacy.ops.Jitter")) return unknown_path(c, path, "mei.legacy.ops.Jitter");
    int has = 0;
    for (const cJSON *k = kw ? kw->child : NULL; k; k = k->next) {
        if (strcmp(k->string, "max_jitter")) return unknown_kwarg(c, path, k->string, "max_jitter");
        double y, x;
        if ((st = get_pair(c, k, "max_jitter", &y, &x))) return st;
        if (y != floor(y) || x != floor(x) || y < 0 || x < 0 || y > 1e6 || x > 1e6)
            return bad(c, "max_jitter", "must be a non-negative integer or a pair of them");
        o->jitter_y = (int)y;
        o->jitter_x = (int)x;
        has = 1;
    }
    if (!has) return bad(c, "max_jitter", "is required");
    return NPRED_OK;
}

static npred_status parse_post_one(npred_mei_config *o, const ctx *c, const cJSON *v)
{
    const char *path;
    const cJSON *kw;
    npred_status st = component(c, v, &path, &kw);
    if (st) return st;
    if (!strcmp(path, "mei.legacy.ops.ChangeNorm")) {
        if (o->change_norm) return bad(c, path, "is given twice");
        int has = 0;
        for (const cJSON *k = kw ? kw->child : NULL; k; k = k->next) {
            if (strcmp(k->string, "norm")) return unknown_kwarg(c, path, k->string, "norm");
            if ((st = get_num(c, k, "norm", &o->norm))) return st;
            has = 1;
        }
        if (!has) return bad(c, "norm", "is required");
        o->change_norm = 1;
        return NPRED_OK;
    }
    if (!strcmp(path, "mei.legacy.ops.ClipRange")) {
        if (o->clip) return bad(c, path, "is given twice");
        int has = 0;
        for (const cJSON *k = kw ? kw->child : NULL; k; k = k->next) {
            if (!strcmp(k->string, "x_min")) st = get_num(c, k, "x_min", &o->x_min), has |= 1;
            else if (!strcmp(k->string, "x_max")) st = get_num(c, k, "x_max", &o->x_max), has |= 2;
            else return unknown_kwarg(c, path, k->string, "x_min, x_max");
            if (st) return st;
        }
        if (has != 3) return bad(c, "x_min and x_max", "are required");
        o->clip = 1;
        return NPRED_OK;
    }
    return unknown_path(c, path, "mei.legacy.ops.ChangeNorm, mei.legacy.ops.ClipRange");
}

static npred_status parse_stopper(npred_mei_config *o, const ctx *c, const cJSON *v)
{
    const char *path;
    const cJSON *kw;
    npred_status st = component(c, v, &path, &kw);
    if (st) return st;
    int plateau = !strcmp(path, "npred.stoppers.Plateau");
    if (!plateau && strcmp(path, "mei.stoppers.NumIterations"))
        return unknown_path(c, path, "mei.stoppers.NumIterations, npred.stoppers.Plateau");
    o->plateau_patience = 0;
    int has = 0;
    for (const cJSON *k = kw ? kw->child : NULL; k; k = k->next) {
        if (!plateau && !strcmp(k->string, "num_iterations")) st = get_int(c, k, "num_iterations", &o->num_iterations), has |= 1;
        else if (plateau && !strcmp(k->string, "max_iterations")) st = get_int(c, k, "max_iterations", &o->num_iterations), has |= 1;
        else if (plateau && !strcmp(k->string, "patience")) st = get_int(c, k, "patience", &o->plateau_patience), has |= 2;
        else if (plateau && !strcmp(k->string, "min_delta")) st = get_num(c, k, "min_delta", &o->plateau_min_delta);
        else return unknown_kwarg(c, path, k->string, plateau ? "patience, min_delta, max_iterations" : "num_iterations");
        if (st) return st;
    }
    if (!plateau && !has) return bad(c, "num_iterations", "is required");
    if (plateau && !(has & 2)) return bad(c, "patience", "is required");
    if (plateau && o->plateau_patience < 1) return bad(c, "patience", "must be >= 1");
    return NPRED_OK;
}

static npred_status parse_objectives(const ctx *c, const cJSON *v)
{
    if (!cJSON_IsArray(v)) return bad(c, "", "must be a list");
    for (const cJSON *o = v->child; o; o = o->next) {
        const char *path;
        const cJSON *kw;
        npred_status st = component(c, o, &path, &kw);
        if (st) return st;
        if (strcmp(path, "mei.objectives.EvaluationObjective") && strcmp(path, "mei.objectives.PostProcessedInputObjective"))
            return unknown_path(c, path,
                                "mei.objectives.EvaluationObjective (the trace), "
                                "mei.objectives.PostProcessedInputObjective (the returned MEI)");
        for (const cJSON *k = kw ? kw->child : NULL; k; k = k->next) {
            int iv;
            if (strcmp(k->string, "interval")) return unknown_kwarg(c, path, k->string, "interval");
            if ((st = get_int(c, k, "interval", &iv))) return st;
            if (iv != 1) return bad(c, "interval", "must be 1 (npred records every step)");
        }
    }
    return NPRED_OK;
}

npred_status npred_mei_config_parse(npred_mei_config *o, const char *json, const char *name)
{
    npred_mei_config_default(o);
    /* components a file leaves out are off, as in gradient_ascent */
    o->blur = 0;
    o->change_norm = 0;
    const char *file = name ? name : "MEI config";
    cJSON *root = cJSON_Parse(json ? json : "");
    if (!root) return npred_errorf(NPRED_ERR_FORMAT, "%s: not valid JSON (near '%.20s')", file, cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() : "");
    npred_status st = NPRED_OK;
    if (!cJSON_IsObject(root)) st = npred_errorf(NPRED_ERR_CONFIG, "%s: must hold a JSON object", file);
    for (const cJSON *k = cJSON_IsObject(root) ? root->child : NULL; k && !st; k = k->next) {
        ctx c = {file, k->string};
        if (!strcmp(k->string, "device")) {
            if (!cJSON_IsString(k) || strcmp(k->valuestring, "cpu"))
                st = bad(&c, "", "must be \"cpu\" (npred runs on the CPU)");
        } else if (!strcmp(k->string, "seed")) {
            double d = 0;
            if (!(st = get_num(&c, k, "seed", &d))) {
                if (d < 0 || d != floor(d) || d > 9007199254740992.0) st = bad(&c, "", "must be a non-negative integer");
                else o->seed = (uint64_t)d;
            }
        } else if (!strcmp(k->string, "initial")) {
            st = parse_initial(&c, k);
        } else if (!strcmp(k->string, "optimizer")) {
            st = parse_optimizer(o, &c, k);
        } else if (!strcmp(k->string, "precondition")) {
            st = parse_precondition(o, &c, k);
        } else if (!strcmp(k->string, "transform")) {
            st = parse_transform(o, &c, k);
        } else if (!strcmp(k->string, "postprocessing")) {
            if (cJSON_IsArray(k))
                for (const cJSON *p = k->child; p && !st; p = p->next) st = parse_post_one(o, &c, p);
            else st = parse_post_one(o, &c, k);
        } else if (!strcmp(k->string, "stopper")) {
            st = parse_stopper(o, &c, k);
        } else if (!strcmp(k->string, "objectives")) {
            st = parse_objectives(&c, k);
        } else {
            st = npred_errorf(NPRED_ERR_CONFIG,
                              "%s: unknown key '%s' (known: device, seed, initial, optimizer, precondition, transform, "
                              "postprocessing, stopper, objectives)",
                              file, k->string);
        }
    }
    cJSON_Delete(root);
    if (!st && (st = npred_mei_config_validate(o))) npred_error_prefix(st, "%s", file);
    if (st) return npred_error_prefix(st, "%s", "MEI config");
    return NPRED_OK;
}
