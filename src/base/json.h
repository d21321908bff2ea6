/* One way to read JSON configuration values: the model config, the loader config and
 * the trainer config all read their keys with these functions, so types, ranges,
 * unknown keys and messages follow one rule:
 *
 *   - a number is a JSON number and finite; an integer is a number without a fraction
 *     (and within +-2^53); a boolean is true or false (not 0 or 1); a string is a JSON
 *     string;
 *   - ranges are inclusive, [lo, hi]; NPRED_JSON_ANY on either side leaves it open;
 *   - the _or_null forms also take null: they return 2 and leave the destination alone;
 *   - a key the reader does not know is an error (npred_json_unknown);
 *   - every error is NPRED_ERR_CONFIG with the message
 *         "<where>: key '<section><key>': expected <what>"
 *     e.g. "trainer.json: key 'patience': expected an integer >= 0".
 *
 * The reader keeps the first error in r->st; the functions return 1 (read), 2 (null,
 * _or_null forms) or 0 (error set), so a parser can read a whole object and look at
 * r->st once. */
#ifndef NPRED_BASE_JSON_H
#define NPRED_BASE_JSON_H

#include <cJSON.h>
#include <math.h>
#include <stdint.h>

#include "npred/base.h"

#define NPRED_JSON_ANY INFINITY /* an open end of a range: [-NPRED_JSON_ANY, NPRED_JSON_ANY] */

typedef struct {
    const char *where;   /* the file, or what is read ("loader config") */
    const char *section; /* prefix of the key in messages: "" or e.g. "core." */
    npred_status st;     /* the first error; NPRED_OK while there is none */
} npred_json_reader;

/* Records "<where>: key '<section><key>': expected <printf text>"; returns 0. */
int npred_json_fail(npred_json_reader *r, const cJSON *it, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Records "<where>: unknown key '<section><key>'" plus " (<hint>)" when hint is given; returns 0. */
int npred_json_unknown(npred_json_reader *r, const cJSON *it, const char *hint);
/* Records "<where>: key '<section><key>' is missing" plus " (<hint>)" when hint is given; returns 0. */
int npred_json_missing(npred_json_reader *r, const char *key, const char *hint);

int npred_json_num(npred_json_reader *r, const cJSON *it, double lo, double hi, double *out);
int npred_json_num_or_null(npred_json_reader *r, const cJSON *it, double lo, double hi, double *out);
int npred_json_int(npred_json_reader *r, const cJSON *it, double lo, double hi, int *out);
int npred_json_int_or_null(npred_json_reader *r, const cJSON *it, double lo, double hi, int *out);
int npred_json_i64(npred_json_reader *r, const cJSON *it, double lo, double hi, int64_t *out);
int npred_json_i64_or_null(npred_json_reader *r, const cJSON *it, double lo, double hi, int64_t *out);
int npred_json_bool(npred_json_reader *r, const cJSON *it, int *out);
int npred_json_bool_or_null(npred_json_reader *r, const cJSON *it, int *out);
int npred_json_str(npred_json_reader *r, const cJSON *it, const char **out);
int npred_json_str_or_null(npred_json_reader *r, const cJSON *it, const char **out);
/* A pair [a, b] of numbers (of integers when integer is set), each in [lo, hi]; with
 * scalar_ok one number also stands for both (a Python "int or tuple" argument). */
int npred_json_pair(npred_json_reader *r, const cJSON *it, int integer, int scalar_ok, double lo, double hi,
                    double out[2]);
/* 1 if the value is an integer by the rule above (for the items of lists). */
int npred_json_is_integer(const cJSON *it);
/* Every object in the tree (it and the objects and lists inside it) names each key once;
 * else records "<where>: key '<section><path>' appears more than once (...)" and returns
 * 0. The parsers read some keys by lookup (the first one) and others in order (the last
 * one wins), so a repeated key would mean two things at once; it is refused instead. */
int npred_json_unique_keys(npred_json_reader *r, const cJSON *it);
/* One of n names (a string); *out is its index. */
int npred_json_choice(npred_json_reader *r, const cJSON *it, const char *const *names, int n, int *out);

#endif
