/*
 * The C ABI driven with hostile arguments: NULL everywhere, strings that are not UTF-8,
 * handles used after being freed or of the wrong kind, bad JSON, weights that are NaN or of
 * the wrong number, calls in the wrong order. Every call must return its status with a
 * message, and the process must survive. Prints "N passed, N failed".
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "mood.h"

static int passed = 0, failed = 0;

static void expect(const char *what, mood_status got, mood_status want) {
    const char *message = mood_last_error();
    int ok = got == want && (want == MOOD_OK || (message != NULL && strlen(message) > 0));
    if (ok) {
        passed++;
    } else {
        failed++;
        printf("FAILED %s: status %d (wanted %d), message \"%s\"\n", what, (int)got, (int)want,
               message ? message : "(null)");
    }
}

static int stop_at_once(const char *text, size_t len, int32_t token, void *user_data) {
    (void)text, (void)len, (void)token;
    ++*(int *)user_data;
    return 1;
}

int main(int argc, char **argv) {
    const char *model_file = argc > 1 ? argv[1] : "models/gemma-3-270m-q4_k_m.gguf";
    char recipe[512];
    snprintf(recipe, sizeof recipe,
             "[[expert]]\nname = \"a\"\nmodel = \"%s\"\nprefix = \"Poem: \"\n"
             "[[expert]]\nname = \"b\"\nmodel = \"%s\"\nprefix = \"Fact: \"\n",
             model_file, model_file);
    const char not_utf8[] = {'\xff', '\xfe', 'a', 0};
    mood_silence_llama_log();
    mood_model *model = NULL;
    mood_generator *gen = NULL;

    /* Opening. */
    expect("open NULL recipe", mood_open(NULL, NULL, NULL, &model), MOOD_ERR_ARGUMENT);
    expect("open NULL out", mood_open(recipe, NULL, NULL, NULL), MOOD_ERR_ARGUMENT);
    expect("open non-UTF-8 recipe", mood_open(not_utf8, NULL, NULL, &model), MOOD_ERR_ARGUMENT);
    expect("open bad TOML", mood_open("[[expert", NULL, NULL, &model), MOOD_ERR_RECIPE);
    expect("open no experts", mood_open("divergence = \"jsd\"", NULL, NULL, &model), MOOD_ERR_RECIPE);
    expect("open missing model", mood_open("[[expert]]\nmodel = \"/nonexistent.gguf\"", NULL, NULL, &model),
           MOOD_ERR_MODEL_FILE);
    expect("open not GGUF", mood_open("[[expert]]\nmodel = \"/etc/hostname\"", NULL, NULL, &model),
           MOOD_ERR_MODEL_FILE);
    expect("open bad options", mood_open(recipe, NULL, "{\"threads\": -3}", &model), MOOD_ERR_SETTING);
    expect("open unknown option", mood_open(recipe, NULL, "{\"colour\": 1}", &model), MOOD_ERR_SETTING);
    expect("open options not JSON", mood_open(recipe, NULL, "{", &model), MOOD_ERR_SETTING);
    expect("open threads 0", mood_open(recipe, NULL, "{\"threads\": 0}", &model), MOOD_ERR_SETTING);
    expect("open", mood_open(recipe, NULL, "{\"ctx_size\": 512}", &model), MOOD_OK);

    /* Handles of the wrong kind or NULL. */
    size_t n = 0;
    expect("n_experts", mood_n_experts(model, &n), MOOD_OK);
    if (n != 2) { failed++; printf("FAILED n_experts: %zu\n", n); } else passed++;
    expect("n_experts NULL out", mood_n_experts(model, NULL), MOOD_ERR_ARGUMENT);
    expect("generator_new NULL model", mood_generator_new(NULL, &gen), MOOD_ERR_ARGUMENT);
    expect("generator_new NULL out", mood_generator_new(model, NULL), MOOD_ERR_ARGUMENT);
    expect("generator_new", mood_generator_new(model, &gen), MOOD_OK);
    expect("model as generator", mood_generate((mood_generator *)model, "x", NULL, 0, NULL, NULL, NULL, NULL),
           MOOD_ERR_ARGUMENT);
    expect("generator as model", mood_generator_new((mood_model *)gen, &gen), MOOD_ERR_ARGUMENT);
    expect("generate NULL generator", mood_generate(NULL, "x", NULL, 0, NULL, NULL, NULL, NULL), MOOD_ERR_ARGUMENT);

    /* Bad arguments to generate. */
    double nan_weights[2] = {NAN, 0.5};
    double ok_weights[2] = {0.5, 0.5};
    double huge[2] = {1e300, -1e300};
    expect("generate NULL prompt", mood_generate(gen, NULL, NULL, 0, NULL, NULL, NULL, NULL), MOOD_ERR_ARGUMENT);
    expect("generate non-UTF-8 prompt", mood_generate(gen, not_utf8, NULL, 0, NULL, NULL, NULL, NULL), MOOD_ERR_ARGUMENT);
    expect("generate empty prompt", mood_generate(gen, "  ", NULL, 0, NULL, NULL, NULL, NULL), MOOD_ERR_SETTING);
    expect("generate NaN weight", mood_generate(gen, "x", nan_weights, 2, NULL, NULL, NULL, NULL), MOOD_ERR_SETTING);
    expect("generate huge weights", mood_generate(gen, "x", huge, 2, NULL, NULL, NULL, NULL), MOOD_ERR_SETTING);
    expect("generate one weight of two", mood_generate(gen, "x", ok_weights, 1, NULL, NULL, NULL, NULL), MOOD_ERR_SETTING);
    expect("generate NULL weights, n 2", mood_generate(gen, "x", NULL, 2, NULL, NULL, NULL, NULL), MOOD_ERR_ARGUMENT);
    expect("generate absurd n_weights", mood_generate(gen, "x", ok_weights, (size_t)-1, NULL, NULL, NULL, NULL),
           MOOD_ERR_SETTING);
    expect("generate settings not JSON", mood_generate(gen, "x", NULL, 0, "{max", NULL, NULL, NULL), MOOD_ERR_SETTING);
    expect("generate settings not object", mood_generate(gen, "x", NULL, 0, "[1]", NULL, NULL, NULL), MOOD_ERR_SETTING);
    expect("generate unknown setting", mood_generate(gen, "x", NULL, 0, "{\"temprature\": 1}", NULL, NULL, NULL),
           MOOD_ERR_SETTING);
    expect("generate max_tokens -1", mood_generate(gen, "x", NULL, 0, "{\"max_tokens\": -1}", NULL, NULL, NULL),
           MOOD_ERR_SETTING);
    expect("generate temperature NaN", mood_generate(gen, "x", NULL, 0, "{\"temperature\": \"nan\"}", NULL, NULL, NULL),
           MOOD_ERR_SETTING);
    expect("generate non-UTF-8 settings", mood_generate(gen, "x", NULL, 0, not_utf8, NULL, NULL, NULL), MOOD_ERR_ARGUMENT);

    /* What works: text out, a callback that stops at once, a cancellation. */
    char *text = NULL;
    expect("generate", mood_generate(gen, "The sea", ok_weights, 2, "{\"max_tokens\": 4}", NULL, NULL, &text), MOOD_OK);
    if (text == NULL) { failed++; printf("FAILED generate: no text\n"); } else passed++;
    mood_string_free(text);
    mood_string_free(NULL);
    int calls = 0;
    expect("callback stops", mood_generate(gen, "The sea", NULL, 0, "{\"max_tokens\": 8}", stop_at_once, &calls, NULL),
           MOOD_OK);
    if (calls != 1) { failed++; printf("FAILED callback stop: %d calls\n", calls); } else passed++;
    expect("cancel", mood_cancel(gen), MOOD_OK);
    expect("generate after cancel", mood_generate(gen, "The sea", NULL, 0, "{\"max_tokens\": 8}", NULL, NULL, NULL),
           MOOD_ERR_CANCELLED);
    expect("generate again", mood_generate(gen, "The sea", NULL, 0, "{\"max_tokens\": 2}", NULL, NULL, NULL), MOOD_OK);
    expect("cancel NULL", mood_cancel(NULL), MOOD_ERR_ARGUMENT);

    /* Freed handles, freed twice, and the model freed before its generator. */
    expect("model_free first", mood_model_free(model), MOOD_OK);
    expect("generate after model freed", mood_generate(gen, "The sea", NULL, 0, "{\"max_tokens\": 2}", NULL, NULL, NULL),
           MOOD_OK);
    expect("model freed twice", mood_model_free(model), MOOD_ERR_ARGUMENT);
    expect("generator_new on freed model", mood_generator_new(model, &gen), MOOD_ERR_ARGUMENT);
    expect("generator_free", mood_generator_free(gen), MOOD_OK);
    expect("generate on freed generator", mood_generate(gen, "x", NULL, 0, NULL, NULL, NULL, NULL), MOOD_ERR_ARGUMENT);
    expect("cancel freed generator", mood_cancel(gen), MOOD_ERR_ARGUMENT);
    expect("generator freed twice", mood_generator_free(gen), MOOD_ERR_ARGUMENT);
    expect("free NULLs", mood_generator_free(NULL), MOOD_OK);
    expect("free NULL model", mood_model_free(NULL), MOOD_OK);

    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
