/* The library as a product: `make install` into a temporary prefix, then, as a
 * user would,
 *   - the layout: bin/npred, lib/libnpred.{a,so}, soname libnpred.so.0, headers,
 *     lib/pkgconfig/npred.pc (and the Python package when python/npred exists);
 *   - the exported symbols of libnpred.so (nm -D) are exactly the functions the
 *     installed headers declare with NPRED_API, all named npred_*, and docs/c-api.md
 *     names every one of them;
 *   - every header compiles on its own (C, and C++ when installed) and npred.h
 *     includes them all (but mpi.h, which belongs to libnpred_mpi);
 *   - examples/predict_npy.c built with `pkg-config --cflags --libs npred` against
 *     the installed library predicts the same rates as the library in-process, and
 *     neither it nor libnpred.so needs libmpi at run time (readelf NEEDED, ldd);
 *   - DESTDIR stages the same tree under another root with the final PREFIX in npred.pc.
 * The build folder and flags come from the Makefile (NPRED_BUILD, NPRED_OPT, NPRED_SAN, NPRED_MPI),
 * so the nested `make install` finds everything built and only copies. */
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "npred/base.h"
#include "npred/model.h"
#include "npred/npy.h"

static char tmp[256], prefix[400];
static int installed;

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v ? v : dflt;
}

/* Run a shell command; its output (stdout + stderr) into *out (may be NULL). */
static int sh(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sh(char **out, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return th_shell(out, cmd);
}

/* `make install` with this build's folder, compiler, BLAS and flags, into root
 * (DESTDIR) / pfx. The compiler and BLAS are passed only when the Makefile
 * named them (NPRED_CC, NPRED_BLAS, NPRED_BLASLIB): a nested make with another
 * compiler or link line would rebuild or relink the build folder under test
 * (make tsan builds with clang against the reference BLAS). */
static int make_install(const char *destdir, const char *pfx, char **out)
{
    char extra[1024] = "";
    const char *vars[3][2] = {{"CC", "NPRED_CC"}, {"BLAS", "NPRED_BLAS"}, {"BLASLIB", "NPRED_BLASLIB"}};
    for (int i = 0; i < 3; i++) {
        const char *v = getenv(vars[i][1]);
        if (v && *v) snprintf(extra + strlen(extra), sizeof extra - strlen(extra), " %s='%s'", vars[i][0], v);
    }
    return sh(out,
              "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s --no-print-directory install BUILD='%s' "
              "OPT='%s' SAN='%s' MPI='%s' PREFIX='%s' DESTDIR='%s'%s",
              env_or("NPRED_BUILD", "build"), env_or("NPRED_OPT", "-O3 -march=native"), env_or("NPRED_SAN", ""),
              env_or("NPRED_MPI", "1"), pfx, destdir, extra);
}

static int exists(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int exists(const char *fmt, ...)
{
    char p[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p, sizeof p, fmt, ap);
    va_end(ap);
    struct stat sb;
    return stat(p, &sb) == 0;
}

static void test_install_layout(void)
{
    char *out = NULL;
    snprintf(prefix, sizeof prefix, "%s/usr", tmp);
    int rc = make_install("", prefix, &out);
    installed = CHECK(rc == 0, "make install PREFIX=%s failed (%d):\n%s", prefix, rc, out ? out : "");
    free(out);
    if (!installed) return;
    const char *files[] = {"bin/npred",           "lib/libnpred.a",          "lib/libnpred.so",
                           "lib/libnpred.so.0",   "include/npred/npred.h",   "include/npred/model.h",
                           "include/npred/data.h", "include/npred/train.h",  "include/npred/eval.h",
                           "lib/pkgconfig/npred.pc"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        CHECK(exists("%s/%s", prefix, files[i]), "not installed: %s", files[i]);
    if (exists("python/npred/__init__.py")) {
        /* where Debian's python3 looks for a non-/usr prefix; imported from there it
         * loads the installed libnpred.so.0 */
        char *ver = NULL;
        sh(&ver, "/usr/bin/python3 -c 'import sys; print(\"%%d.%%d\" %% sys.version_info[:2])'");
        if (ver) ver[strcspn(ver, "\n")] = 0;
        char pydir[800];
        snprintf(pydir, sizeof pydir, "%s/lib/python%s/dist-packages", prefix, ver ? ver : "3");
        free(ver);
        if (strstr(env_or("NPRED_SAN", ""), "thread")) {
            /* as make tsan leaves out the Python tests */
            printf("  import npred from the prefix: left out under ThreadSanitizer (an uninstrumented interpreter "
                   "cannot load a TSan-built library)\n");
        } else if (CHECK(exists("%s/npred/__init__.py", pydir), "the Python package is not in %s", pydir)) {
            rc = sh(&out,
                    "cd '%s' && env -u NPRED_LIBRARY PYTHONPATH='%s' LD_PRELOAD='%s' ASAN_OPTIONS=detect_leaks=0 "
                    "/usr/bin/python3 -c 'import npred; print(npred.__file__); print(npred.lib_path)'",
                    tmp, pydir, env_or("NPRED_PY_PRELOAD", ""));
            char want_py[900], want_lib[900];
            snprintf(want_py, sizeof want_py, "%s/npred/__init__.py", pydir);
            snprintf(want_lib, sizeof want_lib, "%s/lib/", prefix);
            CHECK(rc == 0 && out && strstr(out, want_py) && strstr(out, want_lib),
                  "import npred from the prefix (want %s and a library under %s): rc %d\n%s", want_py, want_lib, rc,
                  out ? out : "");
            free(out);
            out = NULL;
        }
    }
    /* the soname, and the link chain libnpred.so -> libnpred.so.0 -> the real file */
    rc = sh(&out, "readelf -d '%s/lib/libnpred.so.0' | grep SONAME", prefix);
    CHECK(rc == 0 && out && strstr(out, "[libnpred.so.0]"), "soname of libnpred.so.0: %s", out ? out : "");
    free(out);
    char link[512] = {0}, p[600];
    snprintf(p, sizeof p, "%s/lib/libnpred.so", prefix);
    ssize_t k = readlink(p, link, sizeof link - 1);
    CHECK(k > 0 && !strcmp(link, "libnpred.so.0"), "lib/libnpred.so -> '%s' (expected libnpred.so.0)", link);
    /* the binary runs */
    rc = sh(&out, "'%s/bin/npred' --version", prefix);
    CHECK(rc == 0 && out && !strncmp(out, "npred ", 6), "installed npred --version: rc %d, %s", rc, out ? out : "");
    free(out);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Names of the functions declared with NPRED_API in the installed headers. */
static size_t declared_api(char ***names)
{
    size_t n = 0, cap = 1024;
    char **v = malloc(cap * sizeof *v);
    char dir[600];
    snprintf(dir, sizeof dir, "%s/include/npred", prefix);
    DIR *d = opendir(dir);
    if (!d || !v) {
        if (d) closedir(d);
        free(v);
        return 0;
    }
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 3 || strcmp(e->d_name + len - 2, ".h")) continue;
        char path[1000], line[2048];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "NPRED_API ", 10)) continue;
            char *paren = strchr(line, '(');
            if (!paren) continue;
            char *end = paren;
            while (end > line && end[-1] == ' ') end--;
            char *start = end;
            while (start > line && (start[-1] == '_' || (start[-1] >= 'a' && start[-1] <= 'z') ||
                                    (start[-1] >= '0' && start[-1] <= '9') || (start[-1] >= 'A' && start[-1] <= 'Z')))
                start--;
            if (n == cap) break;
            v[n++] = strndup(start, (size_t)(end - start));
        }
        fclose(f);
    }
    closedir(d);
    qsort(v, n, sizeof *v, cmp_str);
    *names = v;
    return n;
}

