//! regcache-bench (skeleton; the replay lands with the cache).
fn main() {}
