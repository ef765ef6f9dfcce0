//! llama.cpp's RPC backend: a model's layers held and computed by `rpc-server` processes on
//! other hosts.
//!
//! Servers are reached through ggml's backend registry (the `RPC` backend and the functions it
//! hands out by name), as llama.cpp's own tools do, so this works whether the backend is linked
//! in or loaded as a module. The devices of a server are not added to the registry: a model
//! uses them only when its parameters name them ([`LlamaModelParams::with_rpc_servers`]), and
//! models loaded without them stay local.
//!
//! A connection that cannot be made, or that is lost, is an error and not an abort: commands
//! on it complete at once with zeroed outputs and graph computations fail, and
//! [`RpcServer::failure`] says why.
//!
//! [`LlamaModelParams::with_rpc_servers`]: crate::model::params::LlamaModelParams::with_rpc_servers

use std::ffi::{c_char, CStr, CString};

/// `ggml_backend_rpc_add_server`: connects to an endpoint, returns its registry (null when it
/// cannot be reached).
// SAFETY: this is the C signature ggml-rpc.h declares inside `extern "C"`:
// `ggml_backend_reg_t ggml_backend_rpc_add_server(const char * endpoint)`; `const char *` is
// `*const c_char` and `ggml_backend_reg_t` the bindings' pointer type, so calls through a
// pointer to that function use its real ABI. It is only made from the address ggml-rpc's
// `get_proc_address` returns for exactly that name (`RpcServer::connect`).
type AddServerFn = unsafe extern "C" fn(*const c_char) -> llama_cpp_sys_2::ggml_backend_reg_t;
/// `ggml_backend_rpc_get_failure`: why a connection failed, or false while it is healthy.
// SAFETY: as for `AddServerFn`, the signature ggml-rpc.h declares (added by our patch to
// llama-cpp-sys-2): `bool ggml_backend_rpc_get_failure(const char * endpoint, char * msg,
// size_t size)`, with C's `bool` as Rust's `bool` and `size_t` as `usize`; it is only made from
// the address `get_proc_address` returns for exactly that name.
type GetFailureFn = unsafe extern "C" fn(*const c_char, *mut c_char, usize) -> bool;

/// Why an RPC server cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// llama.cpp was built without its RPC backend.
    #[error("this build of llama.cpp has no RPC backend")]
    NotAvailable,
    /// The endpoint holds a NUL byte.
    #[error("the address contains a NUL byte")]
    InvalidEndpoint,
    /// The server could not be reached (the reason llama.cpp gives).
    #[error("{0}")]
    Unreachable(String),
}

/// A device of an RPC server, as it reports itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcDevice {
    /// llama.cpp's name for it (`RPC0`, `RPC1`, …).
    pub name: String,
    /// Its description (the server's address).
    pub description: String,
    /// Free memory, in bytes.
    pub memory_free: usize,
    /// Total memory, in bytes.
    pub memory_total: usize,
}

/// A reachable RPC server and its devices.
#[derive(Debug)]
pub struct RpcServer {
    endpoint: CString,
    pub(crate) devices: Vec<llama_cpp_sys_2::ggml_backend_dev_t>,
    get_failure: Option<GetFailureFn>,
}

// SAFETY: `endpoint` (`CString`) and `get_failure` (a plain `fn` pointer) are Send and Sync;
// only the raw `ggml_backend_dev_t`s are not. Those are heap objects that
// `ggml_backend_rpc_add_server` allocates once per endpoint and keeps in its static `reg_map`
// for the life of the process, never freeing them, so they stay valid on any thread. Through
// them `RpcServer` only calls `ggml_backend_dev_get_props`, which reads the device's immutable
// name and description strings and asks the server for its memory through `get_dispatcher`
// (its map behind a mutex) and the dispatcher's message queue (behind a mutex, served by one
// worker thread); `ggml_backend_rpc_get_failure` locks `rpc_failures_mutex`. Nothing of that
// is tied to the thread that connected.
unsafe impl Send for RpcServer {}
// SAFETY: as for `Send`: `RpcServer` has no interior mutability and nothing in it is mutated
// after `connect` returns; its `&self` methods make only the thread-safe calls above, so
// several threads may share it.
unsafe impl Sync for RpcServer {}

