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
    extra: Vec<String>,
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
        let extra: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
        for _attempt in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = free_port();
            let child = spawn(port, dir.path(), &extra);
            let mut server = RedisServer {
                child,
                port,
                dir,
                extra: extra.clone(),
            };
            if server.wait_ready().await {
                return server;
            }
            // Port raced with another test: try again on a new one.
            let _ = server.child.kill();
        }
        panic!("could not start a private redis-server");
    }

    /// kill -9, then a new redis-server on the same port, dir and arguments: what a
    /// crash and a supervisor restart look like. It reloads the AOF before answering.
    pub async fn restart(&mut self) {
        self.kill();
        for _attempt in 0..50 {
            self.child = spawn(self.port, self.dir.path(), &self.extra);
            if self.wait_ready().await {
                return;
            }
            // The old socket may linger for a moment: try again.
            self.kill();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("could not restart the private redis-server");
    }

    /// The server's process id (to pause it with SIGSTOP).
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
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
                    if let Ok(n) = stream.read(&mut buf).await
                        && buf[..n].starts_with(b"+PONG")
                    {
                        return true;
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

fn spawn(port: u16, dir: &std::path::Path, extra: &[String]) -> Child {
    let mut command = Command::new("redis-server");
    command
        .arg("--port")
        .arg(port.to_string())
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--dir")
        .arg(dir)
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
    command
        .spawn()
        .expect("redis-server must be installed (see .ci/run)")
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
