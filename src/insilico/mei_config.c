/* The MEI configuration file: sinzlab/mei's gradient_ascent config dictionary
 * (components {"path": ..., "kwargs": {...}}) as JSON, read with the shared JSON
 * helpers (base/json.h): messages "<file>: key 'optimizer.kwargs.lr': expected ...". */
#include <cJSON.h>
#include <stdio.h>
#include <string.h>

#include "base/json.h"
#include "npred/insilico.h"

#define ANY NPRED_JSON_ANY

/* The reader and the text of its section ("optimizer.", "postprocessing[1].kwargs."). */
typedef struct {
    npred_json_reader r;
    char section[64];
} reader;

static void set_section(reader *m, const char *component, const char *sub)
{
    snprintf(m->section, sizeof m->section, "%s.%s", component, sub);
    m->r.section = m->section;
}

/* A component {"path": one of paths, "kwargs": {...}} named component in messages:
 * *which is the path's index, *kwargs the kwargs object (NULL when absent); on return
 * the section is "<component>.kwargs.". 0 with the error recorded otherwise. */
static int component(reader *m, const char *component, const cJSON *v, const char *const *paths, int n_paths,
                     int *which, const cJSON **kwargs)
{
    *kwargs = NULL;
    if (!cJSON_IsObject(v)) { /* named by the section alone: list items have no key */
        snprintf(m->section, sizeof m->section, "%s", component);
        m->r.section = m->section;
        return npred_json_fail(&m->r, NULL, "an object {\"path\": ..., \"kwargs\": {...}}");
    }
    set_section(m, component, "");
    const cJSON *path = NULL;
    for (const cJSON *k = v->child; k; k = k->next) {
        if (!strcmp(k->string, "path")) path = k;
        else if (!strcmp(k->string, "kwargs")) {
            if (!cJSON_IsObject(k)) return npred_json_fail(&m->r, k, "an object");
            *kwargs = k;
        } else return npred_json_unknown(&m->r, k, "a component has path and kwargs");
    }
    if (!path) return npred_json_missing(&m->r, "path", NULL);
    if (!npred_json_choice(&m->r, path, paths, n_paths, which)) return 0;
    set_section(m, component, "kwargs.");
    return 1;
}

/* a number > 0 */
static int positive(npred_json_reader *r, const cJSON *k, double *out)
{
    if (npred_json_num(r, k, -ANY, ANY, out) && !(*out > 0)) return npred_json_fail(r, k, "a number > 0");
    return !r->st;
}

static int parse_initial(reader *m, const cJSON *v)
{
    static const char *const paths[] = {"mei.initial.RandomNormal"};
    int which;
    const cJSON *kw;
    if (!component(m, "initial", v, paths, 1, &which, &kw)) return 0;
    if (kw && kw->child)
        return npred_json_unknown(&m->r, kw->child, "RandomNormal takes none; a start image is given with npred mei "
                                                    "--initial");
    return 1;
}

static int parse_optimizer(npred_mei_config *o, reader *m, const cJSON *v)
{
    static const char *const paths[] = {"torch.optim.SGD", "torch.optim.Adam"};
    int adam;
    const cJSON *kw;
    if (!component(m, "optimizer", v, paths, 2, &adam, &kw)) return 0;
    o->optimizer = adam ? NPRED_MEI_ADAM : NPRED_MEI_SGD;
    o->momentum = 0;
    int has_lr = 0;
    npred_json_reader *r = &m->r;
    for (const cJSON *k = kw ? kw->child : NULL; k && !r->st; k = k->next) {
        if (!strcmp(k->string, "lr")) has_lr = positive(r, k, &o->lr);
        else if (!adam && !strcmp(k->string, "momentum")) {
            if (npred_json_num(r, k, -ANY, ANY, &o->momentum) && !(o->momentum >= 0 && o->momentum < 1))
                npred_json_fail(r, k, "a number in [0, 1)");
        } else if (adam && !strcmp(k->string, "betas")) {
            double b[2];
            if (!npred_json_pair(r, k, 0, 0, -ANY, ANY, b)) break;
            if (!(b[0] >= 0 && b[0] < 1 && b[1] >= 0 && b[1] < 1)) npred_json_fail(r, k, "a pair of numbers in [0, 1)");
            o->beta1 = b[0];
            o->beta2 = b[1];
        } else if (adam && !strcmp(k->string, "eps")) positive(r, k, &o->eps);
        else npred_json_unknown(r, k, adam ? "torch.optim.Adam takes lr, betas, eps" : "torch.optim.SGD takes lr, momentum");
    }
    if (!r->st && !has_lr) npred_json_missing(r, "lr", "torch optimizers need it");
    return !r->st;
}

