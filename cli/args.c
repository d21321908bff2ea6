/* The one argument parser of every npred command (rules in args.h). */
#include "args.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "npred/version.h"

/* "-x", "--x" are options; "-" and negative numbers ("-1", "-.5") are words */
static int is_option(const char *w)
{
    return w[0] == '-' && w[1] && !isdigit((unsigned char)w[1]) && w[1] != '.';
}

static void free_lists(const cli_spec *s)
{
    for (const cli_opt *o = s->opts; o->name; o++)
        if (o->kind == CLI_LIST) {
            cli_list *l = o->dst;
            free(l->v);
            l->v = NULL;
            l->n = 0;
        }
    if (s->positional) {
        free(s->positional->v);
        s->positional->v = NULL;
        s->positional->n = 0;
    }
}

static int list_add(const cli_spec *s, cli_list *l, const char *w, int argc)
{
    if (!l->v && !(l->v = calloc((size_t)argc + 1, sizeof *l->v))) {
        fprintf(stderr, "npred %s: out of memory\n", s->cmd);
        return 0;
    }
    l->v[l->n++] = w;
    return 1;
}

static int range_error(const cli_spec *s, const cli_opt *o, const char *v, const char *what)
{
    if (o->lo < o->hi)
        return cli_usage_error(s->cmd, "--%s: expected %s in [%.16g, %.16g], got '%s'", o->name, what, o->lo, o->hi, v);
    return cli_usage_error(s->cmd, "--%s: expected %s, got '%s'", o->name, what, v);
}

/* 0, or the exit code of a bad value */
static int set_value(const cli_spec *s, const cli_opt *o, const char *v)
{
    char *end;
    errno = 0;
    switch (o->kind) {
    case CLI_STR: *(const char **)o->dst = v; return 0;
    case CLI_INT:
    case CLI_LONG: {
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end || (o->lo < o->hi && (x < o->lo || x > o->hi)))
            return range_error(s, o, v, "an integer");
        if (o->kind == CLI_INT) *(int *)o->dst = (int)x;
        else *(long long *)o->dst = x;
        return 0;
    }
    case CLI_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (errno || end == v || *end || v[0] == '-') return range_error(s, o, v, "a non-negative integer");
        *(uint64_t *)o->dst = (uint64_t)x;
        return 0;
    }
    case CLI_NUM: {
        double x = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x) || (o->lo < o->hi && !(x >= o->lo && x <= o->hi)))
            return range_error(s, o, v, "a number");
        *(double *)o->dst = x;
        return 0;
    }
    case CLI_FLAG:
    case CLI_LIST: break;
    }
    return 0;
}

static int parse(const cli_spec *s, int argc, char **argv)
{
    int only_words = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_words || !is_option(a)) {
            if (!s->positional) return cli_usage_error(s->cmd, "unexpected argument '%s'", a);
            if (!list_add(s, s->positional, a, argc)) return 1;
            continue;
        }
        if (!strcmp(a, "--")) {
            only_words = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            s->help(stdout);
            return 0;
        }
        if (!strcmp(a, "--version")) {
            printf("npred %s\n", npred_version());
            return 0;
        }
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const cli_opt *o = NULL;
        if (a[1] == '-')
            for (const cli_opt *c = s->opts; c->name && !o; c++)
                if (strlen(c->name) == len - 2 && !strncmp(c->name, a + 2, len - 2)) o = c;
        if (!o) return cli_usage_error(s->cmd, "unknown option '%.*s'", (int)len, a);
        if (o->kind == CLI_FLAG) {
            if (eq) return cli_usage_error(s->cmd, "--%s takes no value", o->name);
            *(int *)o->dst = 1;
            continue;
        }
        const char *v = eq ? eq + 1 : i + 1 < argc && !is_option(argv[i + 1]) ? argv[++i] : NULL;
        if (!v || (eq && !*v)) return cli_usage_error(s->cmd, "--%s needs a value", o->name);
        if (o->kind == CLI_LIST) {
            if (!list_add(s, o->dst, v, argc)) return 1;
            while (i + 1 < argc && !is_option(argv[i + 1]))
                if (!list_add(s, o->dst, argv[++i], argc)) return 1;
            continue;
        }
        int rc = set_value(s, o, v);
        if (rc) return rc;
    }
    return CLI_CONTINUE;
}

int cli_parse(const cli_spec *spec, int argc, char **argv)
{
    int rc = parse(spec, argc, argv);
    if (rc != CLI_CONTINUE) free_lists(spec);
    return rc;
}

int cli_one_word(const char *cmd, cli_list *words, const char *what, const char **out)
{
    const char *first = words->n ? words->v[0] : NULL, *extra = words->n > 1 ? words->v[1] : NULL;
    free(words->v);
    words->v = NULL;
    words->n = 0;
    if (!first) return cli_usage_error(cmd, "missing %s", what);
    if (extra) return cli_usage_error(cmd, "one %s at a time ('%s' is extra)", what, extra);
    *out = first;
    return 0;
}
