/* loader: static_loaders configuration, per-session transform pipeline,
 * iterators, LongCycler and the repeats sampler (API in npred/data.h).
 *
 * Per sample, in the reference order: NeuroNormalizer -> AddBehaviorAsChannels
 * -> AddPupilCenterAsChannels -> SelectInputChannel -> ScaleInputs -> Subsample
 * -> float32. npred_loaders_get runs the samples of a batch in parallel
 * (OpenMP over samples; each thread has its own scratch images). */
#ifndef NPRED_DATA_LOADER_H
#define NPRED_DATA_LOADER_H

#include "npred/data.h"

#endif
