//! Benchmarks that span the layers, as `main` does: they fill a data directory through the
//! engine in-process, then run a server on it and measure it over HTTP. (The benchmarks that
//! only talk HTTP live with the other clients, in `client`; `services` talks HTTP too, but
//! runs a worker's taskcluster-proxy in-process.)

pub mod retain;
pub mod services;
