/* Trainer internals shared with the CLI-free parts of the library: the JSON
 * object forms of the trainer configuration. The public trainer API is
 * include/npred/train.h. */
#ifndef NPRED_TRAIN_TRAINER_H
#define NPRED_TRAIN_TRAINER_H

#include "npred/train.h"
#include "train/early_stopping.h"

typedef struct cJSON cJSON;

/* Set options from a JSON object (as npred_trainer_config_parse). */
npred_status npred_trainer_config_set_json(npred_trainer_config *c, const cJSON *obj, const char *where);
/* Every setting, resolved (caller frees with cJSON_Delete). */
cJSON *npred_trainer_config_to_json(const npred_trainer_config *c);

#endif
