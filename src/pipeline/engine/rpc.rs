//! Policies on other hosts: llama.cpp's RPC backend, where `rpc-server` processes hold a
//! model's layers and compute them while the engine drives the graph (a build with the `rpc`
//! feature).
//!
//! This module owns the server addresses (`HOST:PORT`, checked, and whether they are on a
//! loopback or private network: the protocol has no authentication), the connections (one per
//! server, made before any model loads, so that an unreachable server is a one-line error
//! naming it), what `mood info` reports of a server, and the [`ServerLost`] error of a server
//! that goes away: the requests that need it fail with it, the others go on.

use crate::error::invalid;
use anyhow::Result;
use serde::Serialize;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Arc;

/// Whether this build has llama.cpp's RPC backend (the `rpc` feature).
pub const AVAILABLE: bool = cfg!(feature = "rpc");

/// A server address, `HOST:PORT` (an IPv4 address or a host name; llama.cpp's RPC transport
/// speaks IPv4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl std::str::FromStr for Endpoint {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let shown = s.escape_debug();
        let fix = "give HOST:PORT, e.g. 192.168.1.20:50052";
        if s.starts_with('[') || s.matches(':').count() > 1 {
            return Err(invalid(
                "rpc",
                format!(
                    "'{shown}' is an IPv6 address; llama.cpp's RPC servers listen on IPv4: {fix}"
                ),
            ));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| invalid("rpc", format!("'{shown}' has no port: {fix}")))?;
        let bad_host = host.is_empty()
            || host.len() > 253
            || !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if bad_host {
            return Err(invalid("rpc", format!("'{shown}' has no valid host name: {fix}")));
        }
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(invalid(
                    "rpc",
                    format!("'{shown}' has no valid port (1 to 65535): {fix}"),
                ))
            }
        };
        Ok(Self { host: host.to_string(), port })
    }
}

/// Whether `ip` is on this machine or a private network: loopback, RFC 1918, link-local,
/// carrier-grade NAT (RFC 6598, as Tailscale uses), or IPv6 unique-local.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Why sending tensors to this address exposes them, or `None` when every address it names
/// is loopback or private. A name that does not resolve here is left to the connection,
/// which reports it.
pub fn exposure_warning(endpoint: &Endpoint) -> Option<String> {
    let addrs: Vec<IpAddr> =
        (endpoint.host.as_str(), endpoint.port).to_socket_addrs().ok()?.map(|a| a.ip()).collect();
    let public: Vec<String> =
        addrs.iter().filter(|ip| !is_private(**ip)).map(ToString::to_string).collect();
    if public.is_empty() {
        return None;
    }
    Some(format!(
        "RPC server {endpoint} is not on a loopback or private address ({}): the RPC protocol \
         has no authentication or encryption, so anyone who reaches that port can use the \
         server and read what it computes; bind servers to a private interface or reach them \
         through a tunnel (ssh -L, WireGuard)",
        public.join(", ")
    ))
}

/// The endpoints `lists` name, each once, in order of appearance.
pub fn distinct<'a>(lists: impl IntoIterator<Item = &'a [Endpoint]>) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = Vec::new();
    for list in lists {
        for e in list {
            if !out.contains(e) {
                out.push(e.clone());
            }
        }
    }
    out
}

/// Parses a list of `HOST:PORT` addresses; an address twice is refused (llama.cpp would
/// split the model over the same server twice).
pub fn parse_list(items: &[String]) -> Result<Vec<Endpoint>> {
    let mut out: Vec<Endpoint> = Vec::with_capacity(items.len());
    for item in items {
        let e: Endpoint = item.trim().parse()?;
        if out.contains(&e) {
            return Err(invalid("rpc", format!("names {e} twice; name each server once")));
        }
        out.push(e);
    }
    Ok(out)
}

pub use crate::error::ServerLost;

/// What `mood info` reports of a server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    pub endpoint: String,
    pub reachable: bool,
    /// Why it could not be reached.
    pub error: Option<String>,
    /// Why its address is exposed (see [`exposure_warning`]).
    pub warning: Option<String>,
    pub devices: Vec<ServerDevice>,
}

/// A device of a server, with its memory.
#[derive(Debug, Clone, Serialize)]
pub struct ServerDevice {
    pub name: String,
    pub description: String,
    pub memory_total_mb: u64,
    pub memory_free_mb: u64,
}

/// The refusal of a build without the `rpc` feature.
fn not_built() -> anyhow::Error {
    invalid(
        "rpc",
        "names RPC servers, but this build of mood has no RPC backend; rebuild it with \
         cargo build --release --features rpc, or drop the setting to run every policy on this \
         machine",
    )
}

/// A connected server.
pub struct Server {
    endpoint: Endpoint,
    #[cfg(feature = "rpc")]
    inner: llama_cpp_2::rpc::RpcServer,
}