static int parse_precondition(npred_mei_config *o, reader *m, const cJSON *v)
{
    static const char *const paths[] = {"mei.legacy.ops.GaussianBlur"};
    static const char *const pads[] = {"reflect", "replicate", "constant"};
    static const npred_pad_mode pad_of[] = {NPRED_PAD_REFLECT, NPRED_PAD_REPLICATE, NPRED_PAD_CONSTANT};
    int which;
    const cJSON *kw;
    if (!component(m, "precondition", v, paths, 1, &which, &kw)) return 0;
    o->blur = 1;
    o->blur_decay = 0;
    o->truncate = 4;
    o->pad_mode = NPRED_PAD_REFLECT;
    int has_sigma = 0;
    npred_json_reader *r = &m->r;
    for (const cJSON *k = kw ? kw->child : NULL; k && !r->st; k = k->next) {
        if (!strcmp(k->string, "sigma")) {
            double s[2];
            if (!(has_sigma = npred_json_pair(r, k, 0, 1, -ANY, ANY, s))) break;
            o->sigma_y = s[0];
            o->sigma_x = s[1];
        } else if (!strcmp(k->string, "decay_factor")) {
            o->blur_decay = npred_json_num_or_null(r, k, -ANY, ANY, &o->decay_factor) == 1;
        } else if (!strcmp(k->string, "truncate")) positive(r, k, &o->truncate);
        else if (!strcmp(k->string, "pad_mode")) {
            int p;
            if (npred_json_choice(r, k, pads, 3, &p)) o->pad_mode = pad_of[p];
        } else npred_json_unknown(r, k, "GaussianBlur takes sigma, decay_factor, truncate, pad_mode");
    }
    if (!r->st && !has_sigma) npred_json_missing(r, "sigma", NULL);
    return !r->st;
}

static int parse_transform(npred_mei_config *o, reader *m, const cJSON *v)
{
    static const char *const paths[] = {"mei.legacy.ops.Jitter"};
    int which;
    const cJSON *kw;
    if (!component(m, "transform", v, paths, 1, &which, &kw)) return 0;
    int has = 0;
    npred_json_reader *r = &m->r;
    for (const cJSON *k = kw ? kw->child : NULL; k && !r->st; k = k->next) {
        double j[2];
        if (strcmp(k->string, "max_jitter")) npred_json_unknown(r, k, "Jitter takes max_jitter");
        else if ((has = npred_json_pair(r, k, 1, 1, 0, 1e6, j))) {
            o->jitter_y = (int)j[0];
            o->jitter_x = (int)j[1];
        }
    }
    if (!r->st && !has) npred_json_missing(r, "max_jitter", NULL);
    return !r->st;
}

/* One postprocessing component (named component in messages). */
static int parse_post_one(npred_mei_config *o, reader *m, const char *component_name, const cJSON *v)
{
    static const char *const paths[] = {"mei.legacy.ops.ChangeNorm", "mei.legacy.ops.ClipRange"};
    int clip;
    const cJSON *kw;
    if (!component(m, component_name, v, paths, 2, &clip, &kw)) return 0;
    npred_json_reader *r = &m->r;
    if (clip ? o->clip : o->change_norm) {
        set_section(m, component_name, "");
        return npred_json_fail(r, cJSON_GetObjectItemCaseSensitive(v, "path"), "another operation (ChangeNorm and ClipRange each at most once)");
    }
    const cJSON *lo = NULL, *hi = NULL, *norm = NULL;
    for (const cJSON *k = kw ? kw->child : NULL; k && !r->st; k = k->next) {
        if (!clip && !strcmp(k->string, "norm")) positive(r, (norm = k), &o->norm);
        else if (clip && !strcmp(k->string, "x_min")) npred_json_num(r, (lo = k), -ANY, ANY, &o->x_min);
        else if (clip && !strcmp(k->string, "x_max")) npred_json_num(r, (hi = k), -ANY, ANY, &o->x_max);
        else npred_json_unknown(r, k, clip ? "ClipRange takes x_min, x_max" : "ChangeNorm takes norm");
    }
    if (r->st) return 0;
    if (!clip && !norm) return npred_json_missing(r, "norm", NULL);
    if (clip && (!lo || !hi)) return npred_json_missing(r, lo ? "x_max" : "x_min", NULL);
    if (clip && !(o->x_min < o->x_max)) return npred_json_fail(r, lo, "a number below x_max (%g)", o->x_max);
    if (clip) o->clip = 1;
    else o->change_norm = 1;
    return 1;
}

static int parse_postprocessing(npred_mei_config *o, reader *m, const cJSON *v)
{
    if (!cJSON_IsArray(v)) return parse_post_one(o, m, "postprocessing", v);
    int i = 0;
    for (const cJSON *p = v->child; p; p = p->next, i++) {
        char name[32];
        snprintf(name, sizeof name, "postprocessing[%d]", i);
        if (!parse_post_one(o, m, name, p)) return 0;
    }
    return 1;
}

