//! `turnpike-sim`: run a scenario, or sweep many seeds over many scenarios.

fn main() {
    // Not `std::env::args()`, which panics on an argument that is not UTF-8.
    let mut args = Vec::new();
    for (i, a) in std::env::args_os().skip(1).enumerate() {
        match a.into_string() {
            Ok(a) => args.push(a),
            Err(a) => {
                eprintln!(
                    "turnpike-sim: argument {} is not valid UTF-8: `{}`",
                    i + 1,
                    a.to_string_lossy()
                );
                std::process::exit(2);
            }
        }
    }
    std::process::exit(turnpike_sim::cli::main(args));
}
