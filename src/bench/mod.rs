//! Benchmarks that span the layers, as `main` does: they fill a data directory through the
//! engine in-process, then run a server on it and measure it over HTTP. (The benchmarks that
//! only talk HTTP live with the other clients, in `client`.)

pub mod retain;
