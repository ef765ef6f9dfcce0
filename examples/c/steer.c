/*
 * MOD from C: two prompted experts on one model file, the same prompt at three weightings,
 * the text streamed through a callback.
 *
 *   cargo build --release -p mood-capi
 *   cc examples/c/steer.c -Icapi/include -Ltarget/release -lmood -Wl,-rpath,$PWD/target/release -o steer
 *   ./steer models/gemma-3-270m-q4_k_m.gguf
 */
#include <stdio.h>
#include <stdlib.h>
#include "mood.h"

static int print_piece(const char *text, size_t len, int32_t token, void *user_data) {
    (void)token;
    (void)user_data;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0; /* 0: go on; anything else stops the generation */
}

int main(int argc, char **argv) {
    const char *model_file = argc > 1 ? argv[1] : "models/gemma-3-270m-q4_k_m.gguf";
    char recipe[1024];
    snprintf(recipe, sizeof recipe,
             "[[expert]]\nname = \"poet\"\nmodel = \"%s\"\n"
             "prefix = \"A short rhyming poem for children:\\n\\n\"\n"
             "[[expert]]\nname = \"scientist\"\nmodel = \"%s\"\n"
             "prefix = \"From a science textbook, chapter 4:\\n\\n\"\n",
             model_file, model_file);

    mood_silence_llama_log();
    mood_model *model = NULL;
    mood_generator *generator = NULL;
    if (mood_open(recipe, ".", NULL, &model) != MOOD_OK ||
        mood_generator_new(model, &generator) != MOOD_OK) {
        fprintf(stderr, "steer: %s\n", mood_last_error());
        return 1;
    }
    const double weightings[3][2] = {{1.0, 0.0}, {0.5, 0.5}, {0.0, 1.0}};
    for (int i = 0; i < 3; i++) {
        printf("(poet, scientist) = (%.1f, %.1f)\nThe ocean", weightings[i][0], weightings[i][1]);
        mood_status status = mood_generate(generator, "The ocean", weightings[i], 2,
                                           "{\"max_tokens\": 40}", print_piece, NULL, NULL);
        if (status != MOOD_OK) {
            fprintf(stderr, "\nsteer: %s\n", mood_last_error());
            break;
        }
        printf("\n\n");
    }
    mood_generator_free(generator);
    mood_model_free(model);
    return 0;
}
