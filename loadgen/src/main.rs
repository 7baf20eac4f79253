//! The conduit load generator (see README for status).
fn main() {}
