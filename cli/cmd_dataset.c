/* npred dataset PATH... [--json]: summary of SENSORIUM scans (folder or .zip), static
 * (2022) or movie (2023) layout. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "npred/data.h"
#include "npred/video.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: npred dataset PATH... [--json] [--key KEY]\n\n"
               "Open SENSORIUM static scans (a dataset folder, its .zip or an HDF5 StaticImageSet\n"
               "file, read in place) and print,\n"
               "per scan: data_key, trials per tier, neurons, image shape and value range, the data\n"
               "fields present and the statistics (meta/statistics/<field>/all).\n"
               "A SENSORIUM 2023 movie scan (a folder or .zip with data/videos) is recognised and\n"
               "summarised as such: trials per tier, neurons, frame size and frames per file, the\n"
               "fields with their values per frame, the statistics present, the neuron info.\n\n"
               "options:\n"
               "  --json      one JSON array with an object per scan\n"
               "  --key KEY   data_key to use instead of the one derived from the name (one PATH only)\n"
               "  -h, --help  this help\n");
}

static cJSON *float_array(const float *v, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

static cJSON *describe_json(const npred_dataset *d)
{
    npred_dataset_info di;
    npred_dataset_get_info(d, &di);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "path", di.path);
    cJSON_AddStringToObject(o, "data_key", di.data_key);
    cJSON_AddBoolToObject(o, "zip", di.is_zip);
    cJSON_AddBoolToObject(o, "hdf5", di.is_hdf5);
    cJSON_AddNumberToObject(o, "n_trials", (double)di.n_trials);
    cJSON *tiers = cJSON_AddObjectToObject(o, "tiers");
    for (int t = 0; t < NPRED_TIER_COUNT; t++) cJSON_AddNumberToObject(tiers, npred_tier_name((npred_tier)t), (double)di.tier_count[t]);
    cJSON_AddNumberToObject(o, "n_neurons", (double)di.n_neurons);
    int shape[3] = {di.img_c, di.img_h, di.img_w};
    cJSON_AddItemToObject(o, "image_shape", cJSON_CreateIntArray(shape, 3));
    cJSON *range = cJSON_AddArrayToObject(o, "image_range");
    cJSON_AddItemToArray(range, cJSON_CreateNumber(di.img_min));
    cJSON_AddItemToArray(range, cJSON_CreateNumber(di.img_max));
    cJSON *fields = cJSON_AddObjectToObject(o, "fields");
    cJSON *stats = cJSON_AddObjectToObject(o, "statistics");
    for (int f = 0; f < NPRED_FIELD_COUNT; f++) {
        if (di.has_field[f]) cJSON_AddNumberToObject(fields, npred_field_name((npred_field)f), (double)di.field_size[f]);
        npred_dataset_stats st;
        npred_dataset_get_stats(d, (npred_field)f, &st);
        if (!st.present) continue;
        cJSON *s = cJSON_AddObjectToObject(stats, npred_field_name((npred_field)f));
        const float *v[5] = {st.mean, st.std, st.min, st.max, st.median};
        const char *names[5] = {"mean", "std", "min", "max", "median"};
        for (int k = 0; k < 5; k++)
            if (v[k]) cJSON_AddItemToObject(s, names[k], float_array(v[k], st.count));
    }
    const char *const *names;
    size_t n = npred_dataset_trial_info_names(d, &names);
    cJSON_AddItemToObject(o, "trial_info", cJSON_CreateStringArray(names, (int)n));
    n = npred_dataset_neuron_info_names(d, &names);
    cJSON_AddItemToObject(o, "neuron_info", cJSON_CreateStringArray(names, (int)n));
    return o;
}

/* mean of a statistic over its elements, and its range, for the text view */
static void print_stat_line(const char *name, const float *v, size_t n)
{
    if (!v) return;
    if (n == 1) {
        printf(" %s %.6g", name, v[0]);
        return;
    }
    double s = 0, lo = v[0], hi = v[0];
    for (size_t i = 0; i < n; i++) {
        s += v[i];
        if (v[i] < lo) lo = v[i];
        if (v[i] > hi) hi = v[i];
    }
    if (n <= 3) {
        printf(" %s [", name);
        for (size_t i = 0; i < n; i++) printf("%s%.6g", i ? ", " : "", v[i]);
        printf("]");
    } else {
        printf(" %s %.4g..%.4g (avg %.4g)", name, lo, hi, s / (double)n);
    }
}

static void describe_text(const npred_dataset *d)
{
    npred_dataset_info di;
    npred_dataset_get_info(d, &di);
    printf("%s\n", di.path);
    printf("  data_key     %s (%s)\n", di.data_key, di.is_zip ? "zip, read in place" : di.is_hdf5 ? "HDF5, read in place" : "folder");
    printf("  trials       %lld:", (long long)di.n_trials);
    for (int t = 0; t < NPRED_TIER_COUNT; t++) printf(" %s %lld", npred_tier_name((npred_tier)t), (long long)di.tier_count[t]);
    printf("\n  neurons      %lld\n", (long long)di.n_neurons);
    printf("  images       %d x %d x %d, values %.6g .. %.6g\n", di.img_c, di.img_h, di.img_w, di.img_min, di.img_max);
    printf("  fields      ");
    for (int f = 0; f < NPRED_FIELD_COUNT; f++)
        if (di.has_field[f]) printf(" %s(%lld)", npred_field_name((npred_field)f), (long long)di.field_size[f]);
    printf("\n  statistics\n");
    for (int f = 0; f < NPRED_FIELD_COUNT; f++) {
        npred_dataset_stats st;
        npred_dataset_get_stats(d, (npred_field)f, &st);
        if (!st.present) continue;
        printf("    %-12s", npred_field_name((npred_field)f));
        print_stat_line("mean", st.mean, st.count);
        print_stat_line("std", st.std, st.count);
        print_stat_line("min", st.min, st.count);
        print_stat_line("max", st.max, st.count);
        printf("\n");
    }
    const char *const *names;
    size_t n = npred_dataset_trial_info_names(d, &names);
    printf("  trial info  ");
    for (size_t i = 0; i < n; i++) printf(" %s", names[i]);
    n = npred_dataset_neuron_info_names(d, &names);
    printf("\n  neuron info ");
    for (size_t i = 0; i < n; i++) printf(" %s", names[i]);
    printf("\n");
}

