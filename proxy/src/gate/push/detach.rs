//! How an event stream leaves Pingora (see the [module docs](super)).

use std::net::TcpStream;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora::proxy::Session;
use pingora::Result;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Whether this request's connection can leave Pingora after the head: a plain-TCP HTTP/1.x
/// GET (not TLS, not HTTP/2, not a Unix socket).
pub(super) fn detachable(s: &Session) -> bool {
    let plain_tcp = s.digest().is_some_and(|d| {
        d.ssl_digest.is_none()
            && d.socket_digest
                .as_ref()
                .and_then(|sd| sd.peer_addr())
                .is_some_and(|a| a.as_inet().is_some())
    });
    plain_tcp
        && s.req_header().method == http::Method::GET
        && s.downstream_session.as_http1().is_some()
}

/// Takes the connection out of Pingora (see the module docs): Pingora keeps a stand-in session
/// that has "sent" `head` and will not be reused.
pub(super) async fn detach(s: &mut Session, head: ResponseHeader) -> Result<TcpStream> {
    let raw = s.downstream_session.to_h1_raw();
    let mut stand_in = ServerSession::new_http1(Box::new(L4Stream::from(
        VirtualSocketStream::new(Box::new(Detached { head: raw })),
    )));
    stand_in.read_request().await?;
    let real = std::mem::replace(&mut *s.downstream_session, stand_in);
    s.downstream_session
        .write_response_header(Box::new(head))
        .await?;
    s.set_keepalive(None);
    let ServerSession::H1(real) = real else {
        return Err(pingora::Error::explain(
            pingora::ErrorType::InternalError,
            "an event stream can leave only an HTTP/1 session",
        ));
    };
    let mut stream = real.into_inner();
    stream
        .flush()
        .await
        .map_err(|e| pingora::Error::because(pingora::ErrorType::WriteError, "flush", e))?;
    let own = duplicate(&stream)
        .map_err(|e| pingora::Error::because(pingora::ErrorType::InternalError, "dup", e))?;
    drop(stream); // closes Pingora's descriptor; the socket lives on in `own`
    let sock = TcpStream::from(own);
    // Already so (the flag belongs to the socket, which tokio made non-blocking); a hub must
    // never block on one slow client, so say it anyway.
    sock.set_nonblocking(true).map_err(|e| {
        pingora::Error::because(pingora::ErrorType::InternalError, "nonblocking", e)
    })?;
    Ok(sock)
}

/// A descriptor of our own for `stream`'s socket (`F_DUPFD_CLOEXEC`).
#[allow(unsafe_code)]
fn duplicate(stream: &pingora::protocols::Stream) -> std::io::Result<OwnedFd> {
    // SAFETY: `stream` owns the descriptor `id()` names (a plain TCP socket, checked by
    // `detachable`) and outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.id()) };
    fd.try_clone_to_owned()
}

/// The stand-in's socket: reads give the replayed request head once, then end; writes vanish.
#[derive(Debug)]
struct Detached {
    head: Bytes,
}

impl VirtualSocket for Detached {
    fn set_socket_option(&self, _opt: VirtualSockOpt) -> std::io::Result<()> {
        Ok(())
    }
}

impl AsyncRead for Detached {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.head.len().min(buf.remaining());
        let part = self.head.split_to(n);
        buf.put_slice(&part);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Detached {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stand_in_replays_the_head_then_ends() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let head = Bytes::from_static(
                b"GET /.flashgate/events?room=drop HTTP/1.1\r\nHost: shop\r\n\r\n",
            );
            let sock = Detached { head };
            let mut s = ServerSession::new_http1(Box::new(L4Stream::from(
                VirtualSocketStream::new(Box::new(sock)),
            )));
            assert!(s.read_request().await.expect("parses"));
            assert_eq!(s.req_header().uri.path(), "/.flashgate/events");
            let h = ResponseHeader::build(200, None).expect("head");
            s.write_response_header(Box::new(h))
                .await
                .expect("vanishes");
            s.set_keepalive(None);
            assert!(
                s.finish().await.expect("finishes").is_none(),
                "never reused"
            );
        });
    }
}
