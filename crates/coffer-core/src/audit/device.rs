//! Where audit entries go: an append-only file (or stdout), or a TCP/unix socket. A device
//! either writes the whole line or reports failure; it never half-succeeds silently.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use tokio::io::AsyncWriteExt as _;
use tokio::sync::Mutex;

pub(crate) enum Sink {
    File {
        path: PathBuf,
        file: Mutex<std::fs::File>,
    },
    Stdout,
    Socket {
        kind: SocketKind,
        address: String,
        conn: Mutex<Option<Conn>>,
    },
    /// A configured device that could not be opened at start: every write fails, so requests
    /// are refused rather than served unaudited.
    Broken(String),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum SocketKind {
    Tcp,
    Unix,
}

pub(crate) enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// An unreachable collector must not hold every request for long: each socket step gets 5 s.
async fn within<T>(f: impl std::future::Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    match tokio::time::timeout(std::time::Duration::from_secs(5), f).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "audit socket timed out")),
    }
}

impl Sink {
    /// Opens a file device (created 0600, appended to).
    pub(crate) fn file(path: &str, mode: u32) -> std::io::Result<Sink> {
        if path == "stdout" {
            return Ok(Sink::Stdout);
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).mode(mode).open(path)?;
        Ok(Sink::File { path: PathBuf::from(path), file: Mutex::new(file) })
    }

    pub(crate) fn socket(kind: SocketKind, address: &str) -> Sink {
        Sink::Socket { kind, address: address.to_owned(), conn: Mutex::new(None) }
    }

    /// The file path, when the sink is a file (its tail holds the chain head after a restart).
    pub(crate) fn file_path(&self) -> Option<&PathBuf> {
        match self {
            Sink::File { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Writes one line (newline added). Socket devices reconnect once on failure.
    pub(crate) async fn write_line(&self, line: &[u8]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        match self {
            Sink::File { file, .. } => {
                let mut f = file.lock().await;
                f.write_all(&buf)?;
                f.flush()
            }
            Sink::Broken(why) => Err(std::io::Error::other(why.clone())),
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&buf)?;
                out.flush()
            }
            Sink::Socket { kind, address, conn } => {
                let mut guard = conn.lock().await;
                for attempt in 0..2 {
                    if guard.is_none() {
                        let connect = async {
                            Ok::<_, std::io::Error>(match kind {
                                SocketKind::Tcp => {
                                    Conn::Tcp(tokio::net::TcpStream::connect(address).await?)
                                }
                                SocketKind::Unix => {
                                    Conn::Unix(tokio::net::UnixStream::connect(address).await?)
                                }
                            })
                        };
                        *guard = Some(within(connect).await?);
                    }
                    let result = match guard.as_mut() {
                        Some(Conn::Tcp(s)) => within(s.write_all(&buf)).await,
                        Some(Conn::Unix(s)) => within(s.write_all(&buf)).await,
                        None => Ok(()),
                    };
                    match result {
                        Ok(()) => return Ok(()),
                        Err(e) if attempt == 1 => return Err(e),
                        Err(_) => *guard = None,
                    }
                }
                Ok(())
            }
        }
    }
}
