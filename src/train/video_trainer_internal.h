/* Internal to the video trainer (video_trainer.c: create, batches, epochs, the loop;
 * video_trainer_run.c: configuration, run folder, state and resume). */
#ifndef NPRED_TRAIN_VIDEO_TRAINER_INTERNAL_H
#define NPRED_TRAIN_VIDEO_TRAINER_INTERNAL_H

#include "train/adam.h"
#include "train/early_stopping.h"
#include "train/es_loop.h"
#include "train/scheduler.h"
#include "train/video_trainer.h"


struct npred_video_trainer {
    npred_video_encoder *e;
    npred_ptable *t;
    const npred_video_loaders *L;
    npred_video_trainer_config c;
    int ns;                       /* loader sessions */
    int *enc_index;               /* (ns,) encoder session of each loader session */
    double *n_trials;             /* (ns,) trials of each scan, all tiers */
    int64_t *train_batches;       /* (ns,) batches of the train tier */
    int T1, F, max_n;             /* output frames, response frames, most neurons */
    int64_t batch_size, max_val, accum;
    uint64_t fingerprint;
    npred_video_batch batch;
    npred_video_iter *its;        /* (ns,) train iterators of the epoch */
    float *dout;                  /* (batch_size * T1 * max_n) */
    float *noise;                 /* (batch_size * T1 * max_n * 2) readout draws of a global batch */
    float *val_resp, *val_pred;   /* (max_val * max_n * F), (max_val * T1 * max_n) */
    const float **rp, **pp;       /* (max_val,) per-trial pointers into them */
    int *fr, *pfr;                /* (max_val,) frames F, T1 */
    double *corr;                 /* (max_n,) */
    npred_adam adam;
    npred_scheduler sched;
    npred_es es;
    npred_rng rng;
    float *best_data, *best_buf;
    npred_trainer_callbacks cb;
    npred_video_model_saver saver;
    void *saver_user;
    char *model_meta;             /* config JSON for the default saver's metadata */
    char *run_dir;
    int resumed, done;
    npred_log_row *log;
    size_t n_log, cap_log;
    double epoch_loss, epoch_t0, epoch_lr;
    int64_t epoch_batches;
    int pending_row;
    int rank, nranks;
    int owns_bn_sync;             /* this trainer installed the BatchNorm sync hook */
    unsigned char *frozen;        /* (n_params) with detach_core: 1 for the core floats the kit leaves
                                     without a gradient (AdamW skips them), else NULL */
};

/* video_trainer.c: the shared loop's view of the trainer */
npred_es_loop vt_loop(npred_video_trainer *t);

/* video_trainer_run.c */
npred_status vt_log_add(npred_video_trainer *t, const npred_log_row *r);
npred_status vt_write_log(const npred_video_trainer *t);
npred_status vt_save_model(const npred_video_trainer *t, const char *name);
npred_status vt_save_state(const npred_video_trainer *t);
npred_status vt_checkpoint(const npred_video_trainer *t, int64_t epoch, int final);

#endif
