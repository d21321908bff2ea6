/* npred version: compile-time macros and the version of the linked library. */
#ifndef NPRED_VERSION_H
#define NPRED_VERSION_H

#include "npred/base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NPRED_VERSION_MAJOR 0
#define NPRED_VERSION_MINOR 1
#define NPRED_VERSION_PATCH 0

#define NPRED_VERSION_STR_(x) #x
#define NPRED_VERSION_STR(x) NPRED_VERSION_STR_(x)
/* "MAJOR.MINOR.PATCH" */
#define NPRED_VERSION                                                                                                  \
    NPRED_VERSION_STR(NPRED_VERSION_MAJOR) "." NPRED_VERSION_STR(NPRED_VERSION_MINOR) "." NPRED_VERSION_STR(          \
        NPRED_VERSION_PATCH)

/* The version of the library actually linked (may differ from NPRED_VERSION of the
 * headers a program was compiled with). */
NPRED_API const char *npred_version(void);

#ifdef __cplusplus
}
#endif

#endif
