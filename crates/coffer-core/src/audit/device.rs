//! Where audit entries go: an append-only file (or stdout), or a TCP/unix socket. A device
//! either writes the whole line or reports failure; it never half-succeeds silently.
//!
//! A socket write succeeds once the kernel has the bytes, not once the collector read them. A
//! collector that closed or reset its connection is found before each write (and a reset
//! again right after it), so its entries are not handed to a dead connection. Not found: a
//! collector whose host vanished without closing (power loss, partition); its connection
//! takes entries until TCP gives up on it.

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

/// What a connection's receive side shows, looked at without blocking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    /// Nothing to read: as far as this end can tell, the collector is there.
    Open,
    /// End of stream: the collector closed the connection (or at least its sending side).
    Closed,
    /// An error such as a reset: bytes written lately were refused or thrown away. Reported
    /// once; the kernel clears the error as it returns it, and later looks show `Closed`.
    Reset,
}

impl Conn {
    /// Looks at the receive side without blocking (the socket is non-blocking, as tokio keeps
    /// it). A collector sends nothing, so any bytes it did send are read and dropped, to reach
    /// an end of stream behind them.
    pub(crate) fn peer(&self) -> Peer {
        let sock = match self {
            Conn::Tcp(s) => socket2::SockRef::from(s),
            Conn::Unix(s) => socket2::SockRef::from(s),
        };
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 512];
        // Bounded, so a collector that floods us cannot hold the write here.
        for _ in 0..64 {
            match sock.recv(&mut buf) {
                Ok(0) => return Peer::Closed,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Peer::Open,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return Peer::Reset,
            }
        }
        Peer::Open
    }
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
                // A connection whose collector went away still takes a write into the kernel's
                // buffer, and the request would then run with its entry lost: reconnect first.
                if let Some(c) = guard.as_ref()
                    && c.peer() != Peer::Open
                {
                    tracing::warn!(address = %address, "audit socket closed by the collector; reconnecting");
                    *guard = None;
                }
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
                    // A reset already back (on loopback it usually is) means this entry was
                    // thrown away: write it again on a new connection. An end of stream alone
                    // is not proof, since a collector may close only its sending side.
                    let result = result.and_then(|()| match guard.as_ref().map(Conn::peer) {
                        Some(Peer::Reset) => Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "audit collector reset the connection",
                        )),
                        _ => Ok(()),
                    });
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

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    async fn pair() -> (Conn, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let c = tokio::net::TcpStream::connect(l.local_addr().expect("addr")).await.expect("conn");
        let (s, _) = l.accept().await.expect("accept");
        (Conn::Tcp(c), s)
    }

    /// The peer's state can take a moment to cross loopback; the check itself never waits.
    /// A reset is reported once (the kernel clears the error as it returns it), so the first
    /// matching answer is the one returned.
    async fn settle(c: &Conn, want: Peer) -> Peer {
        let mut got = c.peer();
        for _ in 0..100 {
            if got == want {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            got = c.peer();
        }
        got
    }

    #[tokio::test]
    async fn a_collector_that_closed_or_reset_is_seen_without_blocking() {
        let (c, s) = pair().await;
        assert_eq!(c.peer(), Peer::Open, "a live, silent collector");
        drop(s);
        assert_eq!(settle(&c, Peer::Closed).await, Peer::Closed, "closed by the collector");

        let (c, mut s) = pair().await;
        s.write_all(b"something a collector should not send").await.expect("write");
        assert_eq!(settle(&c, Peer::Open).await, Peer::Open, "bytes alone are no sign of death");
        drop(s);
        assert_eq!(settle(&c, Peer::Closed).await, Peer::Closed, "the end behind the bytes");

        let (c, s) = pair().await;
        socket2::SockRef::from(&s).set_linger(Some(std::time::Duration::ZERO)).expect("linger");
        drop(s);
        assert_eq!(settle(&c, Peer::Reset).await, Peer::Reset, "reset by the collector");
    }
}