static void test_exported_symbols(void)
{
    if (!installed) {
        CHECK(0, "not installed");
        return;
    }
    char **api = NULL;
    size_t n_api = declared_api(&api);
    CHECK(n_api > 100, "only %zu NPRED_API declarations found in the installed headers", n_api);
    char *out = NULL;
    int rc = sh(&out, "nm -D --defined-only '%s/lib/libnpred.so.0' | awk '{print $3}'", prefix);
    if (!CHECK(rc == 0 && out, "nm -D failed: %s", out ? out : "")) {
        free(out);
        return;
    }
    size_t n_sym = 0, bad = 0, undeclared = 0;
    char **sym = malloc((strlen(out) / 2 + 1) * sizeof *sym), *save = NULL;
    for (char *s = strtok_r(out, "\n", &save); s && sym; s = strtok_r(NULL, "\n", &save)) {
        if (!*s) continue;
        sym[n_sym++] = s;
        if (strncmp(s, "npred_", 6)) {
            if (bad++ < 10) CHECK(0, "libnpred.so exports '%s' (not npred_*)", s);
            continue;
        }
        if (!bsearch(&s, api, n_api, sizeof *api, cmp_str) && undeclared++ < 10)
            CHECK(0, "libnpred.so exports %s, which no public header declares", s);
    }
    /* and every declared function is there (npred_mpi_* live in libnpred_mpi) */
    if (sym) qsort(sym, n_sym, sizeof *sym, cmp_str);
    size_t missing = 0;
    for (size_t i = 0; sym && i < n_api; i++)
        if (!bsearch(&api[i], sym, n_sym, sizeof *sym, cmp_str) && strncmp(api[i], "npred_mpi_", 10) && missing++ < 10)
            CHECK(0, "%s is declared NPRED_API but libnpred.so does not export it", api[i]);
    free(sym);
    if (exists("%s/lib/libnpred_mpi.so.0", prefix)) {
        char *mo = NULL;
        int r = sh(&mo, "nm -D --defined-only '%s/lib/libnpred_mpi.so.0' | awk '{print $3}'", prefix);
        CHECK(r == 0 && mo && !strcmp(mo, "npred_mpi_enable\n"), "libnpred_mpi.so exports:\n%s", mo ? mo : "");
        free(mo);
    }
    /* docs/c-api.md documents every one of them */
    char *doc = NULL;
    size_t doc_len = 0, undocumented = 0;
    if (CHECK_OK(npred_file_read_all("docs/c-api.md", (void **)&doc, &doc_len))) {
        char *d = realloc(doc, doc_len + 1);
        if (d) {
            doc = d;
            doc[doc_len] = 0;
            for (size_t i = 0; i < n_api; i++) {
                int found = 0;
                for (const char *q = doc; !found && (q = strstr(q, api[i])); q++) {
                    char after = q[strlen(api[i])];
                    found = !(after == '_' || (after >= 'a' && after <= 'z') || (after >= '0' && after <= '9'));
                }
                if (!found && undocumented++ < 10)
                    CHECK(0, "%s is public (NPRED_API) but docs/c-api.md does not mention it", api[i]);
            }
        }
        free(doc);
    }
    printf("  libnpred.so exports %zu symbols; the headers declare %zu API functions\n", n_sym, n_api);
    CHECK(bad == 0 && undeclared == 0 && missing == 0, "%zu foreign, %zu undeclared, %zu missing symbols", bad,
          undeclared, missing);
    for (size_t i = 0; i < n_api; i++) free(api[i]);
    free(api);
    free(out);
}

