/* One way to read JSON configurations (src/base/json.h): the helpers' rules for
 * types, ranges, null and unknown keys, and the same message shape
 * "<where>: key 'x': expected ..." from the model, loader and trainer configs. */
#include <string.h>

#include "base/json.h"
#include "harness.h"
#include "npred/data.h"
#include "npred/insilico.h"
#include "npred/model.h"
#include "npred/train.h"
#include "npred/video.h"

/* the error message contains want */
static int says(const char *want) { return strstr(npred_last_error(), want) != NULL; }

static cJSON *item(cJSON *root, const char *key) { return cJSON_GetObjectItemCaseSensitive(root, key); }

static void test_helpers(void)
{
    cJSON *j = cJSON_Parse("{\"i\": 3, \"f\": 2.5, \"big\": 1e300, \"neg\": -1, \"b\": true, \"one\": 1, \"n\": null,"
                           " \"s\": \"poisson\", \"huge\": 3e9, \"l\": [1, 2]}");
    if (!CHECK(j, "parse")) return;
    const double ANY = NPRED_JSON_ANY;
    npred_json_reader r = {"f.json", "sec.", NPRED_OK};
    int i = -7, b = -7;
    int64_t l = -7;
    double d = -7;
    const char *s = NULL;
    CHECK(npred_json_int(&r, item(j, "i"), 1, 5, &i) == 1 && i == 3 && !r.st, "int in range");
    CHECK(npred_json_i64(&r, item(j, "i"), -ANY, ANY, &l) == 1 && l == 3, "i64 open range");
    CHECK(npred_json_num(&r, item(j, "f"), 0, 3, &d) == 1 && d == 2.5, "number in range");
    CHECK(npred_json_bool(&r, item(j, "b"), &b) == 1 && b == 1, "bool");
    CHECK(npred_json_str(&r, item(j, "s"), &s) == 1 && !strcmp(s, "poisson"), "string");
    i = -7;
    CHECK(npred_json_int_or_null(&r, item(j, "n"), 0, ANY, &i) == 2 && i == -7 && !r.st, "null leaves the value");
    CHECK(npred_json_is_integer(item(j, "i")) && !npred_json_is_integer(item(j, "f")) &&
              !npred_json_is_integer(item(j, "big")) && !npred_json_is_integer(item(j, "s")),
          "is_integer");
    static const char *const names[] = {"poisson", "gamma", "none"};
    CHECK(npred_json_choice(&r, item(j, "s"), names, 3, &i) == 1 && i == 0 && !r.st, "choice");

    struct {
        int got;
        const char *want;
    } bad[16];
    int nb = 0;
#define BAD(call, msg)                                                                                                 \
    do {                                                                                                               \
        r.st = NPRED_OK;                                                                                               \
        bad[nb].got = (call) == 0 && r.st == NPRED_ERR_CONFIG && says(msg);                                          \
        bad[nb++].want = msg;                                                                                          \
    } while (0)
    BAD(npred_json_int(&r, item(j, "f"), 0, ANY, &i), "f.json: key 'sec.f': expected an integer >= 0");
    BAD(npred_json_int(&r, item(j, "i"), 4, 5, &i), "f.json: key 'sec.i': expected an integer in [4, 5]");
    BAD(npred_json_int(&r, item(j, "huge"), -ANY, ANY, &i),
        "f.json: key 'sec.huge': expected an integer in [-2147483648, 2147483647]");
    BAD(npred_json_i64(&r, item(j, "big"), -ANY, ANY, &l), "key 'sec.big': expected an integer");
    BAD(npred_json_num(&r, item(j, "neg"), 0, ANY, &d), "key 'sec.neg': expected a number >= 0");
    BAD(npred_json_num_or_null(&r, item(j, "s"), -ANY, 1, &d), "key 'sec.s': expected a number <= 1 or null");
    BAD(npred_json_bool(&r, item(j, "one"), &b), "key 'sec.one': expected true or false");
    BAD(npred_json_str(&r, item(j, "l"), &s), "key 'sec.l': expected a string");
    BAD(npred_json_choice(&r, item(j, "i"), names, 3, &i), "key 'sec.i': expected \"poisson\", \"gamma\" or \"none\"");
    BAD(npred_json_unknown(&r, item(j, "i"), "not an argument"), "f.json: unknown key 'sec.i' (not an argument)");
    double p[2] = {-7, -7};
    BAD(npred_json_pair(&r, item(j, "i"), 0, 0, -ANY, ANY, p), "f.json: key 'sec.i': expected a pair of numbers");
    BAD(npred_json_pair(&r, item(j, "l"), 1, 1, 2, ANY, p), "key 'sec.l': expected an integer or a pair of integers >= 2");
    BAD(npred_json_pair(&r, item(j, "f"), 1, 1, 0, ANY, p), "key 'sec.f': expected an integer or a pair of integers >= 0");
    BAD(npred_json_missing(&r, "lr", "optimizers need it"), "f.json: key 'sec.lr' is missing (optimizers need it)");
#undef BAD
    r.st = NPRED_OK;
    CHECK(npred_json_pair(&r, item(j, "l"), 1, 0, 0, 2, p) == 1 && p[0] == 1 && p[1] == 2 && !r.st, "pair");
    CHECK(npred_json_pair(&r, item(j, "f"), 0, 1, 0, 3, p) == 1 && p[0] == 2.5 && p[1] == 2.5 && !r.st,
          "one number for both");
    for (int k = 0; k < nb; k++) CHECK(bad[k].got, "expected the error '%s'", bad[k].want);
    /* the first error is kept */
    r.st = NPRED_OK;
    npred_json_bool(&r, item(j, "one"), &b);
    npred_json_str(&r, item(j, "i"), &s);
    CHECK(r.st == NPRED_ERR_CONFIG && says("'sec.one'"), "first error kept: %s", npred_last_error());
    cJSON_Delete(j);
}

