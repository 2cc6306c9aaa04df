//! Mirror benchmark (written below).
fn main() {}
