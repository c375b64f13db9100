//! Guest images: a manifest of entries ([`manifest`]), written as an uncompressed newc cpio
//! ([`cpio`]) or as a directory tree ([`dir`]). Output is reproducible: entries sorted, owners
//! root, mtimes zero.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod cpio;
pub mod dir;
pub mod elf;
pub mod images;
pub mod manifest;
pub mod oci_image;

pub use manifest::{Entry, Manifest, ManifestError};
