/*
 * mood.h: the C ABI of mood, multi-objective decoding (MOD) on GGUF models through
 * llama.cpp. Generated from capi/src/lib.rs by cbindgen; a test checks that it matches.
 *
 * Use: mood_open() a recipe (TOML text), mood_generator_new() on it, then mood_generate()
 * as often as wanted, with weights per call and a callback that receives the text as it is
 * decoded; mood_generator_free(), mood_model_free() at the end.
 *
 * Errors: every function that can fail returns a mood_status; MOOD_OK is 0. The message of
 * the last failure on the calling thread is mood_last_error() (one line, valid until the
 * thread's next failing call). No call aborts the program on bad input: NULL pointers,
 * strings that are not UTF-8, handles that were freed (when still detectable) and calls in
 * the wrong order give MOOD_ERR_ARGUMENT; a failure inside the library gives
 * MOOD_ERR_INTERNAL.
 *
 * Threads: a mood_model may be used from several threads at once (each with its own
 * generators). A mood_generator is used by one thread at a time: calls on one generator
 * from several threads wait for each other. mood_cancel() may be called from any thread,
 * at any time, while the generator lives. A generator holds its model's weights: the two
 * may be freed in either order.
 */

#ifndef MOOD_H
#define MOOD_H



#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/**
 * What a call returned; `MOOD_OK` is 0, and `mood_last_error()` says why for the others.
 */
typedef enum mood_status {
  MOOD_OK = 0,
  /**
   * A NULL pointer, a string that is not UTF-8, a handle that is not live, a call in the
   * wrong order.
   */
  MOOD_ERR_ARGUMENT = 1,
  /**
   * A setting (weights, temperature, max_tokens, …) has a value it cannot take.
   */
  MOOD_ERR_SETTING = 2,
  /**
   * The recipe cannot be read or makes no sense.
   */
  MOOD_ERR_RECIPE = 3,
  /**
   * A model or adapter file is missing, not GGUF, or cannot be loaded.
   */
  MOOD_ERR_MODEL_FILE = 4,
  /**
   * Two policies' vocabularies cannot be combined.
   */
  MOOD_ERR_VOCABULARY = 5,
  /**
   * A llama.cpp context cannot be created or is full (lower the context size).
   */
  MOOD_ERR_CONTEXT = 6,
  /**
   * An RPC server cannot be reached or was lost.
   */
  MOOD_ERR_RPC = 7,
  /**
   * Reading or writing a file failed.
   */
  MOOD_ERR_IO = 8,
  /**
   * The generation was cancelled by mood_cancel. (A callback that asks to stop is not an
   * error: mood_generate then returns MOOD_OK.)
   */
  MOOD_ERR_CANCELLED = 9,
  /**
   * llama.cpp or the engine failed.
   */
  MOOD_ERR_ENGINE = 10,
  /**
   * A failure inside the library (a bug): the handle may be used again.
   */
  MOOD_ERR_INTERNAL = 11,
} mood_status;

/**
 * A generator: llama.cpp contexts on a model, and the decoding loop (opaque).
 */
typedef struct mood_generator mood_generator;

/**
 * A recipe's models, loaded (opaque).
 */
typedef struct mood_model mood_model;

/**
 * Receives each piece of text as it is decoded: `text` (NUL-terminated, `len` bytes
 * before the NUL), the token id (-1 for text released at the end) and the `user_data`
 * given to mood_generate. Return 0 to go on, anything else to stop the generation there
 * (mood_generate then returns MOOD_OK with what was decoded). May be NULL.
 */
typedef int32_t (*mood_token_callback)(const char *text, size_t len, int32_t token, void *user_data);

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * The message of the last call that failed on this thread ("" if none). Valid until the
 * thread's next failing call; owned by the library.
 */
const char *mood_last_error(void);

/**
 * Loads a recipe given as TOML text (the format of recipe files). `base_dir` is the folder
 * relative model paths are taken from (NULL: the current folder). `options_json` (NULL:
 * defaults) may set `threads`, `ctx_size`, `strategy` ("auto", "threads", "batched",
 * "mixed"), `n_gpu_layers`, `main_gpu`, `rpc` (an array of "HOST:PORT"), `draft_model` and
 * `strategy_cache` (a file path). On success `*out` is a new model handle.
 *
 * # Safety
 * Strings are NULL or NUL-terminated; `out` is NULL or points to writable storage.
 */
enum mood_status mood_open(const char *recipe_toml,
                           const char *base_dir,
                           const char *options_json,
                           struct mood_model **out);

/**
 * The number of experts of the model's recipe (the length of a weights array).
 *
 * # Safety
 * `model` is NULL or a handle from mood_open; `out` is NULL or writable.
 */
enum mood_status mood_n_experts(const struct mood_model *model, size_t *out);

/**
 * Frees a model. Generators made on it stay usable (they hold the models); NULL is ignored.
 *
 * # Safety
 * `model` is NULL or a handle from mood_open not used by another thread meanwhile.
 */
enum mood_status mood_model_free(struct mood_model *model);

/**
 * Makes a generator on `model`. On success `*out` is a new generator handle.
 *
 * # Safety
 * `model` is NULL or a handle from mood_open; `out` is NULL or writable.
 */
enum mood_status mood_generator_new(const struct mood_model *model, struct mood_generator **out);

/**
 * Frees a generator; NULL is ignored.
 *
 * # Safety
 * `generator` is NULL or a handle from mood_generator_new not used by another thread
 * meanwhile.
 */
enum mood_status mood_generator_free(struct mood_generator *generator);

/**
 * Decodes `prompt` with MOD. `weights` (NULL, or `n_weights` numbers, one per expert)
 * replaces the recipe's weights for this call; `settings_json` (NULL: defaults) may set
 * any setting of a batch line (`max_tokens`, `temperature`, `seed`, `stop`, `divergence`,
 * `top_p`, `grammar`, `json_schema`, …; `weights` there too). `callback` (NULL: none)
 * receives the text as it is decoded. On success, if `text_out` is not NULL, `*text_out`
 * is the whole text, to be freed with mood_string_free.
 *
 * # Safety
 * Handles as documented; `prompt`, `settings_json` NULL or NUL-terminated; `weights` NULL
 * or `n_weights` readable doubles; `text_out` NULL or writable.
 */
enum mood_status mood_generate(struct mood_generator *generator,
                               const char *prompt,
                               const double *weights,
                               size_t n_weights,
                               const char *settings_json,
                               mood_token_callback callback,
                               void *user_data,
                               char **text_out);

/**
 * Cancels the generation running on `generator` (from any thread), or its next one.
 * mood_generate then returns MOOD_ERR_CANCELLED.
 *
 * # Safety
 * `generator` is NULL or a handle from mood_generator_new that is not being freed.
 */
enum mood_status mood_cancel(const struct mood_generator *generator);

/**
 * Silences llama.cpp's own log lines (model loading, context creation) for the whole
 * process; llama.cpp prints them to standard error unless told otherwise.
 */
void mood_silence_llama_log(void);

/**
 * Frees a string the library returned; NULL is ignored.
 *
 * # Safety
 * `s` is NULL or a string from mood_generate's `text_out`, freed once.
 */
void mood_string_free(char *s);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* MOOD_H */
