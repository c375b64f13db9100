//! The bottom floor of the runtime: host primitives on trees a guest can rewrite, each
//! resolved relative to directory descriptors (the runtime's only `unsafe` lives in `fs`).

pub mod fs;
pub mod mountinfo;
pub mod private_root;
pub mod share;
pub mod vmm_dir;
