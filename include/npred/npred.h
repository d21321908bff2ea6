/* npred: the whole public C API in one include.
 *
 *   #include <npred/npred.h>      (cc prog.c $(pkg-config --cflags --libs npred))
 *
 * Every function returns an npred_status (or a value documented next to it), never
 * prints and never exits; npred_last_error() explains a failure. docs/c-api.md lists
 * every function with its ownership, threading and error rules. npred/mpi.h (the
 * Open MPI backend) is separate: it belongs to libnpred_mpi. */
#ifndef NPRED_NPRED_H
#define NPRED_NPRED_H

#include "npred/base.h"
#include "npred/version.h"
#include "npred/version.h"
#include "npred/npy.h"
#include "npred/data.h"
#include "npred/video.h"
#include "npred/video_model.h"
#include "npred/video_stream.h"
#include "npred/model.h"
#include "npred/train.h"
#include "npred/video_train.h"
#include "npred/eval.h"
#include "npred/metrics.h"
#include "npred/simulate.h"
#include "npred/report.h"
#include "npred/dist.h"
#include "npred/insilico.h"
#include "npred/results.h"
#include "npred/video_eval.h"
#include "npred/preprocess.h"

#endif
