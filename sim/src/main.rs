//! `turnpike-sim`: run a scenario, or sweep many seeds over many scenarios.

fn main() {
    std::process::exit(turnpike_sim::cli::main(std::env::args().skip(1).collect()));
}