static int parse_stopper(npred_mei_config *o, reader *m, const cJSON *v)
{
    static const char *const paths[] = {"mei.stoppers.NumIterations", "npred.stoppers.Plateau"};
    int plateau;
    const cJSON *kw;
    if (!component(m, "stopper", v, paths, 2, &plateau, &kw)) return 0;
    o->plateau_patience = 0;
    int has_iter = 0, has_patience = 0;
    npred_json_reader *r = &m->r;
    for (const cJSON *k = kw ? kw->child : NULL; k && !r->st; k = k->next) {
        if (!strcmp(k->string, plateau ? "max_iterations" : "num_iterations"))
            has_iter = npred_json_int(r, k, 0, 1e8, &o->num_iterations);
        else if (plateau && !strcmp(k->string, "patience"))
            has_patience = npred_json_int(r, k, 1, ANY, &o->plateau_patience);
        else if (plateau && !strcmp(k->string, "min_delta")) npred_json_num(r, k, 0, ANY, &o->plateau_min_delta);
        else npred_json_unknown(r, k, plateau ? "Plateau takes patience, min_delta, max_iterations"
                                              : "NumIterations takes num_iterations");
    }
    if (!r->st && !plateau && !has_iter) npred_json_missing(r, "num_iterations", NULL);
    if (!r->st && plateau && !has_patience) npred_json_missing(r, "patience", NULL);
    return !r->st;
}

static int parse_objectives(reader *m, const cJSON *v)
{
    static const char *const paths[] = {"mei.objectives.EvaluationObjective",
                                        "mei.objectives.PostProcessedInputObjective"};
    if (!cJSON_IsArray(v)) return npred_json_fail(&m->r, v, "a list of objectives");
    int i = 0;
    for (const cJSON *it = v->child; it; it = it->next, i++) {
        char name[32];
        snprintf(name, sizeof name, "objectives[%d]", i);
        int which, iv;
        const cJSON *kw;
        if (!component(m, name, it, paths, 2, &which, &kw)) return 0;
        for (const cJSON *k = kw ? kw->child : NULL; k; k = k->next) {
            if (strcmp(k->string, "interval")) return npred_json_unknown(&m->r, k, "an objective takes interval");
            if (npred_json_int(&m->r, k, -ANY, ANY, &iv) && iv != 1)
                return npred_json_fail(&m->r, k, "1 (npred records every step)");
            if (m->r.st) return 0;
        }
    }
    return 1;
}

npred_status npred_mei_config_parse(npred_mei_config *o, const char *json, const char *name)
{
    npred_mei_config_default(o);
    /* components a file leaves out are off, as in gradient_ascent */
    o->blur = 0;
    o->change_norm = 0;
    reader m = {{name ? name : "MEI config", "", NPRED_OK}, ""};
    npred_json_reader *r = &m.r;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json ? json : "", &end, 1);
    if (!root) return npred_errorf(NPRED_ERR_CONFIG, "%s: invalid JSON near '%.20s'", r->where, end ? end : "");
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return npred_errorf(NPRED_ERR_CONFIG, "%s: expected a JSON object", r->where);
    }
    static const char *const devices[] = {"cpu"};
    npred_json_unique_keys(r, root);
    for (const cJSON *k = root->child; k && !r->st; k = k->next) {
        m.r.section = "";
        int dev;
        int64_t seed;
        if (!strcmp(k->string, "device")) npred_json_choice(r, k, devices, 1, &dev);
        else if (!strcmp(k->string, "seed")) {
            if (npred_json_i64(r, k, 0, 9007199254740992.0, &seed)) o->seed = (uint64_t)seed;
        } else if (!strcmp(k->string, "initial")) parse_initial(&m, k);
        else if (!strcmp(k->string, "optimizer")) parse_optimizer(o, &m, k);
        else if (!strcmp(k->string, "precondition")) parse_precondition(o, &m, k);
        else if (!strcmp(k->string, "transform")) parse_transform(o, &m, k);
        else if (!strcmp(k->string, "postprocessing")) parse_postprocessing(o, &m, k);
        else if (!strcmp(k->string, "stopper")) parse_stopper(o, &m, k);
        else if (!strcmp(k->string, "objectives")) parse_objectives(&m, k);
        else
            npred_json_unknown(r, k, "known: device, seed, initial, optimizer, precondition, transform, "
                                     "postprocessing, stopper, objectives");
    }
    cJSON_Delete(root);
    npred_status st = r->st;
    if (!st && (st = npred_mei_config_validate(o))) npred_error_prefix(st, "%s", r->where);
    return st;
}
