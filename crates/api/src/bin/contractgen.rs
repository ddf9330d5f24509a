//! Rewrites the generated "JSON bodies" of `docs/operator.md` from the contract types
//! (`api::wire::document`). CI runs it and fails on drift; so does `cargo test -p api`.

use std::path::PathBuf;

fn main() -> Result<(), String> {
    let page = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/operator.md");
    let text = std::fs::read_to_string(&page).map_err(|e| format!("reading {}: {e}", page.display()))?;
    let new = api::wire::with_document(&text).ok_or_else(|| {
        format!(
            "{} has no generated section: put {} and {} where it goes",
            page.display(),
            api::wire::DOC_BEGIN,
            api::wire::DOC_END
        )
    })?;
    std::fs::write(&page, new).map_err(|e| format!("writing {}: {e}", page.display()))
}
