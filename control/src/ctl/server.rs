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

/// Answers a request: the answer object (with `"ok": true`), or the error encoding it.
pub type Handler = Arc<dyn Fn(&Request) -> Result<serde_json::Value, serde_json::Error> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot create {}: {error}", dir.display())]
    CreateDir { dir: PathBuf, error: std::io::Error },
    #[error("another switch is already listening on {} (stop it first)", path.display())]
    InUse { path: PathBuf },
    #[error("cannot listen on {}: {error}", path.display())]
    Listen { path: PathBuf, error: std::io::Error },
    #[error("cannot restrict {}: {error}", path.display())]
    Restrict { path: PathBuf, error: std::io::Error },
}

/// Binds the socket at `path`; see the module contract.
pub fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|error| ServerError::CreateDir { dir: dir.to_path_buf(), error })?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(ServerError::InUse { path: path.to_path_buf() });
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|error| ServerError::Listen { path: path.to_path_buf(), error })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|error| ServerError::Restrict { path: path.to_path_buf(), error })?;
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

/// `{"ok": false, "error": ...}`.
fn refusal(error: String) -> serde_json::Value {
    serde_json::json!({"ok": false, "error": error})
}

fn answer(conn: UnixStream, handler: &Handler) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let mut reader = BufReader::new(&conn);
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let answer = match serde_json::from_str::<Request>(&line) {
        Ok(req) => handler(&req).unwrap_or_else(|e| refusal(format!("cannot encode the answer: {e}"))),
        Err(e) => refusal(format!("bad request: {e}")),
    };
    let mut out = serde_json::to_string(&answer).unwrap_or_else(|_| "{\"ok\":false}".into());
    out.push('\n');
    let _ = (&conn).write_all(out.as_bytes());
}
