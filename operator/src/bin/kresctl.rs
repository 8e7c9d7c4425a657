//! `kresctl`: the command-line client.
fn main() {
    eprintln!("kresctl: not implemented yet");
    std::process::exit(2);
}
