fn main() {
    eprintln!("turnpike: the runtime is not built yet");
    std::process::exit(2);
}
