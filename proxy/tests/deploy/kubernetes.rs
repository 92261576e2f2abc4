//! The Kubernetes manifests: they parse, refer to each other, and their config runs.

use super::*;
use crate::docker::dockerfile;

/// Every `.yaml` / `.yml` under `dir`, recursively, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// One Kubernetes object and the file it came from.
pub(super) struct Object {
    file: PathBuf,
    value: Value,
}

impl Object {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }

    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }
}

/// Every document of every manifest; each must parse and be an object with `apiVersion`,
/// `kind` and `metadata.name`.
pub(super) fn objects() -> Vec<Object> {
    let dir = deploy_dir().join("kubernetes");
    let mut out = Vec::new();
    for file in yaml_files(&dir) {
        let text = std::fs::read_to_string(&file).expect("readable manifest");
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let value = Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: document {i}: not YAML: {e}", file.display()));
            for key in ["apiVersion", "kind"] {
                assert!(
                    value[key].as_str().is_some_and(|s| !s.is_empty()),
                    "{}: document {i}: no {key}",
                    file.display()
                );
            }
            assert!(
                value["metadata"]["name"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{}: document {i}: no metadata.name",
                file.display()
            );
            out.push(Object {
                file: file.clone(),
                value,
            });
        }
    }
    out
}

fn one<'a>(objects: &'a [Object], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Object> = objects
        .iter()
        .filter(|o| o.kind() == kind && o.name() == name)
        .collect();
    assert_eq!(found.len(), 1, "exactly one {kind} {name}");
    &found[0].value
}

pub(super) fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {v:?}"))
}

/// The ConfigMap's `flashgate.toml`.
fn config_text(objects: &[Object]) -> String {
    let cm = one(objects, "ConfigMap", "flashgate-config");
    str_of(&cm["data"]["flashgate.toml"], "data.flashgate.toml").to_owned()
}

pub(super) fn config_toml(objects: &[Object]) -> toml::Value {
    toml::from_str(&config_text(objects)).expect("flashgate.toml is TOML")
}

/// The port of a `host:port` in the config.
pub(super) fn port_of(addr: &toml::Value, what: &str) -> u16 {
    addr.as_str()
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .unwrap_or_else(|| panic!("{what}: not an address: {addr:?}"))
        .port()
}

