//! Verification of the algorithm on platforms other than [`crate::platform::Os`]:
//! simulated processes over heap memory, Shuttle's randomized schedules
//! against a reference model, and loom's weak-memory model checking.

pub mod sim;

mod sim_tests;
