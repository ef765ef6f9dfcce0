/*
 * The C side of benches/embed.rs: loads the demo recipe's policies through the C ABI, then
 * times one mood_generate call (prompt and decoding) on a fresh generator and prints
 * "TOKENS SECONDS". Usage: embed RECIPE_TOML_FILE BASE_DIR OPTIONS_JSON SETTINGS_JSON PROMPT
 */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "mood.h"

static int count(const char *text, size_t len, int32_t token, void *user_data) {
    (void)text, (void)len;
    if (token >= 0) ++*(long *)user_data;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 6) return 2;
    FILE *f = fopen(argv[1], "rb");
    if (!f) return 2;
    static char recipe[1 << 16];
    size_t n = fread(recipe, 1, sizeof recipe - 1, f);
    fclose(f);
    recipe[n] = 0;
    mood_silence_llama_log();
    mood_model *model = NULL;
    mood_generator *generator = NULL;
    if (mood_open(recipe, argv[2], argv[3], &model) != MOOD_OK ||
        mood_generator_new(model, &generator) != MOOD_OK) {
        fprintf(stderr, "embed: %s\n", mood_last_error());
        return 1;
    }
    long tokens = 0;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    mood_status status = mood_generate(generator, argv[5], NULL, 0, argv[4], count, &tokens, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    if (status != MOOD_OK) {
        fprintf(stderr, "embed: %s\n", mood_last_error());
        return 1;
    }
    printf("%ld %.6f\n", tokens, (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
    mood_generator_free(generator);
    mood_model_free(model);
    return 0;
}
