//! Intra-node transport benchmarks (placeholder).
fn main() {}
