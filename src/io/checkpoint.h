/* Models on disk (checkpoint.c): the parts of the model's file interface that
 * need the tensor lists of the file formats (the rest is in include/npred/model.h). */
#ifndef NPRED_IO_CHECKPOINT_H
#define NPRED_IO_CHECKPOINT_H

#include "io/tensorfile.h"
#include "model/model.h"
#include "npred/video_model.h"

/* npred_model_import_pth on a state_dict already read into a tensor list;
 * `where` names the source in messages. The list stays the caller's. */
npred_status npred_model_import_tensors(npred_model **out, const npred_tensor_list *list, const char *where,
                                        const char *config_json, int in_h, int in_w, int max_batch);

/* npred_video_model_import_pth on a state_dict already read into a tensor list
 * (`where` names it in messages; the list stays the caller's). */
npred_status npred_video_model_import_tensors(npred_video_model **out, const npred_tensor_list *list, const char *where,
                                              const char *config_json, const char *config_where, int in_h, int in_w,
                                              const char *const *keys, const int *n_neurons, int n_sessions,
                                              int max_batch);

/* Every table entry as a tensor (I64 entries as int64), in table order. */
npred_status npred_ptable_to_list(const npred_ptable *t, npred_tensor_list *l);
/* Copy every table entry from the list (same names and shapes; F32, F64, I64 or I32
 * data, finite). strict: tensors of the list that the table does not have are errors
 * too. `where` names the source in messages. */
npred_status npred_list_to_ptable(npred_ptable *t, const npred_tensor_list *l, const char *where, int strict);

#endif
