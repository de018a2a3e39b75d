//! Small files named in settings (certificates, keys, credentials, ACLs): read whole but bounded,
//! so a path to something huge or endless (a device, a log) cannot exhaust memory, with errors
//! that name the setting and the path, never the content.

use std::io::Read;
use std::path::Path;

/// Largest settings file read.
pub const MAX_SETTINGS_FILE: u64 = 1 << 20;

/// The bytes of `file`, named by `setting` in errors; a regular file of at most
/// [`MAX_SETTINGS_FILE`] bytes.
pub fn read_settings_file(file: &Path, setting: &str) -> Result<Vec<u8>, String> {
    let shown = || format!("{setting} {}", file.display());
    let f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", shown()))?;
    if !f.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Err(format!("{}: not a file", shown()));
    }
    let mut bytes = Vec::new();
    f.take(MAX_SETTINGS_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", shown()))?;
    if bytes.len() as u64 > MAX_SETTINGS_FILE {
        return Err(format!(
            "{}: larger than {MAX_SETTINGS_FILE} bytes",
            shown()
        ));
    }
    Ok(bytes)
}
