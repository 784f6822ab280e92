fn main() {
    std::process::exit(overlay_ctl::cli::main());
}
