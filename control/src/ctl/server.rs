//! Server side of the control socket: one thread accepting connections, answering each
//! [`Request`] through a handler the switch supplies.
//!
//! Contract: the socket file is created with mode 0600 in a directory of mode 0700, so only
//! root (the switch's user) opens it; a stale socket file from a dead switch is replaced, a
//! live one is refused. A malformed request gets `{"ok":false,"error":...}`, never a crash.
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::Request;

pub type Handler = Arc<dyn Fn(&Request) -> serde_json::Value + Send + Sync>;

/// Binds the socket at `path`; see the module contract.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!("another switch is already listening on {} (stop it first)", path.display()));
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
    Ok(listener)
}

/// Serves connections on a background thread until the process ends.
pub fn serve(listener: UnixListener, path: PathBuf, handler: Handler) {
    std::thread::Builder::new()
        .name("podswitch-ctl".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let handler = Arc::clone(&handler);
                std::thread::spawn(move || answer(conn, &handler));
            }
            let _ = std::fs::remove_file(path);
        })
        .expect("spawning the control socket thread");
}

fn answer(conn: UnixStream, handler: &Handler) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let mut reader = BufReader::new(&conn);
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let answer = match serde_json::from_str::<Request>(&line) {
        Ok(req) => handler(&req),
        Err(e) => serde_json::json!({"ok": false, "error": format!("bad request: {e}")}),
    };
    let mut out = serde_json::to_string(&answer).unwrap_or_else(|_| "{\"ok\":false}".into());
    out.push('\n');
    let _ = (&conn).write_all(out.as_bytes());
}
