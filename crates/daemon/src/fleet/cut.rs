//! Connections that the fleet can cut, as a killed process's connections are: an agent's
//! connection to a manager fails at once (reset) when the fleet kills that manager, rather
//! than waiting for the manager's graceful shutdown or a missed heartbeat, and a new connection
//! to it is refused until it is revived.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Per manager address, how many times its connections were cut, and which managers are down.
#[derive(Default)]
pub(crate) struct ConnectionCutter {
    cuts: RwLock<HashMap<String, watch::Sender<u64>>>,
    down: RwLock<HashSet<String>>,
}

impl ConnectionCutter {
    fn cuts_of(&self, addr: &str) -> watch::Receiver<u64> {
        if let Some(cuts) = self
            .cuts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
        {
            return cuts.subscribe();
        }
        self.cuts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(addr.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Takes `addr` back: connections to it are made again.
    pub(crate) fn restore(&self, addr: &str) {
        self.down
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(addr);
    }

    /// Resets every connection made to `addr` so far, and refuses new ones until
    /// [`ConnectionCutter::restore`].
    pub(crate) fn cut(&self, addr: &str) {
        self.down
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr.to_owned());
        self.cuts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(addr.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .send_modify(|cuts| *cuts += 1);
    }

    /// A TCP connection to `addr` that fails once `addr`'s connections are cut.
    pub(crate) async fn connect(&self, addr: &str) -> io::Result<TokioIo<CuttableStream>> {
        if self
            .down
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(addr)
        {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("the simulated fleet killed the manager at {addr}"),
            ));
        }
        let mut cuts = self.cuts_of(addr);
        cuts.borrow_and_update();
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(TokioIo::new(CuttableStream {
            stream,
            cut: Box::pin(async move {
                let _ = cuts.changed().await;
            }),
            is_cut: false,
        }))
    }
}

/// A TCP stream that fails with a reset once its cut resolves.
pub(crate) struct CuttableStream {
    stream: TcpStream,
    cut: Pin<Box<dyn Future<Output = ()> + Send>>,
    is_cut: bool,
}

impl CuttableStream {
    /// Whether the connection is cut; registers the task to be woken when it is.
    fn check_cut(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.is_cut && self.cut.as_mut().poll(cx).is_ready() {
            self.is_cut = true;
        }
        if self.is_cut {
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the simulated fleet killed this manager",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for CuttableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_cut(cx)?;
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_cut(cx)?;
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_cut(cx)?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Connects to the address of the URI it is given, through a [`ConnectionCutter`].
#[derive(Clone)]
pub(crate) struct CuttableConnector {
    pub(crate) cutter: Arc<ConnectionCutter>,
}

impl tower::Service<tonic::transport::Uri> for CuttableConnector {
    type Response = TokioIo<CuttableStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: tonic::transport::Uri) -> Self::Future {
        let cutter = Arc::clone(&self.cutter);
        Box::pin(async move {
            let authority = uri.authority().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{uri} names no host and port"),
                )
            })?;
            cutter.connect(authority.as_str()).await
        })
    }
}
