/* The trainer's validation objective (see trainer.h): one path for one rank and
 * for data-parallel runs. */
#include "train/trainer_internal.h"

#include <math.h>
#include <string.h>

#include "npred/dist.h"
#include "npred/metrics.h"

/* Sum per-neuron partial sums over the ranks (nothing to do on one rank). */
static npred_status sum_over_ranks(const npred_trainer *t, double *v, size_t n)
{
    return t->nranks > 1 ? npred_dist_allreduce_f64(v, n) : NPRED_OK;
}

/* The validation objective, one path for one rank and for many: rank r of K
 * predicts trials [T r / K, T (r + 1) / K) of each session's validation tier (one
 * rank: all of them; the eval-mode running statistics are rank 0's, broadcast
 * first) and per-neuron sums are reduced over the ranks: for the correlation in two
 * passes (means, then centred moments) as np_functions.corr computes it, for the
 * Poisson loss o - y log(o + eps) summed over trials. The objective is the mean over
 * all neurons of the correlation or of the per-neuron mean loss
 * (get_poisson_loss(avg=True)); with track_training also sensorium's tracker values
 * (the mean correlation and the loss summed over every neuron). */
npred_status npred_trainer_evaluate(npred_trainer *t, double *objective)
{
    t->last_trk[0] = t->last_trk[1] = NAN;
    npred_status st = NPRED_OK;
    if (t->nranks > 1 && (st = npred_dist_bcast(t->t->bufdata, t->t->n_buffers * sizeof(float), 0)))
        return npred_error_prefix(st, "trainer: buffer broadcast");
    const int by_corr = t->c.stop_function == NPRED_TRAIN_STOP_CORRELATIONS, track = t->c.track_training;
    double acc = 0, trk_corr = 0, trk_poisson = 0;
    int64_t total_neurons = 0;
    for (size_t s = 0; s < t->n_sessions && !st; s++) {
        npred_session_info si;
        npred_loaders_session(t->L, s, &si);
        const int64_t Tg = si.tier_n[NPRED_TIER_VALIDATION];
        const int64_t lo = Tg * t->rank / t->nranks, hi = Tg * (t->rank + 1) / t->nranks;
        const int mi = t->model_index[s];
        const int64_t n = npred_model_session_neurons(t->m, mi), bs = t->batch_size;
        int64_t T = 0;
        for (int64_t p = lo; p < hi && !st; p += bs) {
            int64_t B = hi - p < bs ? hi - p : bs;
            if ((st = npred_loaders_get(t->L, s, si.tier_idx[NPRED_TIER_VALIDATION] + p, B, &t->batch))) break;
            st = npred_model_forward(t->m, mi, t->batch.images, t->batch.pupil_center, t->batch.behavior, (int)B, 0,
                                     NULL, NULL, t->val_pred + (size_t)(T * n));
            if (st) break;
            memcpy(t->val_resp + (size_t)(T * n), t->batch.responses, sizeof(float) * (size_t)(B * n));
            T += B;
        }
        if (st) break;
        double *d = t->dbuf, *q = d + 2 * n, *ps = d + 5 * n;
        if (by_corr || track) {
            /* pass 1: sums of responses (d[0..n)) and predictions (d[n..2n)) */
            memset(d, 0, sizeof(double) * (size_t)(2 * n));
            for (int64_t r = 0; r < T; r++)
                for (int64_t j = 0; j < n; j++) {
                    d[j] += t->val_resp[r * n + j];
                    d[n + j] += t->val_pred[r * n + j];
                }
            if ((st = sum_over_ranks(t, d, (size_t)(2 * n)))) break;
            for (int64_t j = 0; j < 2 * n; j++) d[j] /= (double)(Tg > 0 ? Tg : 1);
            /* pass 2: centred moments q = [var sums of responses | of predictions | cross] */
            memset(q, 0, sizeof(double) * (size_t)(3 * n));
            for (int64_t r = 0; r < T; r++)
                for (int64_t j = 0; j < n; j++) {
                    double a = t->val_resp[r * n + j] - d[j], b = t->val_pred[r * n + j] - d[n + j];
                    q[j] += a * a;
                    q[n + j] += b * b;
                    q[2 * n + j] += a * b;
                }
            if ((st = sum_over_ranks(t, q, (size_t)(3 * n)))) break;
            for (int64_t j = 0; j < n; j++) {
                double r = 0; /* corr of nothing: NaN -> 0 */
                if (Tg > 0) {
                    double da = sqrt(q[j] / (double)Tg) + NPRED_METRICS_CORR_EPS;
                    double db = sqrt(q[n + j] / (double)Tg) + NPRED_METRICS_CORR_EPS;
                    r = q[2 * n + j] / (double)Tg / (da * db);
                }
                t->rbuf[j] = isnan(r) ? 0.0 : r;
                if (track) trk_corr += t->rbuf[j];
            }
        }
        if (!by_corr || track) {
            memset(ps, 0, sizeof(double) * (size_t)n);
            for (int64_t j = 0; j < n; j++)
                for (int64_t r = 0; r < T; r++) {
                    double o = t->val_pred[r * n + j], y = t->val_resp[r * n + j];
                    ps[j] += o - y * log(o + 1e-12);
                }
            if ((st = sum_over_ranks(t, ps, (size_t)n))) break;
            for (int64_t j = 0; j < n; j++) {
                if (track) trk_poisson += ps[j];
                if (!by_corr) t->rbuf[j] = Tg > 0 ? ps[j] / (double)Tg : NAN;
            }
        }
        for (int64_t j = 0; j < n; j++) acc += t->rbuf[j];
        total_neurons += n;
    }
    if (st) return st;
    *objective = total_neurons ? acc / (double)total_neurons : NAN;
    if (track) {
        t->last_trk[0] = total_neurons ? trk_corr / (double)total_neurons : NAN;
        t->last_trk[1] = trk_poisson;
    }
    return NPRED_OK;
}