/* the same kind of mistake gives the same kind of message in all three configs */
static void test_three_configs(void)
{
    npred_trainer_config tc;
    npred_loader_config lc;
    npred_trainer_config_init(&tc);
    npred_loader_config_init(&lc);
    CHECK(npred_model_config_check("{\"layers\": 1.5}", "m.json") == NPRED_ERR_CONFIG &&
              says("m.json: key 'layers': expected an integer"),
          "model integer: %s", npred_last_error());
    CHECK(npred_trainer_config_parse(&tc, "{\"patience\": 1.5}", "t.json") == NPRED_ERR_CONFIG &&
              says("t.json: key 'patience': expected an integer >= 0"),
          "trainer integer: %s", npred_last_error());
    CHECK(npred_loader_config_parse(&lc, "{\"batch_size\": 1.5}", NULL, NULL) == NPRED_ERR_CONFIG &&
              says("loader config: key 'batch_size': expected an integer >= 1"),
          "loader integer: %s", npred_last_error());

    CHECK(npred_model_config_check("{\"pad_input\": 1}", "m.json") == NPRED_ERR_CONFIG &&
              says("m.json: key 'pad_input': expected true or false"),
          "model bool: %s", npred_last_error());
    CHECK(npred_trainer_config_parse(&tc, "{\"avg_loss\": \"yes\"}", "t.json") == NPRED_ERR_CONFIG &&
              says("t.json: key 'avg_loss': expected true or false"),
          "trainer bool: %s", npred_last_error());
    CHECK(npred_loader_config_parse(&lc, "{\"cuda\": 0}", NULL, NULL) == NPRED_ERR_CONFIG &&
              says("loader config: key 'cuda': expected true or false or null"),
          "loader bool: %s", npred_last_error());

    CHECK(npred_model_config_check("{\"layerz\": 2}", "m.json") == NPRED_ERR_CONFIG &&
              says("m.json: unknown key 'layerz'"),
          "model unknown key: %s", npred_last_error());
    CHECK(npred_trainer_config_parse(&tc, "{\"max_iters\": 2}", "t.json") == NPRED_ERR_CONFIG &&
              says("t.json: unknown key 'max_iters'"),
          "trainer unknown key: %s", npred_last_error());
    CHECK(npred_loader_config_parse(&lc, "{\"batchsize\": 2}", NULL, NULL) == NPRED_ERR_CONFIG &&
              says("loader config: unknown key 'batchsize'"),
          "loader unknown key: %s", npred_last_error());

    CHECK(npred_model_config_check("{\"core\": {\"hidden_channels\": 4, \"input_kern\": 3, \"hidden_kern\": [3.5],"
                                   " \"layers\": 2}}", "m.json") == NPRED_ERR_CONFIG &&
              says("m.json: key 'core.hidden_kern': expected an integer or a list of integers"),
          "model list of integers: %s", npred_last_error());
    /* a device name that does not fit is refused, not cut short in what a run saves */
    CHECK(npred_trainer_config_parse(&tc, "{\"device\": \"cuda:012345678901234567890123456\"}", "t.json") ==
                  NPRED_ERR_CONFIG && says("t.json: key 'device': expected a device name of at most 31 bytes"),
          "trainer device: %s", npred_last_error());
    CHECK_OK(npred_trainer_config_parse(&tc, "{\"device\": \"cuda:01234567890123456789012345\"}", "t.json"));
    CHECK(!strcmp(tc.device, "cuda:01234567890123456789012345"), "31-byte device kept: %s", tc.device);
    CHECK(npred_trainer_config_parse(&tc, "{\"lr_init\": -0.1}", "t.json") == NPRED_ERR_CONFIG &&
              says("t.json: key 'lr_init': expected a number >= 0"),
          "trainer range: %s", npred_last_error());
    CHECK(npred_loader_config_parse(&lc, "{\"scale\": 0}", NULL, NULL) == NPRED_ERR_CONFIG &&
              says("loader config: key 'scale': expected a number > 0 or null"),
          "loader range: %s", npred_last_error());
    npred_loader_config_free(&lc);
}

