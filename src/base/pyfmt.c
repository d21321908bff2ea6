#include "base/pyfmt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void npred_pyfloat(char *buf, size_t n, double v)
{
    if (isnan(v)) {
        snprintf(buf, n, "nan");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, n, v > 0 ? "inf" : "-inf");
        return;
    }
    char tmp[64];
    int p;
    /* the fewest significant digits that read back to v: round-tripping is monotone in
     * the digit count (more correctly rounded digits are never farther), so bisect 1..17 */
    int lo = 1, hi = 17;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        snprintf(tmp, sizeof tmp, "%.*e", mid - 1, v);
        if (strtod(tmp, NULL) == v) hi = mid;
        else lo = mid + 1;
    }
    p = lo;
    int exp10 = v == 0 ? 0 : (int)floor(log10(fabs(v)));
    /* Python switches to exponent notation outside 1e-4 <= |v| < 1e16 */
    if (v != 0 && (exp10 < -4 || exp10 >= 16)) {
        char mant[64];
        snprintf(mant, sizeof mant, "%.*e", p - 1, v);
        char *e = strchr(mant, 'e');
        int ex = atoi(e + 1);
        *e = 0;
        /* strip trailing zeros of the mantissa */
        if (strchr(mant, '.')) {
            size_t L = strlen(mant);
            while (L && mant[L - 1] == '0') mant[--L] = 0;
            if (L && mant[L - 1] == '.') mant[--L] = 0;
        }
        snprintf(buf, n, "%se%c%02d", mant, ex < 0 ? '-' : '+', abs(ex));
        return;
    }
    int decimals = p - 1 - exp10;
    if (decimals < 1) decimals = 1;
    snprintf(tmp, sizeof tmp, "%.*f", decimals, v);
    /* strip trailing zeros but keep one decimal */
    size_t L = strlen(tmp);
    while (L > 2 && tmp[L - 1] == '0' && tmp[L - 2] != '.') tmp[--L] = 0;
    snprintf(buf, n, "%s", tmp);
}

void npred_pynum(char *buf, size_t n, double v)
{
    if (v == floor(v) && fabs(v) < 1e15) snprintf(buf, n, "%.0f", v);
    else npred_pyfloat(buf, n, v);
}
