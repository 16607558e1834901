//! Secrets billfold generates for itself and keeps under `DATA_DIR` (the sandbox's
//! webhook signing secret, the app role's password seed): created once, mode 0600.

use std::path::Path;

use anyhow::Context;
use rand::RngCore;
use secrecy::SecretString;

/// Reads a secret kept in `path`, or creates it (24 random bytes shown by `show`,
/// mode 0600). Safe when processes race: the first file written wins and the others
/// read it.
pub fn load_or_create(path: &Path, show: impl Fn(&[u8]) -> String) -> anyhow::Result<SecretString> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let read = |path: &Path| -> Option<SecretString> {
        let s = std::fs::read_to_string(path).ok()?;
        let s = s.trim();
        (!s.is_empty()).then(|| SecretString::from(s.to_owned()))
    };
    if let Some(s) = read(path) {
        return Ok(s);
    }
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = show(&bytes);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    // Written under a temporary name and linked into place: the file is never seen
    // half-written, and a concurrent creator's file wins over ours.
    // Unique per call, not per process: threads of one process (parallel tests) create
    // it at once too.
    let mut nonce = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let tmp = path.with_extension(format!("tmp{}-{}", std::process::id(), hex::encode(nonce)));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("write {}", tmp.display()))?;
        f.write_all(secret.as_bytes())?;
        f.sync_all()?;
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(SecretString::from(secret)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(path).ok_or_else(|| anyhow::anyhow!("{} is empty", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("create {}", path.display())),
    }
}
