//! Verification of the algorithm on platforms other than [`crate::platform::Os`]:
//! simulated processes over heap memory, Shuttle's randomized schedules
//! against a reference ledger, and loom's weak-memory model checking.

pub mod loom_os;
pub mod shuttle_os;

mod loom_tests;
mod props;
mod ring_tests;
mod shuttle_tests;
mod sim_tests;
