/* Helpers shared by the model commands (import, info, predict, eval). */
#ifndef NPRED_CLI_MODEL_H
#define NPRED_CLI_MODEL_H

#include "npred/model.h"

/* Open a model given as a run directory, a .safetensors file or a PyTorch .pth
 * (imported on the fly, architecture inferred; in_h/in_w 0 = 36x64). */
/* 1 if path ends with suffix */
int cli_ends_with(const char *path, const char *suffix);
/* Read a whole text file (malloc'ed, NUL-terminated); NULL with an error set. */
char *cli_read_text(const char *path);
/* mkdir -p */
npred_status cli_mkdirs(const char *dir);

#endif
