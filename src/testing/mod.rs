//! Test support, compiled for the crate's own tests and, with the
//! `testing` feature, for the fuzz targets: simulated processes over heap
//! memory, and a reference model of the pool that operation sequences are
//! checked against.

pub mod model;
pub mod sim;
