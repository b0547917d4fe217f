//! The engine's end of an exec's pseudo-terminal. The runtime makes the terminal inside the
//! container (from the container's own `/dev/pts`, so `tty` there names it) and sends its
//! master side over a console socket, runc's protocol, which libcontainer speaks too: one
//! connection, one message carrying the master as `SCM_RIGHTS`. [`Console`] then reads what
//! the command writes, writes its input and sets its size. IO only; what to run is decided in
//! `exec_spec`.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::error::{EngineError, Result};
use crate::exec_spec::TerminalSize;

/// The longest path a unix socket can be bound at (`sun_path` less its terminating NUL).
const MAX_SOCKET_PATH_BYTES: usize = 107;

/// Listens on `path` for the runtime's connection (a socket left there before is replaced).
pub(crate) fn listen(path: &Path) -> Result<tokio::net::UnixListener> {
    if path.as_os_str().len() > MAX_SOCKET_PATH_BYTES {
        return Err(EngineError::invalid(
            "console socket",
            format!(
                "{} is longer than a unix socket path may be ({MAX_SOCKET_PATH_BYTES} bytes): \
                 give the daemon a shorter --data-root",
                path.display()
            ),
        ));
    }
    let _ = std::fs::remove_file(path);
    tokio::net::UnixListener::bind(path).map_err(EngineError::io(format!(
        "listening on console socket {}",
        path.display()
    )))
}

/// Takes the runtime's one connection on `listener` and the terminal master it sends.
pub(crate) async fn receive_master(listener: tokio::net::UnixListener) -> io::Result<OwnedFd> {
    let (stream, _) = listener.accept().await?;
    loop {
        stream.readable().await?;
        match stream.try_io(Interest::READABLE, || receive_fd(&stream)) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// One `recvmsg` on `socket`, for a message carrying one file descriptor.
fn receive_fd(socket: &impl AsFd) -> io::Result<OwnedFd> {
    // The message's text is the terminal's name ("/dev/ptmx"), which nothing needs.
    let mut name = [0u8; 4096];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        socket,
        &mut [io::IoSliceMut::new(&mut name)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message
            && let Some(fd) = fds.next()
        {
            return Ok(fd);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "the runtime's console message ({} bytes) carried no terminal",
            received.bytes
        ),
    ))
}

/// The master side of a pseudo-terminal, registered with tokio.
#[derive(Debug)]
pub struct Console {
    fd: AsyncFd<OwnedFd>,
}

impl Console {
    /// Takes `master` over, non-blocking.
    pub fn new(master: OwnedFd) -> io::Result<Console> {
        let flags = rustix::fs::fcntl_getfl(&master)?;
        rustix::fs::fcntl_setfl(&master, flags | rustix::fs::OFlags::NONBLOCK)?;
        // SAFETY: the AsyncFd owns `master` (an OwnedFd) for its whole life, so the descriptor
        // stays open and names the same terminal while registered.
        let fd = unsafe { AsyncFd::register(master) }?;
        Ok(Console { fd })
    }

    /// Reads what the command wrote; 0 once no process holds the terminal any more (the
    /// kernel then answers the master with EIO).
    pub async fn read(&self, buffer: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready
                .try_io(|fd| rustix::io::read(fd.get_ref(), &mut *buffer).map_err(Into::into))
            {
                Ok(Err(error)) if error.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `bytes` as the command's input.
    pub async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let mut ready = self.fd.writable().await?;
            match ready.try_io(|fd| rustix::io::write(fd.get_ref(), bytes).map_err(Into::into)) {
                Ok(Ok(written)) => bytes = &bytes[written..],
                Ok(Err(error)) => return Err(error),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Sets the terminal's size; the command gets SIGWINCH when it changed.
    pub fn resize(&self, size: TerminalSize) -> io::Result<()> {
        let winsize = rustix::termios::Winsize {
            ws_row: size.rows,
            ws_col: size.columns,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(self.fd.get_ref(), winsize).map_err(Into::into)
    }
}

/// A pseudo-terminal pair from the host's `/dev/ptmx`, (master, slave), for tests: no root
/// needed.
#[cfg(test)]
pub(crate) fn pty_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::pty::OpenptFlags;
    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let name = rustix::pty::ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY,
        rustix::fs::Mode::empty(),
    )?;
    Ok((master, slave))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_console_carries_bytes_both_ways_sets_the_size_and_ends_with_the_slave() {
        let (master, slave) = pty_pair().expect("a pty pair");
        let mut termios = rustix::termios::tcgetattr(&slave).expect("the slave's termios");
        termios.make_raw();
        rustix::termios::tcsetattr(&slave, rustix::termios::OptionalActions::Now, &termios)
            .expect("raw mode");
        let console = Console::new(master).expect("a console");
        console.write_all(b"in").await.expect("writing input");
        let mut buffer = [0u8; 2];
        rustix::io::read(&slave, &mut buffer).expect("reading the slave");
        assert_eq!(&buffer, b"in");
        rustix::io::write(&slave, b"out").expect("writing the slave");
        let mut read = [0u8; 16];
        let n = console.read(&mut read).await.expect("reading output");
        assert_eq!(&read[..n], b"out");
        console
            .resize(TerminalSize {
                rows: 30,
                columns: 100,
            })
            .expect("resizing");
        let size = rustix::termios::tcgetwinsize(&slave).expect("the slave's size");
        assert_eq!((size.ws_row, size.ws_col), (30, 100));
        drop(slave);
        assert_eq!(console.read(&mut read).await.expect("the end"), 0);
    }

    #[tokio::test]
    async fn a_master_sent_over_the_console_socket_arrives() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("c.sock");
        let listener = listen(&path).expect("listening");
        let (master, _slave) = pty_pair().expect("a pty pair");
        let sender = std::thread::spawn(move || {
            use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
            let socket = std::os::unix::net::UnixStream::connect(&path).expect("connecting");
            let fds = [master.as_fd()];
            let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
            rustix::net::sendmsg(
                &socket,
                &[io::IoSlice::new(b"/dev/ptmx")],
                &mut control,
                SendFlags::empty(),
            )
            .expect("sending the master");
        });
        let received = receive_master(listener).await.expect("the master");
        sender.join().expect("the sender");
        assert!(
            rustix::termios::tcgetwinsize(&received).is_ok(),
            "a terminal"
        );
    }

    #[test]
    fn a_socket_path_too_long_to_bind_names_the_fix() {
        let path = Path::new("/").join("d".repeat(120));
        let error = listen(&path).unwrap_err().to_string();
        assert!(error.contains("shorter --data-root"), "{error}");
    }
}
