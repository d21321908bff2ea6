/* npred command line: the only code that prints to users or exits. One file per
 * subcommand (cli/cmd_<name>.c), registered in the table in cli/main.c. */
#ifndef NPRED_CLI_H
#define NPRED_CLI_H

#include "npred/base.h"

/* Print "npred: <context>: <last library error>" to stderr; returns 1. */
int cli_fail(npred_status s, const char *context);
/* Print an argument error plus the hint to run `npred CMD --help`; returns 2. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

int cmd_demo(int argc, char **argv);
int cmd_dataset(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_simulate(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_predict_video(int argc, char **argv); /* npred predict --video (cmd_predict_video.c) */
int cmd_eval(int argc, char **argv);
int cmd_mei(int argc, char **argv);
int cmd_rf(int argc, char **argv);
int cmd_tuning(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_report(int argc, char **argv);


#endif