impl Server {
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Why the connection failed or was lost, or `None` while it is healthy. Cheap: asks
    /// llama.cpp's table of failed connections, not the server.
    pub fn failure(&self) -> Option<String> {
        #[cfg(feature = "rpc")]
        return self.inner.failure();
        #[cfg(not(feature = "rpc"))]
        None
    }

    /// The server's devices and their memory, asked of the server now.
    pub fn devices(&self) -> Vec<ServerDevice> {
        #[cfg(feature = "rpc")]
        return self
            .inner
            .devices()
            .into_iter()
            .map(|d| ServerDevice {
                name: d.name,
                description: d.description,
                memory_total_mb: (d.memory_total >> 20) as u64,
                memory_free_mb: (d.memory_free >> 20) as u64,
            })
            .collect();
        #[cfg(not(feature = "rpc"))]
        Vec::new()
    }

    #[cfg(feature = "rpc")]
    pub(super) fn inner(&self) -> &llama_cpp_2::rpc::RpcServer {
        &self.inner
    }
}

/// Connects to `endpoint` (after the llama.cpp backend is up). `user` names what needs the
/// server in the error ("policy 'poet'").
pub fn connect(endpoint: &Endpoint, user: &str) -> Result<Arc<Server>> {
    #[cfg(feature = "rpc")]
    {
        super::backend()?;
        let inner = llama_cpp_2::rpc::RpcServer::connect(&endpoint.to_string()).map_err(|e| {
            crate::error::tagged(
                crate::error::Tag::Rpc(endpoint.to_string()),
                format!(
                    "cannot reach RPC server {endpoint} ({user}): {e}; start rpc-server there \
                     (models/build-rpc-server.sh builds it) or correct the address"
                ),
            )
        })?;
        Ok(Arc::new(Server { endpoint: endpoint.clone(), inner }))
    }
    #[cfg(not(feature = "rpc"))]
    {
        let _ = (endpoint, user);
        Err(not_built())
    }
}

/// Refuses RPC servers in a build without the `rpc` feature.
pub fn check_built(any: bool) -> Result<()> {
    if any && !AVAILABLE {
        return Err(not_built());
    }
    Ok(())
}

/// What `mood info` says of each server: reachable or why not, its devices and memory.
pub fn probe(endpoints: &[Endpoint]) -> Result<Vec<ServerInfo>> {
    check_built(!endpoints.is_empty())?;
    Ok(endpoints
        .iter()
        .map(|e| {
            let warning = exposure_warning(e);
            match connect(e, "mood info") {
                Ok(server) => ServerInfo {
                    endpoint: e.to_string(),
                    reachable: true,
                    error: None,
                    warning,
                    devices: server.devices(),
                },
                Err(err) => ServerInfo {
                    endpoint: e.to_string(),
                    reachable: false,
                    error: Some(format!("{err:#}")),
                    warning,
                    devices: Vec::new(),
                },
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        let e: Endpoint = "127.0.0.1:50052".parse().unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 50052));
        assert_eq!(e.to_string(), "127.0.0.1:50052");
        assert_eq!("gpu-box.lan:1".parse::<Endpoint>().unwrap().host, "gpu-box.lan");
        for (bad, why) in [
            ("127.0.0.1", "no port"),
            ("127.0.0.1:0", "valid port"),
            ("127.0.0.1:70000", "valid port"),
            (":50052", "host"),
            ("a b:1", "host"),
            ("[::1]:50052", "IPv6"),
            ("::1", "IPv6"),
        ] {
            let e = bad.parse::<Endpoint>().unwrap_err().to_string();
            assert!(e.contains(why) && e.starts_with("rpc "), "{bad}: {e}");
        }
        let twice = parse_list(&["h:1".into(), " h:1".into()]).unwrap_err().to_string();
        assert!(twice.contains("twice"), "{twice}");
        let lists = [
            parse_list(&["a:1".into(), "b:2".into()]).unwrap(),
            parse_list(&["b:2".into()]).unwrap(),
        ];
        let all = distinct(lists.iter().map(Vec::as_slice));
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn public_addresses_are_told_apart() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.9",
            "192.168.88.10",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2001:db8::1", "203.0.113.5"] {
            assert!(!is_private(public.parse().unwrap()), "{public}");
        }
        let local: Endpoint = "127.0.0.1:50052".parse().unwrap();
        assert_eq!(exposure_warning(&local), None);
        let exposed: Endpoint = "203.0.113.5:50052".parse().unwrap();
        let w = exposure_warning(&exposed).unwrap();
        assert!(w.contains("203.0.113.5:50052") && w.contains("no authentication"), "{w}");
    }

    #[cfg(not(feature = "rpc"))]
    #[test]
    fn a_build_without_the_backend_refuses_servers() {
        let e = check_built(true).unwrap_err().to_string();
        assert!(e.contains("--features rpc"), "{e}");
        check_built(false).unwrap();
    }
}
