//! The C ABI of mood (`include/mood.h`, generated from this file by cbindgen): opaque
//! handles, status codes, the last error's message per thread, no panic across the boundary.
//!
//! Every entry point runs its body under `catch_unwind` and checks its pointers: NULL,
//! strings that are not UTF-8, and handles that are not live (freed, never made, or of the
//! other kind) are refused with `MOOD_ERR_ARGUMENT` rather than dereferenced. Live handles
//! are kept in a registry by address, which is how a handle used after `..._free` is
//! detected (unless its address was reused by a newer handle of the same kind).

#![allow(non_camel_case_types)]

use mood_lib::{CancelHandle, Error, Flow, Mood, Options, Recipe, Session};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock};

/// What a call returned; `MOOD_OK` is 0, and `mood_last_error()` says why for the others.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoodStatus {
    MOOD_OK = 0,
    /// A NULL pointer, a string that is not UTF-8, a handle that is not live, a call in the
    /// wrong order.
    MOOD_ERR_ARGUMENT = 1,
    /// A setting (weights, temperature, max_tokens, …) has a value it cannot take.
    MOOD_ERR_SETTING = 2,
    /// The recipe cannot be read or makes no sense.
    MOOD_ERR_RECIPE = 3,
    /// A model or adapter file is missing, not GGUF, or cannot be loaded.
    MOOD_ERR_MODEL_FILE = 4,
    /// Two policies' vocabularies cannot be combined.
    MOOD_ERR_VOCABULARY = 5,
    /// A llama.cpp context cannot be created or is full (lower the context size).
    MOOD_ERR_CONTEXT = 6,
    /// An RPC server cannot be reached or was lost.
    MOOD_ERR_RPC = 7,
    /// Reading or writing a file failed.
    MOOD_ERR_IO = 8,
    /// The generation was cancelled by mood_cancel. (A callback that asks to stop is not an
    /// error: mood_generate then returns MOOD_OK.)
    MOOD_ERR_CANCELLED = 9,
    /// llama.cpp or the engine failed.
    MOOD_ERR_ENGINE = 10,
    /// A failure inside the library (a bug): the handle may be used again.
    MOOD_ERR_INTERNAL = 11,
}

use MoodStatus::*;

/// A recipe's models, loaded (opaque).
pub struct MoodModel {
    mood: Mood,
}

/// A generator: llama.cpp contexts on a model, and the decoding loop (opaque).
pub struct MoodGenerator {
    mood: Mood,
    cancel: CancelHandle,
    session: Mutex<Session>,
}

/// Receives each piece of text as it is decoded: `text` (NUL-terminated, `len` bytes
/// before the NUL), the token id (-1 for text released at the end) and the `user_data`
/// given to mood_generate. Return 0 to go on, anything else to stop the generation there
/// (mood_generate then returns MOOD_OK with what was decoded). May be NULL.
pub type MoodTokenCallback = Option<
    extern "C" fn(text: *const c_char, len: usize, token: i32, user_data: *mut c_void) -> i32,
>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Model,
    Generator,
}

/// Live handles by address.
fn live() -> &'static Mutex<HashMap<usize, Kind>> {
    static LIVE: OnceLock<Mutex<HashMap<usize, Kind>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
}

fn is_live(address: usize, kind: Kind) -> bool {
    live().lock().map(|l| l.get(&address) == Some(&kind)).unwrap_or(false)
}

/// Boxes `value` as a new live handle of `kind`.
fn register<T>(value: T, kind: Kind) -> *mut T {
    let handle = Box::into_raw(Box::new(value));
    if let Ok(mut l) = live().lock() {
        l.insert(handle as usize, kind);
    }
    handle
}

/// Frees a handle made by [`register`]: NULL is ignored, one that is not live is refused.
///
/// # Safety
/// `handle` is NULL or was made by `register::<T>` with `kind`, and no other thread uses it.
unsafe fn release<T>(handle: *mut T, kind: Kind, what: &str) -> MoodStatus {
    if handle.is_null() {
        return MOOD_OK;
    }
    if !take_live(handle as usize, kind) {
        return fail(
            MOOD_ERR_ARGUMENT,
            format!("{what} is not a live {what} handle (freed twice?)"),
        );
    }
    // SAFETY: it was live, so it came from Box::into_raw in `register` and is freed once.
    drop(unsafe { Box::from_raw(handle) });
    MOOD_OK
}

