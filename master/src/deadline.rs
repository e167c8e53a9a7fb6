//! Deadlines for a whole exchange on the admin listener and the control
//! socket. Each serves one client at a time: a timeout per `read` or `write`
//! alone would let a client that trickles a byte now and then hold the
//! listener (and every health probe, scrape or `prefork status` behind it)
//! indefinitely.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// A stream whose reads and writes can be bounded in time.
pub trait Timed: Read + Write {
    /// Sets the timeout of the next reads.
    fn read_timeout(&self, t: Duration) -> io::Result<()>;
    /// Sets the timeout of the next writes.
    fn write_timeout(&self, t: Duration) -> io::Result<()>;
}

impl Timed for TcpStream {
    fn read_timeout(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))
    }
    fn write_timeout(&self, t: Duration) -> io::Result<()> {
        self.set_write_timeout(Some(t))
    }
}

impl Timed for UnixStream {
    fn read_timeout(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))
    }
    fn write_timeout(&self, t: Duration) -> io::Result<()> {
        self.set_write_timeout(Some(t))
    }
}

/// The moment a client's turn ends.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    /// `limit` from now.
    pub fn after(limit: Duration) -> Deadline {
        Deadline(Instant::now() + limit)
    }

    fn left(self) -> io::Result<Duration> {
        match self.0.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(left),
            _ => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took too long",
            )),
        }
    }

    /// One `read`, which must end before the deadline.
    pub fn read(self, stream: &mut impl Timed, buf: &mut [u8]) -> io::Result<usize> {
        stream.read_timeout(self.left()?)?;
        stream.read(buf)
    }

    /// Writes all of `bytes` before the deadline.
    pub fn write_all(self, stream: &mut impl Timed, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            stream.write_timeout(self.left()?)?;
            match stream.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        stream.flush()
    }
}