/// The RPC backend's registry, or `None` when llama.cpp was built without it.
fn rpc_registry() -> Option<llama_cpp_sys_2::ggml_backend_reg_t> {
    // SAFETY: `c"RPC"` is a NUL-terminated static string; `ggml_backend_reg_by_name` only
    // compares it with the registered backends' names and returns null when none matches.
    let reg = unsafe { llama_cpp_sys_2::ggml_backend_reg_by_name(c"RPC".as_ptr()) };
    (!reg.is_null()).then_some(reg)
}

/// A function the RPC backend hands out by name, or `None`.
fn rpc_function(
    reg: llama_cpp_sys_2::ggml_backend_reg_t,
    name: &CStr,
) -> Option<*mut std::ffi::c_void> {
    // SAFETY: `reg` is non-null: both callers pass what `rpc_registry` returned, the
    // registered RPC registry (a static in ggml-rpc). `name` is a `&CStr`, so NUL-terminated
    // and alive for the call; ggml-rpc's `get_proc_address` only `strcmp`s it and returns
    // null for a name it does not know.
    let f = unsafe { llama_cpp_sys_2::ggml_backend_reg_get_proc_address(reg, name.as_ptr()) };
    (!f.is_null()).then_some(f)
}

/// Whether this build of llama.cpp has its RPC backend.
#[must_use]
pub fn rpc_available() -> bool {
    rpc_registry().is_some()
}

