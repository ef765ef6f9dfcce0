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
type AddServerFn = unsafe extern "C" fn(*const c_char) -> llama_cpp_sys_2::ggml_backend_reg_t;
/// `ggml_backend_rpc_get_failure`: why a connection failed, or false while it is healthy.
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

// SAFETY: the device handles are created once per endpoint by ggml's RPC backend and never
// freed (they live as long as the process); ggml-rpc guards its shared state (connections,
// the failure table) with mutexes, so the handles may be used from any thread.
unsafe impl Send for RpcServer {}
// SAFETY: as for `Send`: nothing in `RpcServer` is mutated after it is made.
unsafe impl Sync for RpcServer {}

/// The RPC backend's registry, or `None` when llama.cpp was built without it.
fn rpc_registry() -> Option<llama_cpp_sys_2::ggml_backend_reg_t> {
    // SAFETY: the name is a NUL-terminated string; ggml returns null for an unknown backend.
    let reg = unsafe { llama_cpp_sys_2::ggml_backend_reg_by_name(c"RPC".as_ptr()) };
    (!reg.is_null()).then_some(reg)
}

/// A function the RPC backend hands out by name, or `None`.
fn rpc_function(
    reg: llama_cpp_sys_2::ggml_backend_reg_t,
    name: &CStr,
) -> Option<*mut std::ffi::c_void> {
    // SAFETY: `reg` is the RPC backend's registry, `name` a NUL-terminated string; ggml
    // returns null for a name it does not know.
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
    // SAFETY: ggml returns NUL-terminated strings that live as long as their device.
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
        // SAFETY: ggml-rpc hands out `ggml_backend_rpc_add_server` under this name, with the
        // signature of `AddServerFn` (ggml-rpc.h).
        let add = unsafe { std::mem::transmute::<*mut std::ffi::c_void, AddServerFn>(add) };
        let get_failure = rpc_function(reg, c"ggml_backend_rpc_get_failure").map(|f| {
            // SAFETY: as above, `ggml_backend_rpc_get_failure` has the signature of
            // `GetFailureFn`.
            unsafe { std::mem::transmute::<*mut std::ffi::c_void, GetFailureFn>(f) }
        });
        // SAFETY: `endpoint` is NUL-terminated and outlives the call; a connection failure
        // returns null (the patched backend does not abort).
        let server_reg = unsafe { add(endpoint.as_ptr()) };
        let mut server = Self { endpoint, devices: Vec::new(), get_failure };
        if server_reg.is_null() {
            let why = server.failure().unwrap_or_else(|| "the server has no devices".into());
            return Err(RpcError::Unreachable(why));
        }
        // SAFETY: `server_reg` is a registry ggml-rpc made for this endpoint and never frees.
        let count = unsafe { llama_cpp_sys_2::ggml_backend_reg_dev_count(server_reg) };
        for i in 0..count {
            // SAFETY: `i` is below the registry's device count.
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
                // SAFETY: a zeroed `ggml_backend_dev_props` is valid (null strings, zero
                // sizes); `dev` is a live device handle, which ggml fills it from.
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
        // SAFETY: `endpoint` is NUL-terminated; the function writes at most `buf.len()` bytes,
        // NUL-terminated, into `buf`.
        let failed = unsafe { get(self.endpoint.as_ptr(), buf.as_mut_ptr(), buf.len()) };
        failed.then(|| text(buf.as_ptr()))
    }
}
