//! `podswitch-cni`: see the library's documentation ([`podswitch_cni`]).
fn main() {
    std::process::exit(podswitch_cni::main_exit_code());
}
