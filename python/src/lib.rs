//! `mood._mood`: the extension module under the Python package `mood` (see `mood/__init__.py`,
//! which gives it its Python shape: keyword arguments, dataclasses, iterators, sweeps).
//!
//! Long calls run on a thread of their own without the GIL while the calling thread watches
//! for signals: Ctrl-C in a notebook cancels the generation and raises KeyboardInterrupt.
//! Library errors become the exceptions of `mood` (a `SettingError` carries `.setting`).

use mood_lib::{CancelHandle, Error, Generation, Message, Mood, Options, Params, Recipe};
use numpy::PyArray1;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde_json::{json, Value};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

create_exception!(mood, MoodError, PyException, "The base class of mood's errors.");
create_exception!(
    mood,
    SettingError,
    MoodError,
    "A setting has a value it cannot take (`.setting` names it)."
);
create_exception!(mood, RecipeError, MoodError, "A recipe cannot be read or makes no sense.");
create_exception!(
    mood,
    ModelError,
    MoodError,
    "A model or adapter file is missing, not GGUF, or cannot be loaded (`.path`)."
);
create_exception!(
    mood,
    VocabularyError,
    MoodError,
    "Two policies' vocabularies cannot be combined."
);
create_exception!(
    mood,
    ContextError,
    MoodError,
    "A llama.cpp context cannot be created or is full."
);
create_exception!(mood, RpcError, MoodError, "An RPC server cannot be reached or was lost.");
create_exception!(mood, CancelledError, MoodError, "The generation was cancelled.");
create_exception!(mood, EngineError, MoodError, "llama.cpp or the engine failed.");

/// The Python exception of a library error.
fn to_py(e: Error) -> PyErr {
    let message = e.to_string();
    let (err, attribute) = match &e {
        Error::Setting { setting, .. } => {
            (SettingError::new_err(message), Some(("setting", setting.clone())))
        }
        Error::Recipe { .. } => (RecipeError::new_err(message), None),
        Error::ModelFile { path, .. } => {
            (ModelError::new_err(message), Some(("path", path.display().to_string())))
        }
        Error::Vocabulary { .. } => (VocabularyError::new_err(message), None),
        Error::Context { .. } => (ContextError::new_err(message), None),
        Error::Rpc { server, .. } => (RpcError::new_err(message), Some(("server", server.clone()))),
        Error::Cancelled { .. } => (CancelledError::new_err(message), None),
        Error::Io { .. } => (pyo3::exceptions::PyOSError::new_err(message), None),
        _ => (EngineError::new_err(message), None),
    };
    if let Some((name, value)) = attribute {
        Python::attach(|py| {
            let _ = err.value(py).setattr(name, value);
        });
    }
    err
}

/// A JSON value as Python data.
fn to_python(py: Python<'_>, v: &Value) -> PyResult<Py<PyAny>> {
    Ok(match v {
        Value::Null => py.None(),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any().unbind(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_pyobject(py)?.into_any().unbind(),
            (None, Some(u)) => u.into_pyobject(py)?.into_any().unbind(),
            _ => n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any().unbind(),
        },
        Value::String(s) => s.into_pyobject(py)?.into_any().unbind(),
        Value::Array(a) => {
            let items = a.iter().map(|x| to_python(py, x)).collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any().unbind()
        }
        Value::Object(m) => {
            let d = PyDict::new(py);
            for (k, x) in m {
                d.set_item(k, to_python(py, x)?)?;
            }
            d.into_any().unbind()
        }
    })
}

/// A generation as a JSON object: what `mood generate --json` prints, plus `policies`.
fn generation_json(g: &Generation, recipe: &Recipe) -> Value {
    let mut v = g.json(recipe);
    v["policies"] = json!(g.policies);
    v
}