/// The one container of the Deployment.
pub(super) fn container(objects: &[Object]) -> &Value {
    let d = one(objects, "Deployment", "flashgate");
    let containers = d["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

/// The container port called `name`.
fn container_port(c: &Value, name: &str) -> u16 {
    c["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// The environment variables the config reads its secrets from (`*_env` keys).
fn env_names(cfg: &toml::Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(v) = cfg["server"]
        .get("admin_token_env")
        .and_then(|v| v.as_str())
    {
        out.push(v.to_owned());
    }
    for k in cfg["keys"]["key"].as_array().expect("keys.key") {
        if let Some(v) = k.get("secret_env").and_then(|v| v.as_str()) {
            out.push(v.to_owned());
        }
    }
    out
}

/// The shop's Service name in the ConfigMap, which the config resolves at load: tests use a
/// local address instead, since the cluster's DNS is not here.
const SHOP_UPSTREAM: &str = "shop.shop.svc.cluster.local:8000";
const REDIS_URL: &str = "redis://redis.flashgate-data.svc.cluster.local:6379/0";

/// Config text with `from` replaced by `to`, which must occur exactly once.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} once in flashgate.toml"
    );
    text.replace(from, to)
}

const TEST_KEY: &str = "deploy-test-signing-secret-0123456789abcdef";
const TEST_TOKEN: &str = "deploy-test-admin-token-0123";

#[test]
fn manifests_parse_and_refer_to_each_other() {
    let objects = objects();
    let mut kinds: BTreeMap<(String, String), String> = BTreeMap::new();
    for o in &objects {
        let api = o.value["apiVersion"].as_str().unwrap_or("");
        let want = match o.kind() {
            "Deployment" => "apps/v1",
            "Service" | "ConfigMap" | "Secret" => "v1",
            "HorizontalPodAutoscaler" => "autoscaling/v2",
            other => panic!("{}: unexpected kind {other}", o.file.display()),
        };
        assert_eq!(api, want, "{}: {} apiVersion", o.file.display(), o.kind());
        let before = kinds.insert(
            (o.kind().to_owned(), o.name().to_owned()),
            o.file.display().to_string(),
        );
        assert!(before.is_none(), "{} {} twice", o.kind(), o.name());
    }
    let d = one(&objects, "Deployment", "flashgate");
    assert_eq!(d["spec"]["replicas"].as_u64(), Some(3));
    let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
    let selector = d["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("selector");
    for (k, v) in selector {
        assert_eq!(&pod_labels[k], v, "the selector matches the pod template");
    }
    let c = container(&objects);

    // The Services select the pods and target ports the container has.
    for name in ["flashgate", "flashgate-admin"] {
        let s = one(&objects, "Service", name);
        for (k, v) in s["spec"]["selector"].as_mapping().expect("selector") {
            assert_eq!(&pod_labels[k], v, "Service {name} selects the pods");
        }
        for p in s["spec"]["ports"].as_sequence().expect("ports") {
            container_port(c, str_of(&p["targetPort"], "targetPort"));
        }
    }

    // The HPA scales this Deployment, from its replica count up.
    let hpa = one(&objects, "HorizontalPodAutoscaler", "flashgate");
    let target = &hpa["spec"]["scaleTargetRef"];
    assert_eq!(
        (target["kind"].as_str(), target["name"].as_str()),
        (Some("Deployment"), Some("flashgate"))
    );
    assert_eq!(hpa["spec"]["minReplicas"], d["spec"]["replicas"]);
    assert!(hpa["spec"]["maxReplicas"].as_u64() > hpa["spec"]["minReplicas"].as_u64());
    assert!(
        c["resources"]["requests"]["cpu"].as_str().is_some(),
        "CPU utilisation needs a CPU request"
    );

    config_is_mounted_from_the_config_map(d, c);
    secrets_come_from_the_example_secret(&objects, c);
}

/// The config comes from the ConfigMap, mounted as a directory (a subPath mount would never
/// see an update) at the path the container runs with.
fn config_is_mounted_from_the_config_map(d: &Value, c: &Value) {
    let volumes = d["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .expect("volumes");
    let cm_volume = volumes
        .iter()
        .find(|v| v["configMap"]["name"].as_str() == Some("flashgate-config"))
        .expect("a volume of the ConfigMap");
    let mount = c["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["name"] == cm_volume["name"])
        .expect("the ConfigMap mounted");
    assert!(
        mount.get("subPath").is_none(),
        "no subPath: updates reach the pod"
    );
    let file = format!(
        "{}/flashgate.toml",
        str_of(&mount["mountPath"], "mountPath")
    );
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| str_of(a, "args"))
        .collect();
    assert_eq!(args, ["run", "-c", file.as_str()]);
}

/// Every variable the config reads a secret from comes from the Secret, and the example
/// Secret has each key; the example Secret sits apart from the manifests.
fn secrets_come_from_the_example_secret(objects: &[Object], c: &Value) {
    let cfg = config_toml(objects);
    let secret = one(objects, "Secret", "flashgate-secrets");
    let env = c["env"].as_sequence().expect("env");
    let names = env_names(&cfg);
    assert_eq!(
        names.len(),
        2,
        "the signing key and the admin token: {names:?}"
    );
    for name in names {
        let e = env
            .iter()
            .find(|e| e["name"].as_str() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("the container sets {name}"));
        let r = &e["valueFrom"]["secretKeyRef"];
        assert_eq!(r["name"].as_str(), Some("flashgate-secrets"), "{name}");
        let key = str_of(&r["key"], "secretKeyRef.key");
        assert!(
            secret["stringData"][key].as_str().is_some(),
            "the example Secret has {key}"
        );
    }
    // The example Secret is never applied with the rest by `kubectl apply -f kubernetes/`.
    let secret_file = objects
        .iter()
        .find(|o| o.kind() == "Secret")
        .map(|o| o.file.clone())
        .expect("secret file");
    assert_ne!(
        secret_file.parent(),
        Some(deploy_dir().join("kubernetes").as_path()),
        "the example Secret sits apart from the manifests"
    );
    let text = std::fs::read_to_string(&secret_file).expect("secret text");
    assert!(text.contains("PLACEHOLDER"), "clearly marked as an example");
}

#[test]
fn probes_ports_and_grace_periods_agree_with_the_config() {
    let objects = objects();
    let cfg = config_toml(&objects);
    let c = container(&objects);
    let admin = port_of(&cfg["server"]["admin_listen"], "server.admin_listen");
    let listen = port_of(&cfg["server"]["listen"][0], "server.listen[0]");
    assert_eq!(container_port(c, "admin"), admin);
    assert_eq!(container_port(c, "http"), listen);
    // Probes from the kubelet reach the pod's address, so the admin listener is not loopback
    // (and therefore has a token; `flashgate check` enforces that, see below).
    let admin_ip: SocketAddr = cfg["server"]["admin_listen"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("admin_listen");
    assert!(admin_ip.ip().is_unspecified(), "admin on all addresses");

    let probe = |name: &str| -> (String, String) {
        let g = &c[name]["httpGet"];
        (
            str_of(&g["path"], "probe path").to_owned(),
            str_of(&g["port"], "probe port").to_owned(),
        )
    };
    assert_eq!(probe("livenessProbe"), ("/healthz".into(), "admin".into()));
    // Startup waits for the store; readiness then survives a Redis outage (degraded mode).
    assert_eq!(probe("startupProbe"), ("/readyz".into(), "admin".into()));
    assert_eq!(probe("readinessProbe"), ("/healthz".into(), "admin".into()));

    // SIGKILL comes terminationGracePeriodSeconds after preStop starts: it must cover the
    // preStop sleep and then Flashgate's own grace period for requests in flight.
    let d = one(&objects, "Deployment", "flashgate");
    let termination = d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let pre_stop: Vec<&str> = c["lifecycle"]["preStop"]["exec"]["command"]
        .as_sequence()
        .expect("preStop command")
        .iter()
        .map(|a| str_of(a, "preStop"))
        .collect();
    assert_eq!(pre_stop.first(), Some(&"sleep"));
    let sleep: u64 = pre_stop
        .get(1)
        .and_then(|s| s.parse().ok())
        .expect("sleep seconds");
    let grace = humantime::parse_duration(cfg["server"]["grace_period"].as_str().expect("grace"))
        .expect("grace_period")
        .as_secs();
    assert!(sleep >= 2, "time for the endpoints to drop the pod");
    assert!(
        termination >= sleep + grace && termination <= sleep + grace + 15,
        "terminationGracePeriodSeconds {termination} vs preStop {sleep} s + grace_period {grace} s"
    );

    // Non-root, matching the image's user.
    let sc = &d["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true));
    let uid = sc["runAsUser"].as_u64().expect("runAsUser");
    assert_eq!(dockerfile().user(), format!("{uid}:{uid}"));
}

#[test]
fn configmap_config_passes_check_and_placeholders_do_not() {
    let objects = objects();
    let text = replace_once(&config_text(&objects), SHOP_UPSTREAM, "127.0.0.1:8000");
    let dir = std::env::temp_dir().join(format!("flashgate-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("flashgate.toml");
    std::fs::write(&file, &text).expect("write");
    let path = file.to_str().expect("utf-8 path");

    let out = cli(
        &["check", path],
        &[
            ("FLASHGATE_KEY_1", TEST_KEY),
            ("FLASHGATE_ADMIN_TOKEN", TEST_TOKEN),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "flashgate check: {stderr}");

    // The example Secret's placeholders cannot go live: each is refused with its key.
    let secret = one(&objects, "Secret", "flashgate-secrets");
    let placeholder = |k: &str| str_of(&secret["stringData"][k], k).to_owned();
    let key = placeholder("FLASHGATE_KEY_1");
    let token = placeholder("FLASHGATE_ADMIN_TOKEN");
    let out = cli(
        &["check", path],
        &[
            ("FLASHGATE_KEY_1", TEST_KEY),
            ("FLASHGATE_ADMIN_TOKEN", &token),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.admin_token_env: the admin token must have at least 16"),
        "{stderr}"
    );
    let out = cli(
        &["check", path],
        &[
            ("FLASHGATE_KEY_1", &key),
            ("FLASHGATE_ADMIN_TOKEN", TEST_TOKEN),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("keys.key"), "{stderr}");
    // Without the token the 0.0.0.0 admin listener is refused.
    let out = cli(&["check", path], &[("FLASHGATE_KEY_1", TEST_KEY)]);
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(dir);
}

/// The ConfigMap's config, with its addresses pointed at this machine (gate and admin on free
/// loopback ports, the test's Redis and origin), runs: the probe paths of the Deployment answer
/// 200 without a token, the API wants the token, and the Dockerfile's HEALTHCHECK command
/// passes against it and fails once it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_config_runs_and_answers_the_probes() {
    let objects = objects();
    let redis = RedisServer::start();
    let origin = Origin::start().await;
    let (port, admin) = (free_port(), free_port());
    let text = config_text(&objects);
    let text = replace_once(&text, "0.0.0.0:8080", &format!("127.0.0.1:{port}"));
    let text = replace_once(&text, "0.0.0.0:9901", &format!("127.0.0.1:{admin}"));
    let text = replace_once(&text, REDIS_URL, &redis.url());
    let text = replace_once(&text, SHOP_UPSTREAM, &origin.addr.to_string());
    let how = Launch::default()
        .env("FLASHGATE_KEY_1", TEST_KEY)
        .env("FLASHGATE_ADMIN_TOKEN", TEST_TOKEN);
    let fg = Node::launch(&Config::from_text(text, port, admin), how).await;

    let c = container(&objects);
    let http = reqwest::Client::new();
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let path = str_of(&c[probe]["httpGet"]["path"], "path");
        let r = send(http.get(format!("{}{path}", fg.admin))).await;
        assert_eq!(r.status, 200, "{probe} {path} without a token");
    }
    let rooms = format!("{}/api/rooms", fg.admin);
    let r = send(http.get(&rooms)).await;
    assert_eq!(r.status, 401, "the API wants the token");
    let r = send(http.get(format!("{rooms}/drop")).bearer_auth(TEST_TOKEN)).await;
    assert_eq!(r.status, 200);
    let report = r.json();
    assert_eq!(report["store_ok"], true, "on Redis: {report}");

    let health = dockerfile().healthcheck(admin);
    let ok = Command::new(&health[0])
        .args(&health[1..])
        .status()
        .expect("run HEALTHCHECK");
    assert!(ok.success(), "HEALTHCHECK {health:?} against a live node");
    drop(fg);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let gone = Command::new(&health[0])
        .args(&health[1..])
        .stderr(Stdio::null())
        .status()
        .expect("run HEALTHCHECK");
    assert!(!gone.success(), "HEALTHCHECK fails once the node is gone");
}