fn text(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: `ptr` is non-null (checked above), and every caller (this private function has
    // two) passes a NUL-terminated string valid for this call: the `name`/`description` of an
    // RPC device's props, which point into `std::string`s of its device context that ggml-rpc
    // never frees, or the buffer of `RpcServer::failure`, which is zero-initialized and written
    // by `snprintf` within its length. The text is copied into an owned `String` here.
    unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned()
}

impl RpcServer {
    /// Connects to the server at `endpoint` (`HOST:PORT`) and lists its devices. A server
    /// already connected to is not connected to again.
    ///
    /// # Errors
    ///
    /// When llama.cpp has no RPC backend, the endpoint holds a NUL byte, or the server cannot
    /// be reached (no answer, refused, another protocol version: the reason is in the error).
    pub fn connect(endpoint: &str) -> Result<Self, RpcError> {
        let reg = rpc_registry().ok_or(RpcError::NotAvailable)?;
        let endpoint = CString::new(endpoint).map_err(|_| RpcError::InvalidEndpoint)?;
        let add = rpc_function(reg, c"ggml_backend_rpc_add_server").ok_or(RpcError::NotAvailable)?;
        // SAFETY: `add` is the non-null address `ggml_backend_reg_get_proc_address` returned
        // for exactly the name "ggml_backend_rpc_add_server": ggml-rpc's `get_proc_address`
        // returns `(void *)ggml_backend_rpc_add_server` for it, a function whose ggml-rpc.h
        // signature is `AddServerFn`'s. A data pointer and a function pointer have the same
        // size on the platforms llama.cpp supports (which `transmute` checks at compile time).
        let add = unsafe { std::mem::transmute::<*mut std::ffi::c_void, AddServerFn>(add) };
        let get_failure = rpc_function(reg, c"ggml_backend_rpc_get_failure").map(|f| {
            // SAFETY: as above: `f` is the non-null address returned for exactly the name
            // "ggml_backend_rpc_get_failure", i.e. `(void *)ggml_backend_rpc_get_failure`,
            // whose ggml-rpc.h signature is `GetFailureFn`'s (a backend without our patch
            // returns null for the name, and `get_failure` stays `None`).
            unsafe { std::mem::transmute::<*mut std::ffi::c_void, GetFailureFn>(f) }
        });
        // SAFETY: `add` really is `ggml_backend_rpc_add_server` with this signature (above).
        // `endpoint` is a `CString`, so NUL-terminated, and lives until after the call; the
        // function copies it into `std::string`s and keeps no pointer to it. It serializes
        // callers with its own static mutex, and returns null when the server reports no
        // devices, which is also what a connection failure gives with our patch (commands on a
        // failed connection complete with zeroed outputs instead of aborting).
        let server_reg = unsafe { add(endpoint.as_ptr()) };
        let mut server = Self { endpoint, devices: Vec::new(), get_failure };
        if server_reg.is_null() {
            let why = server.failure().unwrap_or_else(|| "the server has no devices".into());
            return Err(RpcError::Unreachable(why));
        }
        // SAFETY: `server_reg` is non-null (checked above): a `ggml_backend_reg` that
        // `ggml_backend_rpc_add_server` allocated for this endpoint and keeps in its static
        // `reg_map` without ever freeing it; its `get_device_count` returns its device list's
        // length.
        let count = unsafe { llama_cpp_sys_2::ggml_backend_reg_dev_count(server_reg) };
        for i in 0..count {
            // SAFETY: `server_reg` is that live registry, and `i < count` (its device count),
            // the bound ggml-rpc's `get_device` asserts; the device list never changes after
            // the registry is made.
            let dev = unsafe { llama_cpp_sys_2::ggml_backend_reg_dev_get(server_reg, i) };
            if !dev.is_null() {
                server.devices.push(dev);
            }
        }
        if server.devices.is_empty() {
            return Err(RpcError::Unreachable("the server has no devices".into()));
        }
        Ok(server)
    }

    /// The address, as given to [`RpcServer::connect`].
    #[must_use]
    pub fn endpoint(&self) -> &str {
        self.endpoint.to_str().unwrap_or_default()
    }

    /// The server's devices with their memory, asked of the server now (zeros when it cannot
    /// answer).
    #[must_use]
    pub fn devices(&self) -> Vec<RpcDevice> {
        self.devices
            .iter()
            .map(|&dev| {
                // SAFETY: all-zero bytes are a valid `ggml_backend_dev_props` (null string
                // pointers, zero sizes, device type 0 = `GGML_BACKEND_DEVICE_TYPE_CPU` as a
                // `c_uint`, `false` capabilities). `dev` is a non-null device handle from
                // `connect`, allocated by ggml-rpc and never freed (see `impl Send`);
                // `ggml_backend_dev_get_props` memsets `*props` and has the RPC device fill it
                // through the `&raw mut` pointer, which is valid for writes of one such struct
                // (a failed connection just leaves the memory sizes 0).
                let props = unsafe {
                    let mut props = std::mem::zeroed();
                    llama_cpp_sys_2::ggml_backend_dev_get_props(dev, &raw mut props);
                    props
                };
                RpcDevice {
                    name: text(props.name),
                    description: text(props.description),
                    memory_free: props.memory_free,
                    memory_total: props.memory_total,
                }
            })
            .collect()
    }

    /// Why the connection to this server failed (it could not be made, or it was lost), or
    /// `None` while it is healthy.
    #[must_use]
    pub fn failure(&self) -> Option<String> {
        let get = self.get_failure?;
        let mut buf = [0 as c_char; 512];
        // SAFETY: `get` is `ggml_backend_rpc_get_failure` with the signature of `GetFailureFn`
        // (see `connect`). `endpoint` is a `CString`, NUL-terminated and alive for the call;
        // the function looks it up under `rpc_failures_mutex` and keeps no pointer to it.
        // `buf` is a live local array, and the function writes into it only with
        // `snprintf(msg, size, ...)`, `size` being `buf.len()`: at most that many bytes,
        // NUL included.
        let failed = unsafe { get(self.endpoint.as_ptr(), buf.as_mut_ptr(), buf.len()) };
        failed.then(|| text(buf.as_ptr()))
    }
}