/// Runs `work` on a thread of its own, without the GIL; meanwhile the calling thread checks
/// for signals, and on one (Ctrl-C) cancels through `cancel`, waits for the work to stop
/// and raises the signal's exception.
fn interruptible<T: Send>(
    py: Python<'_>,
    cancel: &CancelHandle,
    work: impl FnOnce() -> T + Send,
) -> PyResult<T> {
    std::thread::scope(|scope| {
        let handle = scope.spawn(work);
        loop {
            if handle.is_finished() {
                break;
            }
            py.detach(|| std::thread::sleep(Duration::from_millis(20)));
            if let Err(signal) = py.check_signals() {
                cancel.cancel();
                let _ = handle.join();
                return Err(signal);
            }
        }
        handle
            .join()
            .map_err(|_| EngineError::new_err("internal error: a decoding thread panicked"))
    })
}

/// A recipe's models, loaded.
#[pyclass(module = "mood._mood", frozen)]
struct Model {
    mood: Mood,
}

#[pymethods]
impl Model {
    /// Loads the recipe given as TOML text (relative model paths from `base_dir`) with
    /// options as JSON (`threads`, `ctx_size`, `strategy`, `n_gpu_layers`, …).
    #[new]
    #[pyo3(signature = (recipe_toml, base_dir, options_json=None))]
    fn new(
        py: Python<'_>,
        recipe_toml: &str,
        base_dir: &str,
        options_json: Option<&str>,
    ) -> PyResult<Self> {
        let options = options_json.map(Options::from_json).transpose().map_err(to_py)?;
        let recipe = Recipe::from_toml(recipe_toml, base_dir).map_err(to_py)?;
        let mood = py.detach(|| Mood::load(recipe, options.unwrap_or_default())).map_err(to_py)?;
        Ok(Self { mood })
    }

    /// The policies' names, the reference first.
    fn policies(&self) -> Vec<String> {
        self.mood.policy_names().into_iter().map(str::to_string).collect()
    }

    /// The experts' names, in the order of a weights list.
    fn experts(&self) -> Vec<String> {
        self.mood.recipe().experts.iter().map(|e| e.name.clone()).collect()
    }

    /// The recipe's weights and divergence.
    fn weights(&self) -> Vec<f64> {
        self.mood.recipe().weights.clone()
    }

    fn divergence(&self) -> String {
        self.mood.recipe().divergence.name()
    }

    fn session(&self) -> Session {
        let inner = self.mood.session();
        Session {
            cancel: inner.cancel_handle(),
            mood: self.mood.clone(),
            inner: Mutex::new(Some(inner)),
        }
    }
}

/// Contexts on a model and the decoding loop. One call at a time: a call while another
/// thread's call runs raises MoodError (`cancel` works from any thread at any time).
#[pyclass(module = "mood._mood", frozen)]
struct Session {
    mood: Mood,
    cancel: CancelHandle,
    /// `None` once closed.
    inner: Mutex<Option<mood_lib::Session>>,
}

/// The session of a call, held for the call's length.
struct Held<'a>(MutexGuard<'a, Option<mood_lib::Session>>);

impl Held<'_> {
    fn get(&mut self) -> PyResult<&mut mood_lib::Session> {
        self.0.as_mut().ok_or_else(|| MoodError::new_err("the session is closed"))
    }
}

impl Session {
    /// Takes the session for a call. Never waits: waiting for another thread's call while
    /// holding the GIL could stop that call from ever taking the GIL back.
    fn hold(&self) -> PyResult<Held<'_>> {
        match self.inner.try_lock() {
            Ok(guard) => Ok(Held(guard)),
            Err(TryLockError::WouldBlock) => Err(MoodError::new_err(
                "the session is in use by another thread's call; use a session per thread",
            )),
            Err(TryLockError::Poisoned(_)) => {
                Err(MoodError::new_err("the session failed in an earlier call; open another"))
            }
        }
    }

    fn params(&self, settings_json: &str) -> PyResult<Params> {
        self.mood.params_from_json(settings_json).map_err(to_py)
    }

    /// The recipe a request with these params decodes with (for the JSON of its result).
    fn recipe_of(&self, params: &Params) -> Recipe {
        let mut recipe = self.mood.recipe().clone();
        if let Some(w) = &params.weights {
            recipe.weights = w.clone();
        }
        if let Some(d) = params.divergence {
            recipe.divergence = d;
        }
        recipe
    }
}

