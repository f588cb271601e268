//! Side-by-side multi-process benchmark against the mutex design.

fn main() {}