/* Every installed header compiles on its own, in C and (when a C++ compiler is
 * installed) in C++, and npred/npred.h includes every one of them. */
static void test_public_headers(void)
{
    if (!installed) {
        CHECK(0, "not installed");
        return;
    }
    char dir[600], *out = NULL;
    snprintf(dir, sizeof dir, "%s/include/npred", prefix);
    DIR *d = opendir(dir);
    if (!CHECK(d != NULL, "%s: cannot list", dir)) return;
    char umbrella[1000];
    snprintf(umbrella, sizeof umbrella, "%s/npred.h", dir);
    size_t len = 0;
    char *um = NULL;
    CHECK_OK(npred_file_read_all(umbrella, (void **)&um, &len));
    int cxx = sh(NULL, "command -v c++") == 0, n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t l = strlen(e->d_name);
        if (l < 3 || strcmp(e->d_name + l - 2, ".h")) continue;
        n++;
        int rc = sh(&out, "printf '#include <npred/%s>\\n' | cc -std=c11 -Wall -Wextra -Werror -fsyntax-only -x c -I'%s/include' -",
                    e->d_name, prefix);
        CHECK(rc == 0, "npred/%s does not compile on its own in C:\n%s", e->d_name, out ? out : "");
        free(out);
        out = NULL;
        if (cxx) {
            rc = sh(&out, "printf '#include <npred/%s>\\n' | c++ -Wall -Wextra -Werror -fsyntax-only -x c++ -I'%s/include' -",
                    e->d_name, prefix);
            CHECK(rc == 0, "npred/%s does not compile in C++:\n%s", e->d_name, out ? out : "");
            free(out);
            out = NULL;
        }
        char inc[300];
        snprintf(inc, sizeof inc, "#include \"npred/%s\"", e->d_name);
        /* mpi.h belongs to libnpred_mpi (installed only by an MPI build) */
        if (strcmp(e->d_name, "npred.h") && strcmp(e->d_name, "mpi.h") && (!um || !strstr(um, inc)))
            CHECK(0, "npred/npred.h does not include npred/%s", e->d_name);
    }
    closedir(d);
    free(um);
    CHECK(n >= 10, "only %d headers installed", n);
}

/* Save a small model with the library, predict in-process, then run the example
 * built against the installed library and compare. */
