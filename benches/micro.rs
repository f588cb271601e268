//! Micro-benchmarks (criterion).

fn main() {}
