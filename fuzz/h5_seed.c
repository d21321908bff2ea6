/* Seed files for the hdf5 fuzz target: small HDF5 files in the StaticImageSet layout
 * (see src/data/h5fs.h), written with the HDF5 C API. Usage: h5_seed DIR
 * (scripts/fuzz.sh runs it; Python has no HDF5 writer here). */
#include <hdf5.h>
#include <stdio.h>
#include <string.h>

/* a dataset of nd dims; chunked and deflated when chunk is set */
static int put(hid_t loc, const char *name, hid_t type, int nd, const hsize_t *dims, const void *data, int chunk)
{
    hid_t sp = nd ? H5Screate_simple(nd, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (chunk && nd) {
        H5Pset_chunk(dcpl, nd, dims);
        H5Pset_deflate(dcpl, 6);
    }
    hid_t d = H5Dcreate2(loc, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    int ok = d >= 0 && H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0;
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(sp);
    return ok;
}

static int strings(hid_t loc, const char *name, const char *const *v, hsize_t n, int vlen)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    char fixed[4][8];
    memset(fixed, 0, sizeof fixed);
    if (vlen) H5Tset_size(t, H5T_VARIABLE);
    else {
        H5Tset_size(t, 8);
        H5Tset_strpad(t, H5T_STR_NULLPAD);
        for (hsize_t i = 0; i < n && i < 4; i++) memcpy(fixed[i], v[i], strnlen(v[i], 8));
    }
    int ok = put(loc, name, t, 1, &n, vlen ? (const void *)v : (const void *)fixed, 0);
    H5Tclose(t);
    return ok;
}

/* 4 trials of 2 x 3 images and 3 neurons; variant: 0 plain, 1 chunked + deflate,
 * 2 variable-length strings and a bool enum, 3 responses only */
static int seed(const char *path, int variant)
{
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return 0;
    float img[4 * 6], resp[4 * 3], beh[4 * 3], eye[4 * 2];
    for (int i = 0; i < 24; i++) img[i] = (float)i;
    for (int i = 0; i < 12; i++) resp[i] = beh[i] = 0.5f * (float)i;
    for (int i = 0; i < 8; i++) eye[i] = -(float)i;
    hsize_t di[4] = {4, 1, 2, 3}, dr[2] = {4, 3}, de[2] = {4, 2}, dn = 3, dt = 4;
    int chunk = variant == 1, ok = put(f, "responses", H5T_NATIVE_FLOAT, 2, dr, resp, chunk);
    if (variant != 3) {
        static const char *const tiers[4] = {"train", "validation", "test", "train"};
        static const char *const area[3] = {"V1", "LM", "V1"};
        int64_t ids[4] = {10, 11, 12, 10}, units[3] = {1, 2, 3};
        unsigned char flag[4] = {1, 0, 1, 0};
        ok = ok && put(f, "images", H5T_NATIVE_FLOAT, 4, di, img, chunk) &&
             put(f, "behavior", H5T_NATIVE_FLOAT, 2, dr, beh, chunk) &&
             put(f, "pupil_center", H5T_NATIVE_FLOAT, 2, de, eye, chunk) && strings(f, "tiers", tiers, 4, variant == 2);
        hid_t g = H5Gcreate2(f, "item_info", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        ok = ok && put(g, "frame_image_id", H5T_NATIVE_INT64, 1, &dt, ids, chunk);
        if (variant == 2) {
            hid_t e = H5Tenum_create(H5T_NATIVE_INT8);
            signed char no = 0, yes = 1;
            H5Tenum_insert(e, "FALSE", &no);
            H5Tenum_insert(e, "TRUE", &yes);
            ok = ok && put(g, "flag", e, 1, &dt, flag, 0);
            H5Tclose(e);
        }
        H5Gclose(g);
        g = H5Gcreate2(f, "neurons", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        ok = ok && put(g, "unit_ids", H5T_NATIVE_INT64, 1, &dn, units, 0) && strings(g, "area", area, 3, variant == 2);
        H5Gclose(g);
        hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
        H5Pset_create_intermediate_group(lcpl, 1);
        g = H5Gcreate2(f, "statistics/responses/all", lcpl, H5P_DEFAULT, H5P_DEFAULT);
        H5Pclose(lcpl);
        float mean[3] = {1, 2, 3}, one = 1;
        ok = ok && put(g, "mean", H5T_NATIVE_FLOAT, 1, &dn, mean, 0) && put(g, "Std.Dev", H5T_NATIVE_FLOAT, 0, NULL, &one, 0);
        H5Gclose(g);
    }
    return H5Fclose(f) >= 0 && ok;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: h5_seed DIR\n");
        return 2;
    }
    for (int v = 0; v < 4; v++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/seed%d.h5", argv[1], v);
        if (!seed(path, v)) {
            fprintf(stderr, "h5_seed: cannot write %s\n", path);
            return 1;
        }
    }
    return 0;
}
