//! A real `redis-server` for the scale-out tests: started on a free loopback port with
//! persistence off, killed (SIGKILL) and restarted on the same port to play an outage.
//!
//! The Debian package `redis-server` provides the binary (`make deps` installs it); a test
//! that cannot find it fails with a message that says so. Nothing is mocked.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server` child process, killed when dropped.
pub struct Redis {
    child: Option<Child>,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
}

impl Redis {
    /// Starts a server on a free port.
    pub fn start() -> Redis {
        for _ in 0..20 {
            let port = free_port();
            if let Some(redis) = Redis::start_on(port) {
                return redis;
            }
        }
        panic!("redis-server did not start on any of 20 ports");
    }

    /// Starts a server on `port`; `None` if it did not come up (the port was taken).
    pub fn start_on(port: u16) -> Option<Redis> {
        let dir = std::env::temp_dir().join(format!("wse-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis work dir");
        let child = Command::new(binary())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server (run `make deps`): {e}"));
        let mut redis = Redis { child: Some(child), port, dir };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if redis.exited() {
                return None;
            }
            if redis.ping() {
                return Some(redis);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A connection for the test's own checks.
    pub fn connection(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("redis url");
        client.get_connection_with_timeout(Duration::from_secs(2)).expect("connect to redis")
    }

    /// Kills the server at once (SIGKILL: no goodbye to its clients) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh server on the same port (empty: no persistence).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(mut fresh) = Redis::start_on(self.port) {
                self.child = fresh.child.take();
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not restart on {}", self.port);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Freezes the server (SIGSTOP): it still accepts TCP connections (the kernel does) but
    /// answers nothing, as a hung Redis would.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("redis-server running").id().to_string();
        let status = Command::new("kill").args([&format!("-{name}"), &pid]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{name} {pid}");
    }

    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        use std::io::{Read, Write};
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut answer = [0u8; 7];
        stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
    }

    fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port nothing listens on just now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// The `redis-server` binary: `WSE_REDIS_SERVER` when set, else the one on `PATH`.
fn binary() -> String {
    std::env::var("WSE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}
