//! Brokers of a test's own: a server process on a free port with its own files, for fault and
//! TLS tests that must not touch the machine's shared brokers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A broker process of the test's own, on a free port, stopped gracefully (SIGTERM) so that it
/// saves what it holds, and started again with the same settings.
pub struct Private {
    child: Option<Child>,
    program: &'static str,
    args: Vec<String>,
    env: Vec<(String, String)>,
    port: u16,
}

impl Private {
    pub fn start(program: &'static str, args: Vec<String>, port: u16) -> Private {
        Self::start_with_env(program, args, Vec::new(), port)
    }

    /// `program -c <file>`, with `config` written to `file` first.
    pub fn configured(program: &'static str, file: PathBuf, config: String, port: u16) -> Private {
        std::fs::write(&file, config).unwrap();
        Self::start(program, vec!["-c".into(), file.display().to_string()], port)
    }

    /// Like [`Private::start`], with these environment variables set.
    pub fn start_with_env(
        program: &'static str,
        args: Vec<String>,
        env: Vec<(String, String)>,
        port: u16,
    ) -> Private {
        let mut p = Private {
            child: None,
            program,
            args,
            env,
            port,
        };
        p.restart();
        p
    }

    pub fn restart(&mut self) {
        let child = Command::new(self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", self.program));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "{} listens", self.program);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn scratch(dir: &Path, name: &str) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A directory `dir/mosquitto` that a private Mosquitto (which may run as a user of its own)
/// can use, with a password file holding `user` and `password`: (the directory, the file).
pub fn mosquitto_store(dir: &Path, user: &str, password: &str) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let store = scratch(dir, "mosquitto");
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o777)).unwrap();
    let passwords = store.join("passwords");
    let made = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwords)
        .args([user, password])
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::set_permissions(&passwords, std::fs::Permissions::from_mode(0o644)).unwrap();
    (store, passwords)
}
