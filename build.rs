//! Link flags for the `agent-supervisor` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        // Relative relocations packed (DT_RELR: glibc 2.36+, as in Debian 12
        // and the distroless runtime image; GNU ld 2.38+ or lld). The
        // position-independent binary's relocation table shrinks from about
        // 300 KiB to 4 KiB, and with it what the loader reads at start and
        // keeps resident: about 0.4 MiB of an idle sidecar's RSS
        // (docs/benchmarks.md, "A smaller resident sidecar").
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
