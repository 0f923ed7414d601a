//! Compiles the XDP program with clang and generates its libbpf-rs skeleton.
use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "src/bpf/xsk_redirect.bpf.c";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("xsk_redirect.skel.rs");
    // Debian keeps asm/types.h under the multiarch include directory, which `-target bpf`
    // does not search by itself.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    let obj = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("xsk_redirect.bpf.o");
    if let Err(e) = SkeletonBuilder::new().source(SRC).obj(&obj).clang_args([multiarch.as_str(), "-O2", "-Wall"]).build_and_generate(&out) {
        panic!("building the XDP program {SRC} failed (needs clang and libelf-dev; scripts/test.sh installs them): {e:#}");
    }
    println!("cargo:rerun-if-changed={SRC}");
}
