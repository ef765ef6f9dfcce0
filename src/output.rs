//! Writing files users keep (saved conversations, recipes, sweep tables): whole or not at
//! all, so that a kill or a full disk mid-write leaves the old file, never half a new one.

use anyhow::{Context, Result};
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file in the same folder, renamed into place.
pub fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    let name =
        path.file_name().with_context(|| format!("{} is not a file name", path.display()))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path)).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("cannot write {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_and_a_failed_write_leaves_the_old_one() {
        let dir = std::env::temp_dir().join(format!("mood-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kept.json");
        write_whole(&path, b"old").unwrap();
        write_whole(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        // A folder where the file should be: the write fails, nothing is left behind.
        let blocked = dir.join("folder");
        std::fs::create_dir_all(&blocked).unwrap();
        let e = write_whole(&blocked, b"x").unwrap_err().to_string();
        assert!(e.starts_with("cannot write") && !e.contains('\n'), "{e}");
        let left: Vec<_> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(write_whole(Path::new("/"), b"x").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
