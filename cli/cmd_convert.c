/* npred convert SRC DST: a scan (HDF5 StaticImageSet file, folder or .zip) as the
 * SENSORIUM file tree, in a folder or a .zip. */
#include <stdio.h>
#include <string.h>

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
    const char *pos[2] = {NULL, NULL};
    int n = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        if (argv[i][0] == '-' && argv[i][1]) return cli_usage_error("convert", "unknown option '%s'", argv[i]);
        if (n == 2) return cli_usage_error("convert", "expected SRC and DST, got a third argument '%s'", argv[i]);
        pos[n++] = argv[i];
    }
    if (n < 2) return cli_usage_error("convert", "expected SRC and DST");
    npred_status s = npred_dataset_convert(pos[0], pos[1]);
    if (s) return cli_fail(s, "convert");
    npred_dataset *d = NULL;
    if ((s = npred_dataset_open(&d, pos[1], NULL))) return cli_fail(s, pos[1]);
    npred_dataset_info di;
    npred_dataset_get_info(d, &di);
    printf("%s -> %s: %s, %lld trials, %lld neurons\n", pos[0], pos[1], di.data_key, (long long)di.n_trials,
           (long long)di.n_neurons);
    npred_dataset_free(d);
    return 0;
}
