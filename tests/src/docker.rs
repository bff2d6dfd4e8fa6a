//! The Docker engine, for tests of the deployment files in `deploy/`: an
//! image built with `deploy/build-image.sh` and containers run from it,
//! each removed (with its anonymous volumes) when dropped.
//!
//! Tests that need Docker call [`unavailable`] first and pass with a printed
//! reason when it answers `Some`: most CI hosts and developer machines have
//! no engine, and the image path is an addition to, not a condition of, the
//! process tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Why Docker cannot be used here, or `None` when `docker info` succeeds.
pub fn unavailable() -> Option<String> {
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .output()
    {
        Err(err) => Some(format!("cannot run docker: {err}")),
        Ok(out) if !out.status.success() => Some(format!(
            "docker info failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => None,
    }
}

/// Runs `docker ARGS…`; its standard output, or a message with its
/// standard error.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run docker: {err}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "docker {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The repository's `deploy/` directory.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository")
        .join("deploy")
}

/// An image built by `deploy/build-image.sh`; dropping it removes it.
pub struct Image {
    pub tag: String,
}

impl Image {
    /// Builds `tag` from `binary` (its debug sections stripped from the copy
    /// in the image, which keeps the build context small).
    pub fn build(binary: &Path, tag: &str) -> Image {
        let out = Command::new(deploy_dir().join("build-image.sh"))
            .arg(binary)
            .arg(tag)
            .env("VOMESH_STRIP", "1")
            .stdin(Stdio::null())
            .output()
            .expect("running deploy/build-image.sh");
        // Owned from here on, so a failed build's partial image is removed.
        let image = Image {
            tag: tag.to_owned(),
        };
        assert!(
            out.status.success(),
            "deploy/build-image.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        image
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if let Err(err) = docker(&["rmi", "--force", &self.tag]) {
            eprintln!("cleanup: {err}");
        }
    }
}

/// A container started with `docker run --detach`; dropping it removes it
/// and its anonymous volumes, printing its log first if the test failed.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `docker run --detach --name NAME ARGS…` (ARGS end with the image and
    /// its command).
    pub fn run(name: &str, args: &[&str]) -> Container {
        let mut all = vec!["run", "--detach", "--name", name];
        all.extend_from_slice(args);
        let container = Container {
            name: name.to_owned(),
        };
        if let Err(err) = docker(&all) {
            panic!("{err}");
        }
        container
    }

    /// `docker inspect --format FORMAT`, trimmed.
    pub fn inspect(&self, format: &str) -> String {
        docker(&["inspect", "--format", format, &self.name])
            .unwrap_or_else(|err| panic!("{err}"))
            .trim()
            .to_owned()
    }

    /// What the container wrote to stdout and stderr.
    pub fn logs(&self) -> String {
        let out = Command::new("docker")
            .args(["logs", &self.name])
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr)
            });
        out.unwrap_or_else(|err| format!("cannot read the log: {err}"))
    }

    /// Waits until Docker's health check reports the container healthy;
    /// fails early, with the log, if it stops or turns unhealthy.
    pub fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.inspect("{{.State.Status}} {{.State.Health.Status}}");
            match state.as_str() {
                "running healthy" => return,
                "running starting" => {}
                _ => panic!("container {} is {state}:\n{}", self.name, self.logs()),
            }
            assert!(
                Instant::now() < deadline,
                "container {} not healthy within {timeout:?}:\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- log of container {} ---\n{}", self.name, self.logs());
        }
        if let Err(err) = docker(&["rm", "--force", "--volumes", &self.name]) {
            eprintln!("cleanup: {err}");
        }
    }
}

/// The Compose command of this machine: `docker compose` (v2) or
/// `docker-compose` (v1), or why there is none.
pub fn compose_command() -> Result<Vec<String>, String> {
    let works = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if works("docker", &["compose", "version"]) {
        Ok(vec!["docker".into(), "compose".into()])
    } else if works("docker-compose", &["version"]) {
        Ok(vec!["docker-compose".into()])
    } else {
        Err("neither `docker compose` nor `docker-compose` works".into())
    }
}

/// A Compose project started from `deploy/compose.yml`; dropping it runs
/// `down --volumes` (containers, networks and named volumes).
pub struct ComposeProject {
    command: Vec<String>,
    pub name: String,
    env: Vec<(String, String)>,
}

impl ComposeProject {
    /// `up --detach` of `deploy/compose.yml` as project `name`, with `env`
    /// (e.g. `VOMESH_IMAGE`, `VOMESH_CERTS`) set for the file's variables.
    pub fn up(command: Vec<String>, name: &str, env: &[(&str, &str)]) -> ComposeProject {
        let project = ComposeProject {
            command,
            name: name.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        if let Err(err) = project.run(&["up", "--detach"]) {
            panic!("{err}");
        }
        project
    }

    /// Runs one compose subcommand on the project; its standard output.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        let compose_file = deploy_dir().join("compose.yml");
        let out = Command::new(&self.command[0])
            .args(&self.command[1..])
            .arg("--file")
            .arg(&compose_file)
            .args(["--project-name", &self.name])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .map_err(|err| format!("cannot run compose: {err}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "compose {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// The id of the container of `service`.
    pub fn container(&self, service: &str) -> String {
        self.run(&["ps", "--quiet", service])
            .unwrap_or_else(|err| panic!("{err}"))
            .trim()
            .to_owned()
    }

    /// Waits until every container of `services` is healthy.
    pub fn wait_healthy(&self, services: &[&str], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for service in services {
            let id = self.container(service);
            loop {
                let state = docker(&[
                    "inspect",
                    "--format",
                    "{{.State.Status}} {{.State.Health.Status}}",
                    &id,
                ])
                .unwrap_or_else(|err| panic!("{err}"));
                match state.trim() {
                    "running healthy" => break,
                    "running starting" | "running unhealthy" => {}
                    other => panic!("{service} is {other}:\n{}", self.logs()),
                }
                assert!(
                    Instant::now() < deadline,
                    "{service} not healthy within {timeout:?} ({}):\n{}",
                    state.trim(),
                    self.logs()
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }

    /// The logs of every service.
    pub fn logs(&self) -> String {
        self.run(&["logs", "--no-color"]).unwrap_or_else(|err| err)
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- logs of compose project {} ---\n{}",
                self.name,
                self.logs()
            );
        }
        if let Err(err) = self.run(&["down", "--volumes", "--timeout", "5"]) {
            eprintln!("cleanup: {err}");
        }
    }
}
