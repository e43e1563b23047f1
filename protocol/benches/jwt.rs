//! JWT validation time (filled in by the auth work).
fn main() {}
