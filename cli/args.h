/* The one argument parser of every npred command.
 *
 * Rules (the same for all commands):
 *   --opt value  and  --opt=value          an option with a value
 *   --flag                                 a switch (giving it a value is an error)
 *   --list A B C  (or --list=A B C)        a list option takes the words up to the next option;
 *                                          repeating it appends
 *   -h, --help                             the command's help on stdout, exit 0
 *   --version                              "npred X.Y.Z" on stdout, exit 0
 *   --                                     everything after it is positional
 * A value that is missing (end of the line, or the next word is an option "--x") is
 * reported as "--opt needs a value"; an unknown option as "unknown option '--x'"; numbers
 * are checked in full and against their range. Errors print the usage hint and give 2. */
#ifndef NPRED_CLI_ARGS_H
#define NPRED_CLI_ARGS_H

#include <stdint.h>
#include <stdio.h>

typedef enum {
    CLI_FLAG, /* int *: set to 1 */
    CLI_STR,  /* const char ** */
    CLI_LIST, /* cli_list *: one or more words */
    CLI_INT,  /* int * within [lo, hi] */
    CLI_LONG, /* long long * within [lo, hi] */
    CLI_U64,  /* uint64_t * (a non-negative integer) */
    CLI_NUM   /* double *, finite, within [lo, hi] */
} cli_kind;

typedef struct {
    const char **v; /* allocated by cli_parse; the caller frees v */
    int n;
} cli_list;

typedef struct {
    const char *name; /* long name without the leading "--" */
    cli_kind kind;
    void *dst;
    double lo, hi; /* CLI_INT / CLI_LONG / CLI_NUM: accepted range */
} cli_opt;

typedef struct {
    const char *cmd;      /* "train": named in messages */
    void (*help)(FILE *); /* prints the usage */
    const cli_opt *opts;  /* ends with an entry whose name is NULL */
    cli_list *positional; /* words that are not options; NULL: none accepted */
} cli_spec;

#define CLI_CONTINUE (-1)

/* Parses argv[1..argc-1] into the destinations. Returns CLI_CONTINUE when the command
 * should go on; otherwise the exit code to return at once (0 after --help or --version,
 * 2 after an argument error, already reported; every list is freed then). */
int cli_parse(const cli_spec *spec, int argc, char **argv);

/* For a command that takes exactly one word (e.g. WHAT = "MODEL"): frees the list and
 * returns 0 with *out, or the exit code of the usage error (no word, or more than one). */
int cli_one_word(const char *cmd, cli_list *words, const char *what, const char **out);

#endif
