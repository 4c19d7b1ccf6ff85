//! `turnpike-sim`: run a scenario, or sweep many seeds over many scenarios.

fn main() {
    // The arguments as the OS gave them: `std::env::args()` panics on one that is not
    // UTF-8, and a path need not be.
    std::process::exit(turnpike_sim::cli::main(
        std::env::args_os().skip(1).collect(),
    ));
}