#[pymethods]
impl Session {
    /// One generation; `settings_json` holds the settings of a batch line.
    fn generate(&self, py: Python<'_>, prompt: &str, settings_json: &str) -> PyResult<Py<PyAny>> {
        let params = self.params(settings_json)?;
        let recipe = self.recipe_of(&params);
        let cancel = self.cancel.clone();
        let mut held = self.hold()?;
        let session = held.get()?;
        let g = interruptible(py, &cancel, || session.generate(prompt, &params))?.map_err(to_py)?;
        to_python(py, &generation_json(&g, &recipe))
    }

    /// Begins a generation to be read with `next_chunk` and finished with `end`.
    fn begin(&self, py: Python<'_>, prompt: &str, settings_json: &str) -> PyResult<()> {
        let params = self.params(settings_json)?;
        let mut held = self.hold()?;
        let session = held.get()?;
        py.detach(|| session.begin(prompt, &params)).map_err(to_py)
    }

    /// The next (text, token) of the generation begun; None at its end. Token -1: text held
    /// back until the end.
    fn next_chunk(&self, py: Python<'_>) -> PyResult<Option<(String, i64)>> {
        let mut held = self.hold()?;
        let session = held.get()?;
        let chunk = py.detach(|| session.next_chunk());
        if let Err(signal) = py.check_signals() {
            py.detach(|| session.stop());
            return Err(signal);
        }
        Ok(chunk.map(|c| (c.text, c.token.map_or(-1, i64::from))))
    }

    /// Finishes the generation begun and returns it.
    fn end(&self, py: Python<'_>, settings_json: &str) -> PyResult<Py<PyAny>> {
        let params = self.params(settings_json)?;
        let recipe = self.recipe_of(&params);
        let cancel = self.cancel.clone();
        let mut held = self.hold()?;
        let session = held.get()?;
        let g = interruptible(py, &cancel, || session.end())?.map_err(to_py)?;
        to_python(py, &generation_json(&g, &recipe))
    }

    /// Prompts side by side on up to `lanes` lanes; each result a dict or an exception.
    fn generate_many(
        &self,
        py: Python<'_>,
        prompts: Vec<String>,
        settings_json: &str,
        lanes: usize,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let params = self.params(settings_json)?;
        let recipe = self.recipe_of(&params);
        let cancel = self.cancel.clone();
        let mut held = self.hold()?;
        let session = held.get()?;
        let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let results = interruptible(py, &cancel, || session.generate_many(&refs, &params, lanes))?;
        results
            .into_iter()
            .map(|r| match r {
                Ok(g) => to_python(py, &generation_json(&g, &recipe)),
                Err(e) => Ok(to_py(e).into_value(py).into_any()),
            })
            .collect()
    }

    /// A reply to `messages_json` (a list of {"role", "content"}).
    fn chat(
        &self,
        py: Python<'_>,
        messages_json: &str,
        settings_json: &str,
    ) -> PyResult<Py<PyAny>> {
        let params = self.params(settings_json)?;
        let recipe = self.recipe_of(&params);
        let messages: Vec<Message> = serde_json::from_str(messages_json)
            .map_err(|e| SettingError::new_err(format!("messages: {e}")))?;
        let cancel = self.cancel.clone();
        let mut held = self.hold()?;
        let session = held.get()?;
        let g = interruptible(py, &cancel, || session.chat(&messages, &params))?.map_err(to_py)?;
        to_python(py, &generation_json(&g, &recipe))
    }

    /// Each policy's log-likelihood of `response` after `prompt` and each expert's reward.
    fn score(
        &self,
        py: Python<'_>,
        prompt: &str,
        response: &str,
        beta: f64,
    ) -> PyResult<Py<PyAny>> {
        let cancel = self.cancel.clone();
        let mut held = self.hold()?;
        let session = held.get()?;
        let scores =
            interruptible(py, &cancel, || session.score(prompt, response, beta))?.map_err(to_py)?;
        let v = serde_json::to_value(&scores).map_err(|e| EngineError::new_err(e.to_string()))?;
        to_python(py, &v)
    }