/* A key given twice in one object is refused, naming it, by every config reader (the
 * parsers read some keys by lookup, which finds the first, and others in order, where the
 * last wins: {"core_type": "RotationEquivariant2dCore", "core_type": "SE2dCore"} made a
 * core that was both, whose saved config did not read back as it). */
static void test_repeated_keys(void)
{
    CHECK(npred_model_config_check("{\"core_type\": \"RotationEquivariant2dCore\", \"core_type\": \"SE2dCore\"}",
                                   "m.json") == NPRED_ERR_CONFIG &&
              says("m.json: key 'core_type' appears more than once"),
          "model, flat: %s", npred_last_error());
    CHECK(npred_model_config_check("{\"core\": {\"hidden_channels\": 4, \"input_kern\": 3, \"layers\": 1},"
                                   " \"readout\": {\"grid_mean_predictor\": {\"type\": \"cortex\", \"hidden_layers\": 1,"
                                   " \"hidden_layers\": 2}}}", "m.json") == NPRED_ERR_CONFIG &&
              says("m.json: key 'readout.grid_mean_predictor.hidden_layers' appears more than once"),
          "model, nested: %s", npred_last_error());
    npred_trainer_config tc;
    npred_trainer_config_init(&tc);
    CHECK(npred_trainer_config_parse(&tc, "{\"patience\": 3, \"max_iter\": 9, \"patience\": 4}", "t.json") ==
                  NPRED_ERR_CONFIG && says("t.json: key 'patience' appears more than once"),
          "trainer: %s", npred_last_error());
    npred_loader_config lc;
    npred_loader_config_init(&lc);
    CHECK(npred_loader_config_parse(&lc, "{\"batch_size\": 2, \"batch_size\": 2}", NULL, NULL) == NPRED_ERR_CONFIG &&
              says("loader config: key 'batch_size' appears more than once"),
          "loader: %s", npred_last_error());
    npred_loader_config_free(&lc);
    npred_video_loader_config vl;
    npred_video_loader_config_init(&vl);
    CHECK(npred_video_loader_config_parse(&vl, "{\"frames\": 8, \"frames\": 9}", NULL, NULL) == NPRED_ERR_CONFIG &&
              says("video loader config: key 'frames' appears more than once"),
          "video loader: %s", npred_last_error());
    npred_video_loader_config_free(&vl);
    npred_mei_config mc;
    CHECK(npred_mei_config_parse(&mc, "{\"seed\": 1, \"optimizer\": {\"kwargs\": {\"lr\": 1, \"lr\": 2}}}",
                                 "mei.json") == NPRED_ERR_CONFIG &&
              says("mei.json: key 'optimizer.kwargs.lr' appears more than once"),
          "MEI: %s", npred_last_error());
    /* the same key in different objects, and a list of objects, are fine */
    CHECK_OK(npred_model_config_check("{\"core\": {\"hidden_channels\": 4, \"input_kern\": 3, \"layers\": 1,"
                                      " \"bias\": true}, \"readout\": {\"bias\": true}, \"shifter\": null}", "m.json"));
}

/* n_se_blocks and se_reduction are SE2dCore's: on another core they would not act */
static void test_se_keys(void)
{
    CHECK(npred_model_config_check("{\"n_se_blocks\": 2}", "m.json") == NPRED_ERR_CONFIG &&
              says("m.json: key 'n_se_blocks': expected absent: it is an argument of SE2dCore only"),
          "flat Stacked2dCore: %s", npred_last_error());
    CHECK(npred_model_config_check("{\"se_reduction\": 4, \"core_type\": \"RotationEquivariant2dCore\"}", "m.json") ==
                  NPRED_ERR_CONFIG && says("m.json: key 'se_reduction': expected absent"),
          "flat rotation-equivariant: %s", npred_last_error());
    CHECK(npred_model_config_check("{\"core\": {\"hidden_channels\": 4, \"input_kern\": 3, \"layers\": 1,"
                                   " \"n_se_blocks\": 1}}", "m.json") == NPRED_ERR_CONFIG &&
              says("m.json: key 'core.n_se_blocks': expected absent"),
          "structured Stacked2dCore: %s", npred_last_error());
    /* the key may come before core_type */
    CHECK_OK(npred_model_config_check("{\"n_se_blocks\": 1, \"se_reduction\": 2, \"core_type\": \"SE2dCore\"}", "m.json"));
    CHECK(npred_model_config_check("{\"core_type\": \"SE2dCore\", \"se_reduction\": 0}", "m.json") == NPRED_ERR_CONFIG &&
              says("m.json: key 'se_reduction': expected an integer >= 1"),
          "se_reduction 0: %s", npred_last_error());
}

int main(void)
{
    RUN(test_helpers);
    RUN(test_three_configs);
    RUN(test_repeated_keys);
    RUN(test_se_keys);
    return th_summary();
}
