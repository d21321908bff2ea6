/* Numbers formatted as Python's repr() prints them, for reference-identical reprs. */
#ifndef NPRED_BASE_PYFMT_H
#define NPRED_BASE_PYFMT_H

#include <stddef.h>

/* repr(float(v)): shortest round-trip digits, "2.0", "0.1", "1e-05", "inf", "nan". */
void npred_pyfloat(char *buf, size_t n, double v);
/* A value that may have been an int in the config: integral values print as ints. */
void npred_pynum(char *buf, size_t n, double v);

#endif
