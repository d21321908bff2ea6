/* Models on disk (checkpoint.c): the parts of the model's file interface that
 * need the tensor lists of the file formats (the rest is in include/npred/model.h). */
#ifndef NPRED_IO_CHECKPOINT_H
#define NPRED_IO_CHECKPOINT_H

#include "io/tensorfile.h"
#include "model/model.h"

/* npred_model_import_pth on a state_dict already read into a tensor list;
 * `where` names the source in messages. The list stays the caller's. */
npred_status npred_model_import_tensors(npred_model **out, const npred_tensor_list *list, const char *where,
                                        const char *config_json, int in_h, int in_w, int max_batch);

#endif
