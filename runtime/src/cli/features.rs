//! `hako features`: what this runtime supports, as the OCI features document.

pub fn features() -> anyhow::Result<u8> {
    println!(
        "{}",
        serde_json::to_string_pretty(&crate::features::document())?
    );
    Ok(0)
}
