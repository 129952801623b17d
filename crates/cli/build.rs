//! Exports the condition-variable functions that `src/spinwait.rs` defines from the `weft`
//! binary, so that the shared libraries it loads (PoCL) bind to them.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        for symbol in ["pthread_cond_wait", "pthread_cond_broadcast", "pthread_cond_signal"] {
            println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol={symbol}");
        }
    }
}
