#include "npred/version.h"

const char *npred_version(void) { return NPRED_VERSION; }
