/* npred convert SRC DST: a scan (HDF5 StaticImageSet file, folder or .zip) as the
 * SENSORIUM file tree, in a folder or a .zip. */
#include <stdio.h>
#include <stdlib.h>

#include "args.h"
#include "cli.h"
#include "npred/data.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: npred convert SRC DST\n\n"
               "Write the scan SRC (an HDF5 file in the StaticImageSet layout read by sensorium's\n"
               "static_loader with file_tree=False, a dataset folder or its .zip) as the SENSORIUM\n"
               "file tree DST: a folder, or a .zip (one top folder named after it) when DST ends in\n"
               ".zip. The mapping is neuralpredictors' convert_static_h5_dataset_to_folder\n"
               "(docs/data.md). SRC is checked by opening it as a dataset first; DST must not exist.\n\n"
               "options:\n"
               "  -h, --help  this help\n");
}

int cmd_convert(int argc, char **argv)
{
    cli_list words = {0};
    const cli_opt opts[] = {{NULL, CLI_FLAG, NULL, 0, 0}};
    const cli_spec spec = {"convert", usage, opts, &words};
    int rc = cli_parse(&spec, argc, argv);
    if (rc != CLI_CONTINUE) return rc;
    const char *src = words.n > 0 ? words.v[0] : NULL, *dst = words.n > 1 ? words.v[1] : NULL;
    int n = words.n;
    free(words.v);
    if (n != 2) return cli_usage_error("convert", "expected SRC and DST, got %d argument%s", n, n == 1 ? "" : "s");
    npred_status s = npred_dataset_convert(src, dst);
    if (s) return cli_fail(s, "convert");
    npred_dataset *d = NULL;
    if ((s = npred_dataset_open(&d, dst, NULL))) return cli_fail(s, dst);
    npred_dataset_info di;
    npred_dataset_get_info(d, &di);
    printf("%s -> %s: %s, %lld trials, %lld neurons\n", src, dst, di.data_key, (long long)di.n_trials,
           (long long)di.n_neurons);
    npred_dataset_free(d);
    return 0;
}