static void test_pkg_config_program(void)
{
    if (!installed) {
        CHECK(0, "not installed");
        return;
    }
    const char *cfg = "{\"layers\": 2, \"input_kern\": 5, \"hidden_kern\": 3, \"hidden_channels\": 6,"
                      " \"stack\": -1, \"grid_mean_predictor\": null}";
    npred_model_session ses[2] = {{"1-2-3", 5, NULL, 0, NULL, NULL}, {"4-5-6", 7, NULL, 0, NULL, NULL}};
    npred_model *m = NULL;
    if (!CHECK_OK(npred_model_create(&m, cfg, "install test", 1, 18, 22, ses, 2, 4, 11))) return;
    char model_dir[400], img_path[400], out_path[400];
    snprintf(model_dir, sizeof model_dir, "%s/model", tmp);
    snprintf(img_path, sizeof img_path, "%s/images.npy", tmp);
    snprintf(out_path, sizeof out_path, "%s/rates.npy", tmp);
    const int B = 3, n = 7;
    npred_array img = {0};
    int64_t shape[4] = {B, 1, 18, 22};
    float ref[3 * 7];
    int ok = CHECK_OK(npred_model_save(m, model_dir)) &&
             CHECK_OK(npred_array_alloc(&img, NPRED_DT_F32, sizeof(float), 4, shape));
    if (ok) {
        float *x = img.data;
        for (size_t i = 0; i < img.count; i++) x[i] = (float)((i * 37 % 101) / 50.0 - 1.0);
        ok = CHECK_OK(npred_npy_write(img_path, &img)) &&
             CHECK_OK(npred_model_predict(m, "4-5-6", x, B, NULL, NULL, ref));
    }
    npred_array_free(&img);
    npred_model_free(m);
    if (!ok) return;

    char *out = NULL;
    char exe[400];
    snprintf(exe, sizeof exe, "%s/predict_npy", tmp);
    int rc = sh(&out,
                "PKG_CONFIG_PATH='%s/lib/pkgconfig' && export PKG_CONFIG_PATH && "
                "cc -std=c11 %s examples/predict_npy.c $(pkg-config --cflags --libs npred) -Wl,-rpath,'%s/lib' -o '%s'",
                prefix, env_or("NPRED_SAN", ""), prefix, exe);
    if (!CHECK(rc == 0, "building examples/predict_npy.c with pkg-config failed (%d):\n%s", rc, out ? out : "")) {
        free(out);
        return;
    }
    free(out);
    /* it resolves libnpred from the prefix, and nothing of MPI */
    rc = sh(&out, "readelf -d '%s' | grep NEEDED", exe);
    CHECK(rc == 0 && out && strstr(out, "[libnpred.so.0]"), "the program does not link libnpred.so.0:\n%s",
          out ? out : "");
    CHECK(out && !strstr(out, "libmpi"), "the predict program needs libmpi:\n%s", out ? out : "");
    free(out);
    rc = sh(&out, "readelf -d '%s/lib/libnpred.so.0' | grep NEEDED", prefix);
    CHECK(rc == 0 && out && !strstr(out, "libmpi"), "libnpred.so needs libmpi:\n%s", out ? out : "");
    free(out);
    rc = sh(&out, "ldd '%s'", exe);
    char want[600];
    snprintf(want, sizeof want, "%s/lib/libnpred.so.0", prefix);
    CHECK(rc == 0 && out && strstr(out, want) && !strstr(out, "libmpi") && !strstr(out, "not found"),
          "ldd of the program (want %s, no libmpi, nothing missing):\n%s", want, out ? out : "");
    free(out);

    rc = sh(&out, "'%s' '%s' '%s' '%s' 4-5-6", exe, model_dir, img_path, out_path);
    CHECK(rc == 0, "predict_npy failed (%d): %s", rc, out ? out : "");
    free(out);
    npred_array got = {0};
    if (rc == 0 && CHECK_OK(npred_npy_read(out_path, &got))) {
        if (CHECK(got.dtype == NPRED_DT_F32 && got.ndim == 2 && got.shape[0] == B && got.shape[1] == n,
                  "rates.npy: ndim %d", got.ndim))
            CHECK(!memcmp(got.data, ref, sizeof ref), "the installed library's rates differ from in-process ones");
        npred_array_free(&got);
    }
}

static void test_destdir(void)
{
    char stage[400], *out = NULL;
    snprintf(stage, sizeof stage, "%s/stage", tmp);
    int rc = make_install(stage, "/opt/npred-test", &out);
    if (!CHECK(rc == 0, "make install DESTDIR failed (%d):\n%s", rc, out ? out : "")) {
        free(out);
        return;
    }
    free(out);
    CHECK(exists("%s/opt/npred-test/lib/libnpred.so.0", stage) && exists("%s/opt/npred-test/bin/npred", stage),
          "DESTDIR: files not under the staging root");
    CHECK(!exists("/opt/npred-test"), "DESTDIR: files written to the real root");
    rc = sh(&out, "grep -x 'prefix=/opt/npred-test' '%s/opt/npred-test/lib/pkgconfig/npred.pc'", stage);
    CHECK(rc == 0, "DESTDIR: npred.pc does not name the final prefix");
    free(out);
}

int main(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/npred-test-install-XXXXXX");
    if (!CHECK(mkdtemp(tmp) != NULL, "mkdtemp")) return th_summary();
    RUN(test_install_layout);
    RUN(test_exported_symbols);
    RUN(test_public_headers);
    RUN(test_pkg_config_program);
    RUN(test_destdir);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return th_summary();
}
