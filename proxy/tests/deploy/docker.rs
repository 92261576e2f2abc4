//! The Dockerfile: its stages and commands.

use super::*;
use crate::kubernetes::{config_toml, container, objects, port_of, str_of};

/// A Dockerfile read as instructions: continuation lines joined, comments dropped, split into
/// stages at each `FROM`.
pub(super) struct Dockerfile {
    first_line: String,
    stages: Vec<Stage>,
}

struct Stage {
    from: String,
    name: Option<String>,
    /// (INSTRUCTION, arguments)
    steps: Vec<(String, String)>,
}

impl Stage {
    fn all(&self, instruction: &str) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|(i, _)| i == instruction)
            .map(|(_, a)| a.as_str())
            .collect()
    }

    fn last(&self, instruction: &str) -> &str {
        self.all(instruction)
            .last()
            .copied()
            .unwrap_or_else(|| panic!("no {instruction} in stage {}", self.from))
    }
}

pub(super) fn dockerfile() -> Dockerfile {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile")).expect("Dockerfile");
    let mut lines = Vec::new();
    let mut current = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        if line.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part.trim_end());
                current.push(' ');
            }
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(
        current.is_empty(),
        "the Dockerfile ends inside an instruction"
    );
    let known = [
        "FROM",
        "RUN",
        "COPY",
        "WORKDIR",
        "USER",
        "EXPOSE",
        "HEALTHCHECK",
        "STOPSIGNAL",
        "ENTRYPOINT",
        "CMD",
        "ARG",
        "ENV",
        "LABEL",
    ];
    let mut stages: Vec<Stage> = Vec::new();
    for l in lines {
        let (instruction, args) = l.split_once(' ').unwrap_or((l.as_str(), ""));
        let instruction = instruction.to_ascii_uppercase();
        assert!(
            known.contains(&instruction.as_str()),
            "unknown instruction {instruction}"
        );
        let args = args.trim().to_owned();
        if instruction == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_] => None,
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                _ => panic!("FROM {args}: expected IMAGE [AS NAME]"),
            };
            stages.push(Stage {
                from: words[0].to_owned(),
                name,
                steps: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .expect("an instruction before the first FROM")
                .steps
                .push((instruction, args));
        }
    }
    Dockerfile {
        first_line: text.lines().next().unwrap_or("").to_owned(),
        stages,
    }
}

impl Dockerfile {
    fn runtime(&self) -> &Stage {
        self.stages.last().expect("a stage")
    }

    pub(super) fn user(&self) -> String {
        self.runtime().last("USER").to_owned()
    }

    /// The HEALTHCHECK's command (exec form), aimed at `admin_port` instead of 9901.
    pub(super) fn healthcheck(&self, admin_port: u16) -> Vec<String> {
        let h = self.runtime().last("HEALTHCHECK");
        let json = &h[h.find("CMD [").expect("HEALTHCHECK ... CMD [exec form]") + 4..];
        let cmd: Vec<String> = serde_json::from_str(json).expect("exec form is JSON");
        cmd.into_iter()
            .map(|a| a.replace("127.0.0.1/9901", &format!("127.0.0.1/{admin_port}")))
            .collect()
    }
}

#[test]
fn dockerfile_stages_and_commands_are_sane() {
    let d = dockerfile();
    assert_eq!(
        d.first_line, "# syntax=docker/dockerfile:1",
        "RUN --mount needs the BuildKit syntax"
    );
    assert_eq!(d.stages.len(), 2, "build and runtime");
    let (build, runtime) = (&d.stages[0], &d.stages[1]);
    assert_eq!(build.from, "rust:1-bookworm");
    let build_name = build.name.as_deref().expect("the build stage is named");
    assert_eq!(
        runtime.from, "debian:bookworm-slim",
        "same Debian as the builder"
    );

    // Build: cmake for Pingora's zlib-ng, then the production build (release with LTO) of the
    // flashgate package.
    let runs = build.all("RUN").join("\n");
    assert!(
        runs.contains("apt-get install") && runs.contains(" cmake"),
        "{runs}"
    );
    let cargo = build
        .all("RUN")
        .into_iter()
        .find(|r| r.contains("cargo build"))
        .expect("a cargo build");
    let words: Vec<&str> = cargo.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "build")
        .expect("cargo build");
    let build_args = &words[at..];
    assert!(
        build_args
            .windows(2)
            .any(|w| w == ["--profile", "production"]),
        "{cargo}"
    );
    assert!(
        build_args.contains(&"--locked"),
        "the Cargo.lock as committed: {cargo}"
    );
    assert!(
        build_args.windows(2).any(|w| w == ["-p", "flashgate"]),
        "{cargo}"
    );
    assert!(
        cargo.contains("target/production/flashgate /out/flashgate"),
        "{cargo}"
    );

    // Runtime: the binary from the build stage, CA roots, a non-root user.
    let copy = runtime.last("COPY");
    assert_eq!(
        copy,
        format!("--from={build_name} /out/flashgate /usr/local/bin/flashgate")
    );
    let runs = runtime.all("RUN").join("\n");
    assert!(runs.contains("ca-certificates"), "{runs}");
    let user = d.user();
    let uid = user.split(':').next().unwrap_or("");
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u >= 1000),
        "numeric non-root USER: {user}"
    );
    assert!(
        runs.contains(&format!("useradd --system --uid {uid}")),
        "the user exists: {runs}"
    );
    assert!(
        runtime
            .steps
            .iter()
            .position(|(i, _)| i == "USER")
            .is_some_and(|u| runtime.steps[u..].iter().all(|(i, _)| i != "RUN")),
        "nothing runs as root after USER"
    );

    // Ports, health, entry point: as the manifests and the config expect.
    let objects = objects();
    let cfg = config_toml(&objects);
    let exposed: Vec<u16> = runtime
        .last("EXPOSE")
        .split_whitespace()
        .map(|p| p.parse().expect("EXPOSE port"))
        .collect();
    let listen = port_of(&cfg["server"]["listen"][0], "server.listen[0]");
    let admin = port_of(&cfg["server"]["admin_listen"], "server.admin_listen");
    for p in [listen, admin, 8443] {
        assert!(exposed.contains(&p), "EXPOSE {p}: {exposed:?}");
    }
    let health = d.healthcheck(9901);
    assert_eq!(health.first().map(String::as_str), Some("bash"));
    assert!(
        health.iter().any(|a| a.contains("GET /healthz")),
        "{health:?}"
    );
    assert_eq!(
        runtime.last("ENTRYPOINT"),
        r#"["/usr/local/bin/flashgate"]"#
    );
    let cmd: Vec<String> = serde_json::from_str(runtime.last("CMD")).expect("CMD exec form");
    let c = container(&objects);
    let args: Vec<String> = c["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| str_of(a, "args").to_owned())
        .collect();
    assert_eq!(cmd, args, "the image runs what the Deployment runs");
    assert_eq!(runtime.last("STOPSIGNAL"), "SIGTERM");

    // The build context leaves out what is large or private.
    let ignore = std::fs::read_to_string(deploy_dir().join("Dockerfile.dockerignore"))
        .expect("Dockerfile.dockerignore");
    let entries: Vec<&str> = ignore
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    for want in [".git", "target"] {
        assert!(entries.contains(&want), "{want} ignored: {entries:?}");
    }
}
