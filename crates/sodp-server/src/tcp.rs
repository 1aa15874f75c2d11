//! A plain TCP connection shared by its session task and direct deliveries
//! (`outbox`): an `Arc<TcpStream>` read and written through tokio's
//! readiness API on a shared reference. The session's I/O loop uses it as
//! any stream; a [`crate::outbox::FlushScope`] on another task writes the
//! same socket without blocking while it owns the outbox's queue.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// A connection that may be written by whoever queues a frame for it.
pub struct SharedTcp(Arc<TcpStream>);

impl SharedTcp {
    pub fn new(tcp: TcpStream) -> SharedTcp {
        SharedTcp(Arc::new(tcp))
    }
}

/// Streams a session runs on; the ones with a socket that deliveries may
/// write directly say which (`Outbox::attach`).
pub trait DirectSocket {
    fn direct_socket(&self) -> Option<Arc<TcpStream>> {
        None
    }
}

impl DirectSocket for SharedTcp {
    fn direct_socket(&self) -> Option<Arc<TcpStream>> {
        Some(self.0.clone())
    }
}

/// TLS: records must come from the one rustls session, so every write is
/// the session task's.
impl DirectSocket for tokio_rustls::server::TlsStream<TcpStream> {}

/// `TcpStream::try_write_vectored`, but with `sendmsg` instead of `writev`:
/// the same bytes in one system call without the VFS layer `writev` goes
/// through (`vfs_writev` and `fdget_pos` were 7 % of a saturated fanout's
/// server profile). Readiness is kept as tokio's own `try_write_*` keep it.
pub fn try_send_vectored(tcp: &TcpStream, data: &[io::IoSlice<'_>]) -> io::Result<usize> {
    tcp.try_io(Interest::WRITABLE, || {
        socket2::SockRef::from(tcp).send_vectored(data)
    })
}

/// Retries `attempt` until it does not report would-block, waiting for
/// readiness in between (tokio clears readiness on would-block).
fn poll_io<T>(
    cx: &mut Context<'_>,
    mut ready: impl FnMut(&mut Context<'_>) -> Poll<io::Result<()>>,
    mut attempt: impl FnMut() -> io::Result<T>,
) -> Poll<io::Result<T>> {
    loop {
        ready!(ready(cx))?;
        match attempt() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            result => return Poll::Ready(result),
        }
    }
}

impl AsyncRead for SharedTcp {
    /// As tokio's own `TcpStream` does, a read that fills less than the
    /// buffer clears the socket's readiness: it was drained, so the next
    /// read waits for the next epoll event instead of spending a `recv` to
    /// learn that it would block. The clearing is tied to the readiness
    /// seen before the read (the outer `try_io`), so an event that arrives
    /// meanwhile is not lost.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let tcp = &*self.0;
        loop {
            ready!(tcp.poll_read_ready(cx))?;
            let room = buf.remaining();
            let mut got = 0;
            let read = tcp.try_io(Interest::READABLE, || {
                got = tcp.try_read(buf.initialize_unfilled())?;
                if got > 0 && got < room {
                    // Drained: clear the readiness (the read still counts).
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(())
            });
            match read {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && got == 0 => continue,
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Poll::Ready(Err(e)),
                _ => {
                    buf.advance(got);
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let tcp = &*self.0;
        poll_io(cx, |cx| tcp.poll_write_ready(cx), || tcp.try_write(data))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let tcp = &*self.0;
        poll_io(
            cx,
            |cx| tcp.poll_write_ready(cx),
            || try_send_vectored(tcp, data),
        )
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Half-closes the connection (an HTTP answer's end).
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn reads_writes_and_half_closes_like_a_tcp_stream() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let mut server = SharedTcp::new(listener.accept().await.unwrap().0);
        let socket = server.direct_socket().unwrap();

        client.write_all(b"ping").await.unwrap();
        let mut got = [0; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");

        // The session task's write and a direct one land in order.
        server.write_all(b"one,").await.unwrap();
        assert_eq!(socket.try_write(b"two").unwrap(), 3);
        server.shutdown().await.unwrap();
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"one,two");
    }
}