static cJSON *describe_video_json(const npred_video_dataset *d)
{
    npred_video_dataset_info di;
    npred_video_dataset_get_info(d, &di);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "path", di.path);
    cJSON_AddStringToObject(o, "layout", "video");
    cJSON_AddStringToObject(o, "data_key", di.data_key);
    cJSON_AddBoolToObject(o, "zip", di.is_zip);
    cJSON_AddNumberToObject(o, "trials", (double)di.n_trials);
    cJSON *tiers = cJSON_AddObjectToObject(o, "tiers");
    for (size_t t = 0; t < di.n_tiers; t++) cJSON_AddNumberToObject(tiers, di.tier_names[t], (double)di.tier_count[t]);
    cJSON_AddNumberToObject(o, "neurons", (double)di.n_neurons);
    cJSON *shape = cJSON_AddArrayToObject(o, "video_shape");
    cJSON_AddItemToArray(shape, cJSON_CreateNumber(di.height));
    cJSON_AddItemToArray(shape, cJSON_CreateNumber(di.width));
    cJSON_AddItemToArray(shape, cJSON_CreateNumber(di.t_max));
    cJSON *fields = cJSON_AddObjectToObject(o, "fields");
    cJSON *stats = cJSON_AddArrayToObject(o, "statistics");
    for (int f = 0; f < NPRED_VFIELD_COUNT; f++) {
        if (!di.has_field[f]) continue;
        cJSON_AddNumberToObject(fields, npred_video_field_name((npred_video_field)f), di.rows[f]);
        if (di.has_stats[f]) cJSON_AddItemToArray(stats, cJSON_CreateString(npred_video_field_name((npred_video_field)f)));
    }
    const char *const *names;
    size_t n = npred_video_dataset_neuron_info_names(d, &names);
    cJSON *ni = cJSON_AddArrayToObject(o, "neuron_info");
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(ni, cJSON_CreateString(names[i]));
    return o;
}

static void describe_video_text(const npred_video_dataset *d)
{
    npred_video_dataset_info di;
    npred_video_dataset_get_info(d, &di);
    printf("%s\n", di.path);
    printf("  data_key     %s (movie scan, %s)\n", di.data_key, di.is_zip ? "zip, read in place" : "folder");
    printf("  trials       %lld:", (long long)di.n_trials);
    for (size_t t = 0; t < di.n_tiers; t++) printf(" %s %lld", di.tier_names[t], (long long)di.tier_count[t]);
    printf("\n  neurons      %lld\n", (long long)di.n_neurons);
    printf("  videos       %d x %d, %d frames per file (NaN-padded)\n", di.height, di.width, di.t_max);
    printf("  fields      ");
    for (int f = 0; f < NPRED_VFIELD_COUNT; f++)
        if (di.has_field[f]) printf(" %s(%d per frame)", npred_video_field_name((npred_video_field)f), di.rows[f]);
    printf("\n  statistics  ");
    for (int f = 0; f < NPRED_VFIELD_COUNT; f++)
        if (di.has_stats[f]) printf(" %s", npred_video_field_name((npred_video_field)f));
    const char *const *names;
    size_t n = npred_video_dataset_neuron_info_names(d, &names);
    printf("  (per element and frame)\n  neuron info ");
    for (size_t i = 0; i < n; i++) printf(" %s", names[i]);
    printf("\n");
}

int cmd_dataset(int argc, char **argv)
{
    int json = 0;
    const char *key = NULL;
    cli_list list = {0};
    const cli_opt opts[] = {{"json", CLI_FLAG, &json, 0, 0}, {"key", CLI_STR, &key, 0, 0}, {NULL, 0, NULL, 0, 0}};
    const cli_spec spec = {"dataset", usage, opts, &list};
    int r = cli_parse(&spec, argc, argv);
    if (r != CLI_CONTINUE) return r;
    const char **paths = list.v;
    int n = list.n;
    if (n == 0) {
        free(paths);
        return cli_usage_error("dataset", "no dataset PATH given");
    }
    if (key && n > 1) {
        free(paths);
        return cli_usage_error("dataset", "--key applies to one PATH only");
    }
    cJSON *all = json ? cJSON_CreateArray() : NULL;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        if (npred_video_is_scan(paths[i])) {
            npred_video_dataset *v;
            npred_status s = npred_video_dataset_open(&v, paths[i], key);
            if (s) {
                rc = cli_fail(s, paths[i]);
                break;
            }
            if (json) cJSON_AddItemToArray(all, describe_video_json(v));
            else describe_video_text(v);
            npred_video_dataset_free(v);
            continue;
        }
        npred_dataset *d;
        npred_status s = npred_dataset_open(&d, paths[i], key);
        if (s) {
            rc = cli_fail(s, paths[i]);
            break;
        }
        if (json) cJSON_AddItemToArray(all, describe_json(d));
        else describe_text(d);
        npred_dataset_free(d);
    }
    if (json && !rc) {
        char *txt = cJSON_Print(all);
        if (txt) printf("%s\n", txt);
        free(txt);
    }
    cJSON_Delete(all);
    free(paths);
    return rc;
}
