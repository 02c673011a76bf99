//! A private `redis-server` per test: own free port, own temp dir, AOF on with
//! `appendfsync always`. Killed (and its dir removed) on drop; it also dies with the
//! test process (PR_SET_PDEATHSIG), so a crashed test run leaves nothing behind.
//! Never touches the machine's shared Redis on 6379.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        Self::start_with(&["--appendonly", "yes", "--appendfsync", "always"]).await
    }

    /// Starts with extra arguments (e.g. AOF off, to test the refusal).
    pub async fn start_with(extra: &[&str]) -> RedisServer {
        for _attempt in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = free_port();
            let mut command = Command::new("redis-server");
            command
                .arg("--port")
                .arg(port.to_string())
                .arg("--bind")
                .arg("127.0.0.1")
                .arg("--dir")
                .arg(dir.path())
                .arg("--save")
                .arg("")
                .arg("--daemonize")
                .arg("no")
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: prctl is async-signal-safe; it only sets this child's death signal.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = command
                .spawn()
                .expect("redis-server must be installed (see .ci/run)");
            let mut server = RedisServer { child, port, dir };
            if server.wait_ready().await {
                return server;
            }
            // Port raced with another test: try again on a new one.
            let _ = server.child.kill();
        }
        panic!("could not start a private redis-server");
    }

    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                if stream.write_all(b"PING\r\n").await.is_ok() {
                    let mut buf = [0u8; 16];
                    if let Ok(n) = stream.read(&mut buf).await {
                        if buf[..n].starts_with(b"+PONG") {
                            return true;
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// kill -9, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
