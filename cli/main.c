/* npred: command-line entry point and subcommand table. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "npred/version.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"demo", cmd_demo, "the main job: simulate, train the SENSORIUM baseline, evaluate, compare with the truth"},
    {"dataset", cmd_dataset, "summarize SENSORIUM datasets (folder, .zip or HDF5)"},
    {"convert", cmd_convert, "write an HDF5 (StaticImageSet) scan as the SENSORIUM file tree (folder or .zip)"},
    {"simulate", cmd_simulate, "write a synthetic SENSORIUM dataset with a known ground truth"},
    {"train", cmd_train, "train a model (SENSORIUM standard_trainer) into a run folder"},
    {"import", cmd_import, "convert a PyTorch checkpoint (.pth) into an npred model"},
    {"info", cmd_info, "describe a model: reprs, parameter counts, shapes"},
    {"predict", cmd_predict, "firing rates of a model for images, raw stimuli, or a SENSORIUM submission"},
    {"eval", cmd_eval, "SENSORIUM metrics of a model on a tier of scans"},
    {"mei", cmd_mei, "most exciting inputs (and most discriminative stimuli) by gradient ascent"},
    {"rf", cmd_rf, "gradient receptive fields of neurons, with centre and size"},
    {"tuning", cmd_tuning, "grating tuning: preferred orientation and spatial frequency, OSI, F1/F0"},
    {"report", cmd_report, "every picture of a run or model, and an index.html with the headline numbers"},
    {"score", cmd_score, "SENSORIUM leaderboard metrics of a submission file against a ground-truth file"},

};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

int cli_fail(npred_status s, const char *context)
{
    fprintf(stderr, "npred: %s: %s (%s)\n", context, npred_last_error(), npred_status_str(s));
    return 1;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "npred %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nRun 'npred %s --help' for usage.\n", cmd);
    return 2;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: npred <command> [options]\n\n"
               "npred: neural system identification (neuralpredictors / SENSORIUM) in C.\n\n"
               "commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nRun 'npred <command> --help' for the options of a command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("npred %s\n", npred_version());
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "npred: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
