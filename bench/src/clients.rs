//! Opening and holding many idle WebSocket connections, in this process or in children.
//!
//! Place: the client side of load and memory benchmarks. [`open`] upgrades connections a
//! window at a time: every upgrade of a window is sent before the answers are read, and a
//! connection only counts once its first server frame (`server_ready`) arrived. The window
//! keeps the number of sockets in the server's handshake below its per-source cap
//! (`max_handshakes_per_ip`, 64 by default), which would otherwise drop the excess.
//!
//! One process may only hold as many sockets as its open-file limit allows, so a
//! benchmark that needs more spreads them over [`Holder`] children: copies of its own
//! binary that open their share, report on stdout, and hold it until stdin closes.

use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use crate::ws::{self, Client, Dial, Handshake, Keys, BINARY, TEXT};

/// Idle connections opened by [`open`].
#[derive(Debug, Default)]
pub struct Opened {
    /// Connections that received their first frame; dropping them closes the sockets.
    pub clients: Vec<Client>,
    /// Connections that failed, at any step.
    pub failed: usize,
    /// The first few failures, for the report.
    pub errors: Vec<String>,
}

/// What a holder reports once its connections are open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Connections open and greeted.
    pub opened: usize,
    /// Connections that failed.
    pub failed: usize,
    /// The holder's resident memory before it opened any connection, KiB.
    pub rss_before_kib: u64,
    /// The holder's resident memory with every connection open, KiB.
    pub rss_after_kib: u64,
}

/// A child process that holds connections until it is dropped.
#[derive(Debug)]
pub struct Holder {
    child: Child,
    /// Closing it tells the child to close its connections and exit.
    stdin: Option<ChildStdin>,
}

/// Opens `count` connections as `dial` says, `window` handshakes at a time. `timeout`
/// bounds each connect, read and write.
pub fn open(dial: &Dial, count: usize, window: usize, timeout: Duration) -> Opened {
    let mut opened = Opened { clients: Vec::with_capacity(count), ..Opened::default() };
    let mut keys = match Keys::new() {
        Ok(keys) => keys,
        Err(e) => {
            opened.fail(&ws::Error::Io { step: "open /dev/urandom", source: e }, count);
            return opened;
        }
    };
    let mut pending = Vec::with_capacity(window.max(1));
    let mut left = count;
    while left > 0 {
        // Put one window of upgrades on the wire, then collect the answers.
        let batch = left.min(window.max(1));
        left -= batch;
        for index in count - left - batch..count - left {
            match Handshake::dial(dial, index, &mut keys, timeout) {
                Ok(handshake) => pending.push(handshake),
                Err(e) => opened.fail(&e, 1),
            }
        }
        for handshake in pending.drain(..) {
            match greeted(handshake) {
                Ok(client) => opened.clients.push(client),
                Err(e) => opened.fail(&e, 1),
            }
        }
    }
    opened
}

impl Opened {
    fn fail(&mut self, error: &ws::Error, count: usize) {
        self.failed += count;
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(error.to_string());
        }
    }
}

impl Report {
    /// The line a holder prints on stdout.
    pub fn line(&self) -> String {
        let Report { opened, failed, rss_before_kib, rss_after_kib } = self;
        format!("{READY} {opened} {failed} {rss_before_kib} {rss_after_kib}")
    }

    /// Parses [`Report::line`].
    pub fn parse(line: &str) -> Option<Report> {
        let mut words = line.strip_prefix(READY)?.split_whitespace().map(str::parse::<u64>);
        let mut next = || words.next()?.ok();
        Some(Report {
            opened: usize::try_from(next()?).ok()?,
            failed: usize::try_from(next()?).ok()?,
            rss_before_kib: next()?,
            rss_after_kib: next()?,
        })
    }
}

impl Holder {
    /// Starts `exe` with `args` (which must make it call [`hold`]) and waits for its
    /// report; the connections stay open until the holder is dropped.
    pub fn spawn(exe: &Path, args: &[String]) -> io::Result<(Holder, Report)> {
        let mut holder = Holder::launch(exe, args)?;
        let report = holder.report()?;
        Ok((holder, report))
    }

    /// Starts `exe` with `args` without waiting: several holders then open their
    /// connections at the same time. [`Holder::report`] waits for the result.
    pub fn launch(exe: &Path, args: &[String]) -> io::Result<Holder> {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        Ok(Holder { child, stdin })
    }

    /// Waits until the holder has opened its connections and reads its report (once).
    pub fn report(&mut self) -> io::Result<Report> {
        let stdout = self.child.stdout.take().ok_or(io::ErrorKind::BrokenPipe)?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        Report::parse(&line).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("holder said {line:?}"))
        })
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// The child side of [`Holder`]: opens the connections, prints the report line, and holds
/// them until stdin reaches end of file. Returns the report.
pub fn hold(dial: &Dial, count: usize, window: usize, timeout: Duration) -> Report {
    let rss_before_kib = crate::host::own_rss_kib().unwrap_or(0);
    let opened = open(dial, count, window, timeout);
    for error in &opened.errors {
        eprintln!("holder {}: {error}", std::process::id());
    }
    let report = Report {
        opened: opened.clients.len(),
        failed: opened.failed,
        rss_before_kib,
        rss_after_kib: crate::host::own_rss_kib().unwrap_or(0),
    };
    println!("{}", report.line());
    let _ = io::stdin().read_to_end(&mut Vec::new());
    report
}

/// Finishes the handshake and reads the first frame, which must be a data frame
/// (`server_ready`: text, or binary as `C:` when compressed or `M:` on msgpack connections).
fn greeted(handshake: Handshake) -> Result<Client, ws::Error> {
    let mut client = handshake.finish()?;
    let frame = client.read_frame()?;
    if frame.opcode != TEXT && frame.opcode != BINARY {
        return Err(ws::Error::Frame("first frame is not a data frame (server_ready)"));
    }
    Ok(client)
}

/// First word of a holder's report line.
const READY: &str = "ready";
/// Failures kept word for word.
const MAX_ERRORS: usize = 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_line_round_trips() {
        let report = Report { opened: 15_000, failed: 2, rss_before_kib: 900, rss_after_kib: 4 };
        assert_eq!(Report::parse(&report.line()), Some(report));
        assert_eq!(Report::parse("error: nope"), None);
    }
}