/// Refuses a handle that is not live (NULL, freed, or of the other kind).
fn check_live<T>(handle: *const T, kind: Kind, what: &str) -> Result<(), MoodStatus> {
    if is_live(handle as usize, kind) {
        Ok(())
    } else {
        Err(fail(
            MOOD_ERR_ARGUMENT,
            format!("{what} is not a live {what} handle (NULL, freed, or not a {what})"),
        ))
    }
}

/// Removes a live handle from the registry; false if it was not live.
fn take_live(address: usize, kind: Kind) -> bool {
    let Ok(mut l) = live().lock() else { return false };
    if l.get(&address) != Some(&kind) {
        return false;
    }
    l.remove(&address);
    true
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` as the thread's last error and returns `status`.
fn fail(status: MoodStatus, message: impl Into<String>) -> MoodStatus {
    let text = message.into().replace('\0', " ");
    let c = CString::new(text).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
    status
}

fn fail_with(e: Error) -> MoodStatus {
    let status = match &e {
        Error::Setting { .. } => MOOD_ERR_SETTING,
        Error::Recipe { .. } => MOOD_ERR_RECIPE,
        Error::ModelFile { .. } => MOOD_ERR_MODEL_FILE,
        Error::Vocabulary { .. } => MOOD_ERR_VOCABULARY,
        Error::Context { .. } => MOOD_ERR_CONTEXT,
        Error::Rpc { .. } => MOOD_ERR_RPC,
        Error::Io { .. } => MOOD_ERR_IO,
        Error::Cancelled { .. } => MOOD_ERR_CANCELLED,
        _ => MOOD_ERR_ENGINE,
    };
    fail(status, e.to_string())
}

/// Runs an entry point's body; a panic becomes `MOOD_ERR_INTERNAL`.
fn guarded(body: impl FnOnce() -> MoodStatus) -> MoodStatus {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(status) => status,
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            fail(MOOD_ERR_INTERNAL, format!("internal error in mood: {why}"))
        }
    }
}

/// A C string argument as UTF-8; `what` names it in the error.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string.
unsafe fn text<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, MoodStatus> {
    if ptr.is_null() {
        return Err(fail(MOOD_ERR_ARGUMENT, format!("{what} is NULL")));
    }
    // SAFETY: not NULL, and the caller promises a NUL-terminated string.
    let c = unsafe { CStr::from_ptr(ptr) };
    c.to_str().map_err(|_| fail(MOOD_ERR_ARGUMENT, format!("{what} is not valid UTF-8")))
}

/// An optional C string argument (NULL: `None`).
///
/// # Safety
/// As [`text`].
unsafe fn optional_text<'a>(ptr: *const c_char, what: &str) -> Result<Option<&'a str>, MoodStatus> {
    if ptr.is_null() {
        Ok(None)
    } else {
        // SAFETY: the caller's promise is passed on.
        unsafe { text(ptr, what) }.map(Some)
    }
}

/// The message of the last call that failed on this thread ("" if none). Valid until the
/// thread's next failing call; owned by the library.
#[no_mangle]
pub extern "C" fn mood_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Loads a recipe given as TOML text (the format of recipe files). `base_dir` is the folder
/// relative model paths are taken from (NULL: the current folder). `options_json` (NULL:
/// defaults) may set `threads`, `ctx_size`, `strategy` ("auto", "threads", "batched",
/// "mixed"), `n_gpu_layers`, `main_gpu`, `rpc` (an array of "HOST:PORT"), `draft_model` and
/// `strategy_cache` (a file path). On success `*out` is a new model handle.
///
/// # Safety
/// Strings are NULL or NUL-terminated; `out` is NULL or points to writable storage.
#[no_mangle]
pub unsafe extern "C" fn mood_open(
    recipe_toml: *const c_char,
    base_dir: *const c_char,
    options_json: *const c_char,
    out: *mut *mut MoodModel,
) -> MoodStatus {
    guarded(|| {
        if out.is_null() {
            return fail(MOOD_ERR_ARGUMENT, "out is NULL");
        }
        // SAFETY: the caller's promises, as documented.
        let args = unsafe {
            (|| {
                Ok((
                    text(recipe_toml, "recipe_toml")?,
                    optional_text(base_dir, "base_dir")?.unwrap_or("."),
                    optional_text(options_json, "options_json")?,
                ))
            })()
        };
        let (toml, dir, options) = match args {
            Ok(a) => a,
            Err(status) => return status,
        };
        let options = match options.map(Options::from_json).transpose() {
            Ok(o) => o.unwrap_or_default(),
            Err(e) => return fail_with(e),
        };
        let loaded = Recipe::from_toml(toml, dir).and_then(|r| Mood::load(r, options));
        match loaded {
            Ok(mood) => {
                let model = register(MoodModel { mood }, Kind::Model);
                // SAFETY: `out` is not NULL and the caller promises it is writable.
                unsafe { *out = model };
                MOOD_OK
            }
            Err(e) => fail_with(e),
        }
    })
}

/// The number of experts of the model's recipe (the length of a weights array).
///
/// # Safety
/// `model` is NULL or a handle from mood_open; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mood_n_experts(model: *const MoodModel, out: *mut usize) -> MoodStatus {
    guarded(|| {
        if out.is_null() {
            return fail(MOOD_ERR_ARGUMENT, "out is NULL");
        }
        if let Err(status) = check_live(model, Kind::Model, "model") {
            return status;
        }
        // SAFETY: a live model handle points to a MoodModel; `out` is writable.
        unsafe { *out = (*model).mood.recipe().experts.len() };
        MOOD_OK
    })
}

/// Frees a model. Generators made on it stay usable (they hold the models); NULL is ignored.
///
/// # Safety
/// `model` is NULL or a handle from mood_open not used by another thread meanwhile.
#[no_mangle]
pub unsafe extern "C" fn mood_model_free(model: *mut MoodModel) -> MoodStatus {
    // SAFETY: the caller's promise, as documented.
    guarded(|| unsafe { release(model, Kind::Model, "model") })
}

/// Makes a generator on `model`. On success `*out` is a new generator handle.
///
/// # Safety
/// `model` is NULL or a handle from mood_open; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mood_generator_new(
    model: *const MoodModel,
    out: *mut *mut MoodGenerator,
) -> MoodStatus {
    guarded(|| {
        if out.is_null() {
            return fail(MOOD_ERR_ARGUMENT, "out is NULL");
        }
        if let Err(status) = check_live(model, Kind::Model, "model") {
            return status;
        }
        // SAFETY: a live model handle points to a MoodModel.
        let mood = unsafe { (*model).mood.clone() };
        let session = mood.session();
        let generator =
            MoodGenerator { cancel: session.cancel_handle(), session: Mutex::new(session), mood };
        let generator = register(generator, Kind::Generator);
        // SAFETY: `out` is not NULL and writable.
        unsafe { *out = generator };
        MOOD_OK
    })
}

/// Frees a generator; NULL is ignored.
///
/// # Safety
/// `generator` is NULL or a handle from mood_generator_new not used by another thread
/// meanwhile.
#[no_mangle]
pub unsafe extern "C" fn mood_generator_free(generator: *mut MoodGenerator) -> MoodStatus {
    // SAFETY: the caller's promise, as documented.
    guarded(|| unsafe { release(generator, Kind::Generator, "generator") })
}

/// Decodes `prompt` with MOD. `weights` (NULL, or `n_weights` numbers, one per expert)
/// replaces the recipe's weights for this call; `settings_json` (NULL: defaults) may set
/// any setting of a batch line (`max_tokens`, `temperature`, `seed`, `stop`, `divergence`,
/// `top_p`, `grammar`, `json_schema`, …; `weights` there too). `callback` (NULL: none)
/// receives the text as it is decoded. On success, if `text_out` is not NULL, `*text_out`
/// is the whole text, to be freed with mood_string_free.
///
/// # Safety
/// Handles as documented; `prompt`, `settings_json` NULL or NUL-terminated; `weights` NULL
/// or `n_weights` readable doubles; `text_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mood_generate(
    generator: *mut MoodGenerator,
    prompt: *const c_char,
    weights: *const f64,
    n_weights: usize,
    settings_json: *const c_char,
    callback: MoodTokenCallback,
    user_data: *mut c_void,
    text_out: *mut *mut c_char,
) -> MoodStatus {
    guarded(|| {
        if let Err(status) = check_live(generator, Kind::Generator, "generator") {
            return status;
        }
        // SAFETY: a live generator handle points to a MoodGenerator; only shared references
        // are made to it (its session is behind a mutex).
        let generator = unsafe { &*generator };
        // SAFETY: the caller's promises, as documented.
        let args = unsafe {
            (|| Ok((text(prompt, "prompt")?, optional_text(settings_json, "settings_json")?)))()
        };
        let (prompt, settings) = match args {
            Ok(a) => a,
            Err(status) => return status,
        };
        let mut params = match settings.map(|s| generator.mood.params_from_json(s)).transpose() {
            Ok(p) => p.unwrap_or_default(),
            Err(e) => return fail_with(e),
        };
        if !weights.is_null() {
            if n_weights > 1 << 20 {
                return fail(
                    MOOD_ERR_SETTING,
                    format!("weights: {n_weights} values is more than any recipe has"),
                );
            }
            // SAFETY: not NULL, and the caller promises `n_weights` readable doubles.
            let given = unsafe { std::slice::from_raw_parts(weights, n_weights) };
            params = params.weights(given.to_vec());
        } else if n_weights != 0 {
            return fail(MOOD_ERR_ARGUMENT, "weights is NULL but n_weights is not 0");
        }
        let Ok(mut session) = generator.session.lock() else {
            return fail(
                MOOD_ERR_INTERNAL,
                "the generator failed in an earlier call; make a new one",
            );
        };
        let on_chunk = |chunk: &mood_lib::Chunk| {
            let Some(cb) = callback else { return Flow::Continue };
            let c = CString::new(chunk.text.replace('\0', " ")).unwrap_or_default();
            let token = chunk.token.map_or(-1, |t| i32::try_from(t).unwrap_or(-1));
            if cb(c.as_ptr(), chunk.text.len(), token, user_data) == 0 {
                Flow::Continue
            } else {
                Flow::Stop
            }
        };
        match session.generate_streaming(prompt, &params, on_chunk) {
            Ok(generation) => {
                if !text_out.is_null() {
                    let c = CString::new(generation.text.replace('\0', " ")).unwrap_or_default();
                    // SAFETY: not NULL, and the caller promises it is writable.
                    unsafe { *text_out = c.into_raw() };
                }
                MOOD_OK
            }
            Err(e) => fail_with(e),
        }
    })
}

/// Cancels the generation running on `generator` (from any thread), or its next one.
/// mood_generate then returns MOOD_ERR_CANCELLED.
///
/// # Safety
/// `generator` is NULL or a handle from mood_generator_new that is not being freed.
#[no_mangle]
pub unsafe extern "C" fn mood_cancel(generator: *const MoodGenerator) -> MoodStatus {
    guarded(|| {
        if let Err(status) = check_live(generator, Kind::Generator, "generator") {
            return status;
        }
        // SAFETY: live, so it points to a MoodGenerator; the handle is thread-safe.
        unsafe { (*generator).cancel.cancel() };
        MOOD_OK
    })
}

/// Silences llama.cpp's own log lines (model loading, context creation) for the whole
/// process; llama.cpp prints them to standard error unless told otherwise.
#[no_mangle]
pub extern "C" fn mood_silence_llama_log() {
    // A panic cannot cross the boundary; there is nothing to report if one happened.
    let _ = catch_unwind(mood_lib::silence_llama_log);
}

/// Frees a string the library returned; NULL is ignored.
///
/// # Safety
/// `s` is NULL or a string from mood_generate's `text_out`, freed once.
#[no_mangle]
pub unsafe extern "C" fn mood_string_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: it came from CString::into_raw in mood_generate.
        drop(unsafe { CString::from_raw(s) });
    }
}
