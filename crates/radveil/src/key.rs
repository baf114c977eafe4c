//! Loading and making the de-identification key. The secret comes from a file or the
//! environment, is zeroized when dropped, and is never printed.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use radveil_deid::{Key, MIN_KEY_LEN};
use zeroize::Zeroizing;

const HOW: &str = "make one with `radveil keygen KEYFILE` and pass `--key-file KEYFILE`, \
                   or set RADVEIL_KEY to at least 32 secret bytes";

/// Reads the key from `file`, or from `RADVEIL_KEY` when no file is given.
pub fn load(file: Option<&Path>) -> Result<Key> {
    let bytes = match file {
        Some(f) => Zeroizing::new(
            std::fs::read(f)
                .with_context(|| format!("reading key file {} ({HOW})", f.display()))?,
        ),
        None => match std::env::var_os("RADVEIL_KEY") {
            Some(v) => Zeroizing::new(v.into_encoded_bytes()),
            None => bail!("no de-identification key: {HOW}"),
        },
    };
    Key::new(bytes).map_err(|e| anyhow::anyhow!("{e}: {HOW}"))
}

/// Writes a fresh key of 32 random bytes, hex-encoded, to a new file of mode 0600.
pub fn keygen(file: &Path) -> Result<()> {
    let mut raw = Zeroizing::new([0u8; MIN_KEY_LEN]);
    getrandom::getrandom(raw.as_mut())
        .map_err(|e| anyhow::anyhow!("reading the system random source: {e}"))?;
    let mut hex = Zeroizing::new(String::with_capacity(2 * MIN_KEY_LEN + 1));
    for b in raw.iter() {
        hex.push_str(&format!("{b:02x}"));
    }
    hex.push('\n');
    let mut f = create_private(file)?;
    f.write_all(hex.as_bytes())?;
    f.sync_all()?;
    eprintln!("radveil: wrote a new key to {} (mode 0600); keep it secret and backed up: the same key gives the same pseudonyms", file.display());
    Ok(())
}

/// Creates a new file of mode 0600 for a secret; never replaces an existing one.
pub fn create_private(path: &Path) -> Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path).with_context(|| {
        format!(
            "creating {} (an existing key is never overwritten)",
            path.display()
        )
    })
}
