//! `conduit-loadgen`: see the crate documentation of `conduit_loadgen`, or `--help`.
fn main() {
    std::process::exit(conduit_loadgen::cli::main());
}
