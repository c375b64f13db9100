//! Generates the protobuf messages and ttrpc services from `protos/` into OUT_DIR (pure Rust:
//! no protoc). The generated files open with inner attributes and doc comments, which
//! `include!` inside a module does not accept, so they are stripped here.

use std::path::Path;

const PROTOS: &[&str] = &["protos/agent.proto", "protos/health.proto"];

fn main() {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    ttrpc_codegen::Codegen::new()
        .out_dir(&out)
        .inputs(PROTOS)
        .include("protos")
        .rust_protobuf()
        .customize(ttrpc_codegen::Customize {
            async_all: true,
            ..Default::default()
        })
        .run()
        .expect("generating the agent API from protos/");
    for entry in std::fs::read_dir(&out).expect("listing OUT_DIR") {
        let path = entry.expect("reading OUT_DIR").path();
        if path.extension().is_some_and(|e| e == "rs") {
            strip_inner_attributes(&path);
        }
    }
}

fn strip_inner_attributes(path: &Path) {
    let text = std::fs::read_to_string(path).expect("reading generated code");
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("#![") && !l.trim_start().starts_with("//!"))
        .collect();
    std::fs::write(path, kept.join("\n")).expect("writing generated code");
}
