//! Zero-copy moves for busy tunnel directions: splice(2) from the reading socket into a pipe and from the pipe
//! into the writing socket, so the bytes never pass through user space. A pipe costs two descriptors, so a
//! direction only takes one while it is busy and gives it back (to a small per-thread pool) as soon as it
//! goes quiet: idle tunnels hold no pipe.

use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};
use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// At most this many spare pipes are kept per worker thread; more are closed.
const POOL: usize = 16;
/// What a pipe is asked to hold (the kernel's default is 64 KiB; 1 MiB is the usual `fs.pipe-max-size`).
const PIPE_SIZE: usize = 1 << 20;
/// Bytes asked for per move (the kernel moves what fits in the pipe).
const CHUNK: usize = PIPE_SIZE;

pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes in the pipe, not yet moved on to the writer.
    pub held: usize,
}

thread_local! {
    static SPARE: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

impl Pipe {
    /// A pipe from this thread's pool, or a new one (`None` when none can be made, e.g. out of descriptors:
    /// the caller copies through user space instead).
    pub fn take() -> Option<Pipe> {
        if let Some(p) = SPARE.with(|s| s.borrow_mut().pop()) {
            return Some(p);
        }
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).ok()?;
        // Bigger moves, fewer calls. Best effort: past the per-user pipe allowance the default size stays.
        let _ = fcntl_setpipe_size(&write, PIPE_SIZE);
        Some(Pipe {
            read,
            write,
            held: 0,
        })
    }

    /// Spare pipes in this thread's pool.
    #[cfg(test)]
    pub fn spare() -> usize {
        SPARE.with(|s| s.borrow().len())
    }

    /// Give an empty pipe back to the pool (a pipe still holding bytes is closed instead).
    pub fn give_back(self) {
        if self.held > 0 {
            return;
        }
        SPARE.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < POOL {
                s.push(self);
            }
        });
    }

    /// Move what `from` has into the (empty) pipe: `Ok(0)` at end of stream, `WouldBlock` when `from` has
    /// nothing (its readiness is then cleared).
    pub fn fill(&mut self, from: &TcpStream) -> io::Result<usize> {
        debug_assert_eq!(self.held, 0, "filled only when empty");
        let n = from.try_io(Interest::READABLE, || {
            splice(
                from,
                None,
                &self.write,
                None,
                CHUNK,
                SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
            )
            .map_err(io::Error::from)
        })?;
        self.held = n;
        Ok(n)
    }

    /// Move bytes from the pipe on to `to`: how many went, or `WouldBlock` when `to` is full (its readiness
    /// is then cleared).
    pub fn drain(&mut self, to: &TcpStream) -> io::Result<usize> {
        let n = to.try_io(Interest::WRITABLE, || {
            splice(
                &self.read,
                None,
                to,
                None,
                self.held,
                SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
            )
            .map_err(io::Error::from)
        })?;
        self.held -= n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::splice::tests::tcp_pair;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn moves_bytes_between_sockets_and_reports_end_of_stream() {
        let (mut src, from) = tcp_pair().await;
        let (to, mut dst) = tcp_pair().await;
        let mut pipe = Pipe::take().expect("a pipe");
        assert_eq!(
            pipe.fill(&from).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "nothing sent yet"
        );
        src.write_all(b"through the pipe").await.unwrap();
        from.readable().await.unwrap();
        let n = pipe.fill(&from).unwrap();
        assert_eq!((n, pipe.held), (16, 16));
        to.writable().await.unwrap();
        assert_eq!(pipe.drain(&to).unwrap(), 16);
        assert_eq!(pipe.held, 0);
        let mut got = [0u8; 16];
        dst.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"through the pipe");
        src.shutdown().await.unwrap();
        from.readable().await.unwrap();
        assert_eq!(pipe.fill(&from).unwrap(), 0);
        pipe.give_back();
        assert!(
            SPARE.with(|s| s.borrow().len()) >= 1,
            "an empty pipe is kept"
        );
    }

    #[tokio::test]
    async fn a_pipe_still_holding_bytes_is_not_pooled() {
        let (mut src, from) = tcp_pair().await;
        let mut pipe = Pipe::take().expect("a pipe");
        let before = SPARE.with(|s| s.borrow().len());
        src.write_all(b"left behind").await.unwrap();
        from.readable().await.unwrap();
        pipe.fill(&from).unwrap();
        pipe.give_back();
        assert_eq!(SPARE.with(|s| s.borrow().len()), before);
    }
}