    /// Step-by-step decoding in the caller's hands.
    fn steps(&self, py: Python<'_>, prompt: &str, max_tokens: usize) -> PyResult<Steps> {
        let mut held = self.hold()?;
        let session = held.get()?;
        let steps = py.detach(|| session.steps(prompt, max_tokens)).map_err(to_py)?;
        Ok(Steps { inner: Mutex::new(steps) })
    }

    /// Cancels the generation begun with `begin` and frees its lane.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let mut held = self.hold()?;
        let session = held.get()?;
        py.detach(|| session.stop());
        Ok(())
    }

    /// Cancels the running generation (from any thread).
    fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Frees the contexts; the session cannot be used afterwards.
    fn close(&self) -> PyResult<()> {
        *self.hold()?.0 = None;
        Ok(())
    }
}

/// Step-by-step decoding: each policy's next-token log-probabilities, the caller's token.
#[pyclass(module = "mood._mood", frozen)]
struct Steps {
    inner: Mutex<mood_lib::Steps>,
}

impl Steps {
    fn held(&self) -> PyResult<MutexGuard<'_, mood_lib::Steps>> {
        self.inner
            .try_lock()
            .map_err(|_| MoodError::new_err("the steps are in use by another thread's call"))
    }
}

#[pymethods]
impl Steps {
    fn policies(&self) -> PyResult<Vec<String>> {
        Ok(self.held()?.policies().into_iter().map(str::to_string).collect())
    }

    /// Each policy's log-probabilities over the shared vocabulary (float32 arrays, fresh at
    /// every step: they stay valid after `choose`).
    fn logprobs<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyArray1<f32>>>> {
        Ok(self.held()?.logprobs().iter().map(|lp| PyArray1::from_slice(py, lp)).collect())
    }

    /// Feeds `token` to every policy; returns whether decoding goes on.
    fn choose(&self, py: Python<'_>, token: i64) -> PyResult<bool> {
        let token = u32::try_from(token).map_err(|_| {
            let e = SettingError::new_err(format!("token must be a token id, got {token}"));
            let _ = e.value(py).setattr("setting", "token");
            e
        })?;
        let mut inner = self.held()?;
        let steps = &mut *inner;
        py.detach(|| steps.choose(token)).map_err(to_py)
    }

    fn done(&self) -> PyResult<bool> {
        Ok(self.held()?.is_done())
    }

    fn text(&self) -> PyResult<String> {
        Ok(self.held()?.text())
    }

    fn tokens(&self) -> PyResult<Vec<u32>> {
        Ok(self.held()?.tokens().to_vec())
    }

    fn finish_reason(&self) -> PyResult<Option<String>> {
        let reason = self.held()?.finish_reason();
        Ok(reason
            .and_then(|r| serde_json::to_value(r).ok())
            .and_then(|v| v.as_str().map(str::to_string)))
    }
}

/// Silences llama.cpp's own log lines for the process.
#[pyfunction]
fn silence_llama_log() {
    mood_lib::silence_llama_log();
}

#[pymodule]
fn _mood(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Model>()?;
    m.add_class::<Session>()?;
    m.add_class::<Steps>()?;
    m.add_function(wrap_pyfunction!(silence_llama_log, m)?)?;
    m.add("MoodError", py.get_type::<MoodError>())?;
    m.add("SettingError", py.get_type::<SettingError>())?;
    m.add("RecipeError", py.get_type::<RecipeError>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("VocabularyError", py.get_type::<VocabularyError>())?;
    m.add("ContextError", py.get_type::<ContextError>())?;
    m.add("RpcError", py.get_type::<RpcError>())?;
    m.add("CancelledError", py.get_type::<CancelledError>())?;
    m.add("EngineError", py.get_type::<EngineError>())?;
    Ok(())
}
