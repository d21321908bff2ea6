/* Helpers shared by the model commands. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "cli_model.h"

int cli_ends_with(const char *path, const char *suffix)
{
    size_t n = strlen(path), k = strlen(suffix);
    return n >= k && !strcmp(path + n - k, suffix);
}


char *cli_read_text(const char *path)
{
    void *buf;
    size_t len;
    if (npred_file_read_all(path, &buf, &len)) return NULL;
    char *txt = realloc(buf, len + 1);
    if (!txt) {
        free(buf);
        npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    txt[len] = 0;
    return txt;
}

npred_status cli_mkdirs(const char *dir)
{
    char p[4096];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) return npred_errorf(NPRED_ERR_ARG, "%s: path too long", dir);
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s) continue;
        char c = *s;
        *s = 0;
        struct stat sb;
        if (stat(p, &sb) != 0) {
            if (mkdir(p, 0755) != 0 && errno != EEXIST)
                return npred_errorf(NPRED_ERR_IO, "%s: cannot create directory: %s", p, strerror(errno));
        } else if (!S_ISDIR(sb.st_mode)) {
            return npred_errorf(NPRED_ERR_IO, "%s: exists and is not a directory", p);
        }
        *s = c;
        if (!c) break;
    }
    return NPRED_OK;
}
