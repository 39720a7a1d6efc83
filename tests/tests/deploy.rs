//! The deployment files in deploy/ as an operator would rely on them: every YAML file parses,
//! the Kubernetes manifests validate against the API's schemas and the compose file against
//! the compose schema, and the facts that tie them to the binaries hold: the flags and
//! `CHURNWATCH_*` variables they pass exist, the probed and scraped paths and ports are the
//! ones the services serve, the image ships every program they run as a non-root user, and
//! Prometheus and Grafana find what they are pointed at.
//!
//! The validators (PyYAML, kubernetes-validate, BuildKit's Dockerfile parser in a venv at
//! target/deploy-validators, and docker-compose) come from scripts/install-deploy-validators.sh;
//! promtool from scripts/install-prometheus.sh. A missing tool fails the test, naming the script.
//! No Docker engine is needed: the image is not built and the stack is not started here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// The programs of the image, the ones the deployment files may run.
const BINARIES: [&str; 4] = ["order-ingest", "scoring", "query", "churnwatch"];
/// The long-running services, each with its admin endpoint.
const SERVICES: [&str; 3] = ["order-ingest", "scoring", "query"];
/// Kubernetes versions the manifests are validated against: an old supported one and the
/// newest the validator knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];
const INSTALL: &str = "run scripts/install-deploy-validators.sh (scripts/test.sh does)";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the workspace root")
}

fn deploy() -> PathBuf {
    root().join("deploy")
}

fn kubernetes_dir() -> PathBuf {
    deploy().join("kubernetes")
}

/// Returns a program of the validators' virtual environment, failing with the install script's
/// name when it is missing.
fn validator(name: &str) -> PathBuf {
    let path = root().join("target/deploy-validators/bin").join(name);
    assert!(path.exists(), "{} is missing: {INSTALL}", path.display());
    path
}

/// Runs Python code in the validators' venv with arguments and returns its standard output.
fn python(code: &str, args: &[PathBuf]) -> String {
    let out = Command::new(validator("python"))
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("the validators' python cannot run ({e}): {INSTALL}"));
    assert!(
        out.status.success(),
        "python failed on {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("python prints UTF-8")
}

const LOAD_YAML: &str = r#"
import json, sys, yaml
docs = {}
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        docs[path] = [d for d in yaml.safe_load_all(f)]
print(json.dumps(docs, default=str))
"#;

/// Parses YAML files with PyYAML (anchors and merge keys resolved); returns each file's
/// documents as JSON values.
fn load_yaml(paths: &[PathBuf]) -> BTreeMap<PathBuf, Vec<Value>> {
    let out: BTreeMap<String, Vec<Value>> =
        serde_json::from_str(&python(LOAD_YAML, paths)).expect("the loader prints JSON");
    out.into_iter()
        .map(|(k, v)| (PathBuf::from(k), v))
        .collect()
}

/// Returns the only document of a YAML file.
fn yaml(path: &Path) -> Value {
    let mut docs = load_yaml(&[path.to_owned()]);
    let mut docs = docs.remove(path).expect("the loader answers for the file");
    assert_eq!(docs.len(), 1, "{} should hold one document", path.display());
    docs.remove(0)
}

/// Returns every file under `dir` whose name ends with one of `extensions`.
fn files_under(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(name) = path.file_name().and_then(|n| n.to_str())
                && extensions.iter().any(|e| name.ends_with(e))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn compose() -> Value {
    yaml(&deploy().join("compose.yaml"))
}

fn kustomization() -> Value {
    yaml(&kubernetes_dir().join("kustomization.yaml"))
}

/// Returns every Kubernetes object of the manifests (not the kustomization), with its file.
fn manifests() -> Vec<(PathBuf, Value)> {
    let files: Vec<PathBuf> = files_under(&kubernetes_dir(), &[".yaml", ".yml"])
        .into_iter()
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    load_yaml(&files)
        .into_iter()
        .flat_map(|(path, docs)| {
            docs.into_iter()
                .filter(|d| !d.is_null())
                .map(move |d| (path.clone(), d))
        })
        .collect()
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} should be a string, is {v}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| str_of(s, "an item").to_owned()).collect())
        .unwrap_or_default()
}

/// The port of a `host:port` address.
fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} has no port"))
}

/// A container the deployment files run from the churnwatch image.
#[derive(Debug, Clone)]
struct Container {
    /// Where it is declared, for messages.
    origin: String,
    /// The compose service or Kubernetes workload name.
    name: String,
    /// Its command line.
    command: Vec<String>,
    /// Its environment (variables from secrets have an empty value).
    env: BTreeMap<String, String>,
    /// The Kubernetes container or compose service definition.
    spec: Value,
    /// The Kubernetes pod spec (null for compose).
    pod: Value,
}

impl Container {
    /// Returns the program invocations its command makes (`bash -c "a && b"` makes two).
    fn invocations(&self) -> Vec<Vec<String>> {
        match self.command.as_slice() {
            [shell, flag, script] if shell == "bash" && flag == "-c" => script
                .split("&&")
                .map(|part| part.split_whitespace().map(str::to_owned).collect())
                .collect(),
            command => vec![command.to_vec()],
        }
    }

    /// The service it runs, when it runs one of the three services.
    fn service(&self) -> Option<&'static str> {
        let program = self.command.first()?;
        SERVICES.into_iter().find(|s| s == program)
    }

    fn env(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{} sets no {key}", self.origin))
    }
}

fn compose_containers() -> Vec<Container> {
    let compose = compose();
    let services = compose["services"].as_object().expect("compose services");
    services
        .iter()
        .filter(|(_, s)| {
            s["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("churnwatch"))
        })
        .map(|(name, s)| {
            let env = match &s["environment"] {
                Value::Object(m) => m
                    .iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Value::String(s) => s.clone(),
                            Value::Null => String::new(),
                            other => other.to_string(),
                        };
                        (k.clone(), v)
                    })
                    .collect(),
                Value::Array(items) => items
                    .iter()
                    .map(|i| {
                        let (k, v) = str_of(i, "an environment entry")
                            .split_once('=')
                            .unwrap_or((str_of(i, "an environment entry"), ""));
                        (k.to_owned(), v.to_owned())
                    })
                    .collect(),
                _ => BTreeMap::new(),
            };
            Container {
                origin: format!("compose service {name}"),
                name: name.clone(),
                command: strings(&s["command"]),
                env,
                spec: s.clone(),
                pod: Value::Null,
            }
        })
        .collect()
}

/// Returns the workloads (Deployments and StatefulSets) of the manifests.
fn workloads() -> Vec<Value> {
    manifests()
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| matches!(d["kind"].as_str(), Some("Deployment" | "StatefulSet")))
        .collect()
}

fn kubernetes_containers() -> Vec<Container> {
    let mut out = Vec::new();
    for w in workloads() {
        let kind = str_of(&w["kind"], "kind");
        let name = str_of(&w["metadata"]["name"], "a workload name");
        let pod = &w["spec"]["template"]["spec"];
        for c in pod["containers"].as_array().expect("containers") {
            let mut command = strings(&c["command"]);
            command.extend(strings(&c["args"]));
            let env = c["env"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .map(|v| {
                            (
                                str_of(&v["name"], "an env name").to_owned(),
                                v["value"].as_str().unwrap_or_default().to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Container {
                origin: format!("Kubernetes {kind} {name}"),
                name: name.to_owned(),
                command,
                env,
                spec: c.clone(),
                pod: pod.clone(),
            });
        }
    }
    out
}

fn all_containers() -> Vec<Container> {
    let mut all = compose_containers();
    all.extend(kubernetes_containers());
    assert!(
        all.len() >= 6,
        "expected the three services in compose and in Kubernetes: {all:#?}"
    );
    all
}

/// Returns the flags and the environment variables a binary (or one of its subcommands)
/// lists in its `--help`.
fn accepted(invocation: &[String]) -> (BTreeSet<String>, BTreeSet<String>) {
    let subcommands: Vec<&str> = invocation[1..]
        .iter()
        .take_while(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let mut args = subcommands.clone();
    args.push("--help");
    let out = churnwatch_e2e::run(&invocation[0], &args);
    let help = churnwatch_e2e::stdout(&out);
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}",
        invocation[0],
        churnwatch_e2e::stderr(&out)
    );
    let flags = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == '=')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .to_owned()
        })
        .collect();
    let envs = help
        .match_indices("[env: ")
        .map(|(i, m)| {
            help[i + m.len()..]
                .split(['=', ']'])
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .collect();
    (flags, envs)
}

#[test]
fn every_yaml_file_under_deploy_parses() {
    // Fails when any YAML file under deploy/ has a syntax error or holds no document.
    let files = files_under(&deploy(), &[".yaml", ".yml"]);
    assert!(files.len() >= 12, "{files:?}");
    let docs = load_yaml(&files);
    for file in &files {
        let parsed = &docs[file];
        assert!(
            parsed.iter().any(|d| !d.is_null()),
            "{} holds no YAML document",
            file.display()
        );
    }
}

#[test]
fn the_kubernetes_manifests_validate_against_the_api_schemas() {
    // Fails when a manifest breaks its Kubernetes schema (an unknown or misspelt field, a
    // wrong type, a missing required field) or has a kind the validator has no schema for.
    let files: Vec<PathBuf> = files_under(&kubernetes_dir(), &[".yaml", ".yml"])
        .into_iter()
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    let objects = manifests().len();
    assert!(objects >= 7, "{files:?}");
    for version in KUBERNETES_VERSIONS {
        let out = Command::new(validator("kubernetes-validate"))
            .args(["--strict", "-k", version])
            .args(&files)
            .output()
            .unwrap_or_else(|e| panic!("kubernetes-validate cannot run ({e}): {INSTALL}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "Kubernetes {version}:\n{text}");
        assert!(
            !text.contains("ERROR") && !text.contains("WARN"),
            "Kubernetes {version}:\n{text}"
        );
        assert_eq!(
            text.matches("passed for resource").count(),
            objects,
            "every object validated against Kubernetes {version}:\n{text}"
        );
    }
}

#[test]
fn the_compose_file_validates_against_the_compose_schema() {
    // Fails when compose.yaml breaks the compose schema (an unknown key, a wrong type, a
    // dependency on an undefined service), lacks a service, runs Kafka with ZooKeeper, points
    // the services at a listener Kafka does not advertise, starts them before Kafka, or gives
    // them different partition counts.
    let out = Command::new("docker-compose")
        .args(["-f", "deploy/compose.yaml", "config", "-q"])
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("docker-compose cannot run ({e}): {INSTALL}"));
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Every churnwatch service and its infrastructure is there.
    let compose = compose();
    for service in [
        "kafka",
        "order-ingest",
        "scoring",
        "query",
        "prometheus",
        "grafana",
    ] {
        assert!(
            compose["services"][service].is_object(),
            "no {service} service"
        );
    }
    let kafka = &compose["services"]["kafka"]["environment"];
    assert!(
        kafka["KAFKA_PROCESS_ROLES"]
            .as_str()
            .is_some_and(|r| r.contains("controller")),
        "Kafka runs in KRaft mode (its own controller): {kafka}"
    );
    // Every partition count agrees: a service refuses to start when a topic it finds has
    // another count than it would create.
    let mut counts = BTreeSet::new();
    for c in compose_containers() {
        counts.extend(c.env.get("CHURNWATCH_PARTITIONS").cloned());
        for invocation in c.invocations() {
            let mut args = invocation.iter();
            while let Some(arg) = args.next() {
                if arg == "--partitions" {
                    counts.extend(args.next().cloned());
                }
            }
        }
    }
    assert_eq!(
        counts.len(),
        1,
        "partition counts in compose.yaml: {counts:?}"
    );
    // The services reach Kafka by its service name on the listener it advertises.
    let advertised = str_of(&kafka["KAFKA_ADVERTISED_LISTENERS"], "advertised listeners");
    for c in compose_containers()
        .iter()
        .filter(|c| c.service().is_some())
    {
        let brokers = c.env("CHURNWATCH_BROKERS");
        assert!(
            advertised.contains(&format!("//{brokers}")),
            "{} uses {brokers}, which Kafka does not advertise ({advertised})",
            c.origin
        );
        assert!(
            c.spec["depends_on"]["kafka"].is_object(),
            "{} starts after Kafka",
            c.origin
        );
    }
}

#[test]
fn the_kustomization_lists_every_manifest_and_names_what_the_pods_use() {
    // Fails when a manifest in deploy/kubernetes is not applied by `kubectl apply -k` (or a
    // listed one is missing), when the pods mount a ConfigMap or name an image the
    // kustomization does not provide, or when CHURNWATCH_CONFIG points beside the mounted file.
    let k = kustomization();
    let mut listed: BTreeSet<String> = strings(&k["resources"]).into_iter().collect();
    let generators = k["configMapGenerator"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut generated = BTreeMap::new();
    for g in &generators {
        let files = strings(&g["files"]);
        listed.extend(files.iter().cloned());
        generated.insert(str_of(&g["name"], "a generator name").to_owned(), files);
    }
    let present: BTreeSet<String> = std::fs::read_dir(kubernetes_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed, present,
        "kustomization.yaml against deploy/kubernetes"
    );

    let namespace = str_of(&k["namespace"], "the kustomization's namespace");
    assert!(
        manifests()
            .iter()
            .any(|(_, d)| d["kind"] == "Namespace" && d["metadata"]["name"] == namespace),
        "the manifests create the namespace {namespace}"
    );
    let images: BTreeSet<&str> = k["images"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| str_of(&i["name"], "an image name"))
                .collect()
        })
        .unwrap_or_default();
    for c in kubernetes_containers() {
        let image = str_of(&c.spec["image"], "an image");
        assert!(
            images.contains(image.split(':').next().unwrap_or(image)),
            "{} runs {image}, which kustomization.yaml's images do not set",
            c.origin
        );
        // The configuration file is the generated ConfigMap, mounted where CHURNWATCH_CONFIG says.
        let config = c.env("CHURNWATCH_CONFIG");
        let volumes = c.pod["volumes"].as_array().cloned().unwrap_or_default();
        let found = c.spec["volumeMounts"]
            .as_array()
            .expect("volume mounts")
            .iter()
            .any(|m| {
                let mount = str_of(&m["mountPath"], "a mount path");
                let Some(file) = config.strip_prefix(&format!("{mount}/")) else {
                    return false;
                };
                volumes.iter().any(|v| {
                    v["name"] == m["name"]
                        && v["configMap"]["name"]
                            .as_str()
                            .and_then(|n| generated.get(n))
                            .is_some_and(|files| files.contains(&file.to_owned()))
                })
            });
        assert!(
            found,
            "{}: CHURNWATCH_CONFIG={config} is not a file of a generated ConfigMap mounted there",
            c.origin
        );
    }
}

#[test]
fn the_deployments_pass_only_flags_and_variables_the_binaries_accept() {
    // Fails when a compose service or a manifest runs a program the image does not have, or
    // passes a flag or a CHURNWATCH_* variable its binary does not list in --help (a typo, or
    // an option that was renamed), or a variable that is not CHURNWATCH_* at all.
    let mut checked = 0;
    for c in all_containers() {
        for invocation in c.invocations() {
            let program = invocation.first().expect("a command");
            assert!(
                BINARIES.contains(&program.as_str()),
                "{} runs {program}, which is not one of the image's programs {BINARIES:?}",
                c.origin
            );
            let (flags, envs) = accepted(&invocation);
            for arg in invocation.iter().filter(|a| a.starts_with("--")) {
                let flag = arg.split('=').next().unwrap_or(arg);
                assert!(
                    flags.contains(flag),
                    "{}: `{}` has no flag {flag} (it has {flags:?})",
                    c.origin,
                    invocation.join(" ")
                );
                checked += 1;
            }
            if c.service().is_some() {
                for key in c.env.keys() {
                    assert!(
                        envs.contains(key),
                        "{}: {program} reads no {key} (it reads {envs:?})",
                        c.origin
                    );
                    checked += 1;
                }
            }
        }
        for key in c.env.keys() {
            assert!(
                key.starts_with("CHURNWATCH_"),
                "{}: {key} is not a churnwatch variable",
                c.origin
            );
        }
    }
    assert!(checked >= 20, "only {checked} flags and variables checked");
}

/// Returns a Kubernetes container's port number by name (or the number itself).
fn container_port(c: &Container, port: &Value) -> u16 {
    if let Some(n) = port.as_u64() {
        return n as u16;
    }
    let name = str_of(port, "a port");
    c.spec["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["name"] == name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("{} has no port named {name}", c.origin)) as u16
}

#[test]
fn probes_scrapes_and_published_ports_are_the_admin_and_grpc_ports_the_services_listen_on() {
    // Fails when a probe, a Prometheus annotation, a containerPort, a compose health check or
    // a published port names another port or path than the one the service is told to listen
    // on, or when a service listens on loopback only (unreachable for kubelet and Prometheus).
    for c in kubernetes_containers() {
        let service = c.service().expect("every workload runs a service");
        let admin = c.env("CHURNWATCH_ADMIN_ADDR");
        assert!(
            admin.starts_with("0.0.0.0:"),
            "{}: admin on {admin} is unreachable from outside the pod",
            c.origin
        );
        let port = port_of(admin);
        assert_eq!(
            container_port(&c, &Value::from("admin")),
            port,
            "{}",
            c.origin
        );
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = &c.spec[probe]["httpGet"];
            assert_eq!(get["path"], path, "{}: {probe}", c.origin);
            assert_eq!(
                container_port(&c, &get["port"]),
                port,
                "{}: {probe}",
                c.origin
            );
        }
        if service == "query" {
            let grpc = c.env("CHURNWATCH_GRPC_ADDR");
            assert!(grpc.starts_with("0.0.0.0:"), "{}: gRPC on {grpc}", c.origin);
            assert_eq!(
                container_port(&c, &Value::from("grpc")),
                port_of(grpc),
                "{}",
                c.origin
            );
        }
    }
    // The scrape annotations sit on the pod templates.
    for w in workloads() {
        let template = &w["spec"]["template"];
        let container = &template["spec"]["containers"][0];
        let admin = container["env"]
            .as_array()
            .and_then(|e| e.iter().find(|v| v["name"] == "CHURNWATCH_ADMIN_ADDR"))
            .and_then(|v| v["value"].as_str())
            .map(port_of)
            .expect("an admin address");
        let a = &template["metadata"]["annotations"];
        assert_eq!(
            a["prometheus.io/scrape"], "true",
            "{}",
            w["metadata"]["name"]
        );
        assert_eq!(
            a["prometheus.io/port"],
            admin.to_string(),
            "{}",
            w["metadata"]["name"]
        );
        assert_eq!(
            a["prometheus.io/path"], "/metrics",
            "{}",
            w["metadata"]["name"]
        );
    }
    // Services point at ports their pods declare, with the same numbers.
    let containers = kubernetes_containers();
    let labels: BTreeMap<String, Value> = workloads()
        .into_iter()
        .map(|w| {
            (
                str_of(&w["metadata"]["name"], "a workload name").to_owned(),
                w["spec"]["template"]["metadata"]["labels"].clone(),
            )
        })
        .collect();
    for (_, s) in manifests().iter().filter(|(_, d)| d["kind"] == "Service") {
        let name = str_of(&s["metadata"]["name"], "a service name");
        let selector = s["spec"]["selector"].as_object().expect("a selector");
        let pods: Vec<&Container> = containers
            .iter()
            .filter(|c| selector.iter().all(|(k, v)| labels[&c.name][k] == *v))
            .collect();
        assert!(!pods.is_empty(), "Service {name} selects no pod");
        for p in s["spec"]["ports"].as_array().expect("ports") {
            for c in &pods {
                assert_eq!(
                    container_port(c, &p["targetPort"]),
                    p["port"].as_u64().unwrap() as u16,
                    "Service {name} port {}",
                    p["name"]
                );
            }
        }
    }

    for c in compose_containers()
        .iter()
        .filter(|c| c.service().is_some())
    {
        let admin = c.env("CHURNWATCH_ADMIN_ADDR");
        assert!(
            admin.starts_with("0.0.0.0:"),
            "{}: admin on {admin}",
            c.origin
        );
        let port = port_of(admin);
        let check = strings(&c.spec["healthcheck"]["test"]).join(" ");
        assert!(
            check.contains(&format!("/dev/tcp/127.0.0.1/{port} "))
                && check.contains("GET /readyz "),
            "{}: the health check should ask /readyz on {port}: {check}",
            c.origin
        );
        let published = strings(&c.spec["ports"]);
        assert!(
            published.iter().any(|p| p.ends_with(&format!(":{port}"))),
            "{}: admin port {port} is not published: {published:?}",
            c.origin
        );
        if c.service() == Some("query") {
            let grpc = port_of(c.env("CHURNWATCH_GRPC_ADDR"));
            assert!(
                published.iter().any(|p| p.ends_with(&format!(":{grpc}"))),
                "{}: gRPC port {grpc} is not published: {published:?}",
                c.origin
            );
        }
    }
}

/// Returns the pieces of a Kubernetes probe's or a compose health check's HTTP request: the
/// liveness and readiness paths.
fn probe_paths(c: &Container) -> (String, String) {
    if c.pod.is_null() {
        let check = strings(&c.spec["healthcheck"]["test"]).join(" ");
        let path = check
            .split("GET ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("{}: no GET in the health check", c.origin))
            .to_owned();
        // compose has one check: readiness; liveness is the process itself.
        ("/healthz".to_owned(), path)
    } else {
        (
            str_of(&c.spec["livenessProbe"]["httpGet"]["path"], "a path").to_owned(),
            str_of(&c.spec["readinessProbe"]["httpGet"]["path"], "a path").to_owned(),
        )
    }
}

#[test]
fn each_service_starts_with_its_deployed_configuration_and_serves_the_probed_paths() {
    // Runs each service binary with the environment and command the compose file and the
    // manifests give it (the Kubernetes ConfigMap's churnwatch.toml as its --config), with only
    // addresses and directories moved to loopback and a temporary directory, and no broker.
    // Fails when a service rejects that configuration (an unknown key in churnwatch.toml, a bad
    // value), when the liveness path does not answer 200 or the readiness path answers anything
    // but 200 or 503 (e.g. 404 for a path the admin endpoint does not serve), or when /metrics
    // (what the scrape annotations name) is not served.
    let toml = kubernetes_dir().join("churnwatch.toml");
    for c in all_containers() {
        let Some(service) = c.service() else { continue };
        let dir = tempfile::tempdir().unwrap();
        let dead_broker = format!("127.0.0.1:{}", churnwatch_testkit::free_port());
        let grpc = format!("127.0.0.1:{}", churnwatch_testkit::free_port());
        let mut env: BTreeMap<String, String> = c
            .env
            .iter()
            .map(|(key, value)| {
                let local = match key.as_str() {
                    "CHURNWATCH_ADMIN_ADDR" => "127.0.0.1:0".to_owned(),
                    "CHURNWATCH_GRPC_ADDR" => grpc.clone(),
                    "CHURNWATCH_CONFIG" => toml.to_string_lossy().into_owned(),
                    k if k.ends_with("_DIR") => dir.path().join(k).to_string_lossy().into_owned(),
                    _ => value.clone(),
                };
                (key.clone(), local)
            })
            .collect();
        env.insert("CHURNWATCH_BROKERS".into(), dead_broker);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let args: Vec<&str> = c.command[1..].iter().map(String::as_str).collect();
        let mut process = churnwatch_testkit::Service::start(
            &churnwatch_e2e::bin(service),
            &args,
            &env,
            dir.path(),
        );
        let mut admin = None;
        let up = churnwatch_testkit::wait_until(Duration::from_secs(30), || {
            admin = process.admin_addr();
            admin.is_some() || !process.running()
        });
        let admin = admin.unwrap_or_else(|| {
            panic!(
                "{} did not start its admin endpoint (started: {up}):\n{}",
                c.origin,
                process.log()
            )
        });
        let (live, ready) = probe_paths(&c);
        let (status, body) = churnwatch_testkit::http_get(&admin, &live).unwrap();
        assert_eq!(status, 200, "{}: GET {live}: {body}", c.origin);
        let (status, body) = churnwatch_testkit::http_get(&admin, &ready).unwrap();
        assert!(
            status == 200 || status == 503,
            "{}: GET {ready} answered {status}: {body}",
            c.origin
        );
        let (status, body) = churnwatch_testkit::http_get(&admin, "/metrics").unwrap();
        assert_eq!(status, 200, "{}: GET /metrics", c.origin);
        assert!(body.contains("churnwatch_"), "{}: {body}", c.origin);
        assert!(process.running(), "{}:\n{}", c.origin, process.log());
        // How it shuts down is not this test's business (while it waits for brokers that never
        // answer, SIGTERM takes one metadata timeout).
        process.kill9();
    }
}

const LOAD_DOCKERFILE: &str = r#"
import json, sys, dockerfile
print(json.dumps([
    {"cmd": c.cmd.upper(), "flags": list(c.flags), "value": list(c.value)}
    for c in dockerfile.parse_file(sys.argv[1])
]))
"#;

/// A Dockerfile instruction, as BuildKit's parser reads it.
#[derive(Debug, Clone)]
struct Instruction {
    cmd: String,
    flags: Vec<String>,
    value: Vec<String>,
}

/// Returns the Dockerfile's stages: their names and instructions.
fn dockerfile_stages() -> Vec<(String, Vec<Instruction>)> {
    let text = python(LOAD_DOCKERFILE, &[deploy().join("Dockerfile")]);
    let parsed: Value = serde_json::from_str(&text).expect("the parser prints JSON");
    let instructions = parsed
        .as_array()
        .expect("a list of instructions")
        .iter()
        .map(|i| Instruction {
            cmd: str_of(&i["cmd"], "an instruction").to_owned(),
            flags: strings(&i["flags"]),
            value: strings(&i["value"]),
        });
    let mut stages: Vec<(String, Vec<Instruction>)> = Vec::new();
    for i in instructions {
        if i.cmd == "FROM" {
            let name = match i.value.as_slice() {
                [_, keyword, name] if keyword.eq_ignore_ascii_case("as") => name.clone(),
                _ => stages.len().to_string(),
            };
            stages.push((name, Vec::new()));
        } else if let Some((_, body)) = stages.last_mut() {
            body.push(i);
        }
    }
    stages
}

/// Returns the user id the image runs as (its final stage's USER).
fn image_uid() -> u32 {
    let stages = dockerfile_stages();
    let (_, last) = stages.last().expect("a stage");
    let user = last
        .iter()
        .rev()
        .find(|i| i.cmd == "USER")
        .expect("the final stage sets USER");
    let uid = user.value[0].split(':').next().unwrap_or_default();
    uid.parse()
        .unwrap_or_else(|_| panic!("USER {uid} should be numeric, so runAsNonRoot can check it"))
}

/// Returns every program the compose file and the manifests run.
fn programs_run() -> BTreeSet<String> {
    all_containers()
        .iter()
        .flat_map(Container::invocations)
        .filter_map(|i| i.first().cloned())
        .collect()
}

#[test]
fn the_dockerfile_is_multi_stage_runs_as_a_non_root_user_and_ships_every_program_run() {
    // Fails when the Dockerfile does not parse, has a single stage, ends as root (or a
    // non-numeric user), or when a program the compose file or the manifests run is not built
    // by the build stage and copied into the final stage on PATH; also when .dockerignore lets
    // target/ or .git into the build context.
    let stages = dockerfile_stages();
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    let uid = image_uid();
    assert_ne!(uid, 0, "the image must not run as root");

    let (_, last) = stages.last().unwrap();
    let copies: Vec<&Instruction> = last
        .iter()
        .filter(|i| i.cmd == "COPY" && i.flags.iter().any(|f| f.starts_with("--from=")))
        .collect();
    assert!(
        !copies.is_empty(),
        "the final stage copies from a build stage"
    );
    let programs = programs_run();
    assert!(programs.len() >= 4, "{programs:?}");
    for copy in copies {
        let from = copy
            .flags
            .iter()
            .find_map(|f| f.strip_prefix("--from="))
            .expect("a --from flag");
        let (_, build) = stages
            .iter()
            .find(|(name, _)| name == from)
            .unwrap_or_else(|| panic!("COPY --from={from} names no earlier stage"));
        let source = &copy.value[0];
        let dest = copy.value.last().unwrap();
        assert!(
            ["/usr/local/bin/", "/usr/local/bin", "/usr/bin/", "/usr/bin"].contains(&dest.as_str()),
            "the programs are run by bare name, so they belong on PATH, not in {dest}"
        );
        let run = build
            .iter()
            .filter(|i| i.cmd == "RUN")
            .map(|i| i.value.join(" "))
            .find(|r| r.contains("cargo build"))
            .expect("the build stage runs cargo build");
        assert!(
            run.contains("--release") && run.contains("--locked"),
            "{run}"
        );
        assert!(
            run.contains(source.as_str()),
            "the build stage fills {source}: {run}"
        );
        for program in &programs {
            assert!(
                run.contains(&format!("-p {program}"))
                    && run.contains(&format!("target/release/{program}")),
                "the image does not build and ship {program}: {run}"
            );
        }
    }
    let ignore = std::fs::read_to_string(root().join(".dockerignore"))
        .expect("a .dockerignore beside the build context's root");
    let ignored: BTreeSet<&str> = ignore
        .lines()
        .map(|l| l.trim().trim_start_matches('/').trim_end_matches('/'))
        .collect();
    for must in ["target", ".git"] {
        assert!(
            ignored.contains(must),
            ".dockerignore should leave out {must}"
        );
    }
}

#[test]
fn the_runtime_image_installs_every_shared_library_the_binaries_link() {
    // Fails when a binary links a shared library (ldd) whose Debian package the final stage
    // does not install and debian:bookworm-slim does not have (libc6, libgcc-s1), e.g. after a
    // dependency starts linking libsasl2 or libzstd dynamically.
    let stages = dockerfile_stages();
    let (_, last) = stages.last().unwrap();
    let installs = last
        .iter()
        .filter(|i| i.cmd == "RUN")
        .map(|i| i.value.join(" "))
        .collect::<Vec<_>>()
        .join(" && ");
    let mut installed: BTreeSet<String> = installs
        .split("apt-get install")
        .skip(1)
        .flat_map(|rest| {
            rest.split("&&")
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .filter(|w| !w.starts_with('-'))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    installed.extend(["libc6".to_owned(), "libgcc-s1".to_owned()]);
    for program in programs_run() {
        let binary = churnwatch_e2e::bin(&program);
        let out = Command::new("ldd").arg(&binary).output().expect("ldd runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let libraries: Vec<&str> = text
            .lines()
            .filter_map(|l| {
                let path = l
                    .split("=>")
                    .nth(1)
                    .unwrap_or(l)
                    .split_whitespace()
                    .next()?;
                path.starts_with('/').then_some(path)
            })
            .collect();
        assert!(libraries.len() >= 3, "ldd {}: {text}", binary.display());
        for library in libraries {
            let owner = [library.to_owned(), format!("/usr{library}")]
                .iter()
                .find_map(|p| {
                    let o = Command::new("dpkg-query").args(["-S", p]).output().ok()?;
                    o.status.success().then(|| {
                        String::from_utf8_lossy(&o.stdout)
                            .split(':')
                            .next()
                            .unwrap_or_default()
                            .to_owned()
                    })
                })
                .unwrap_or_else(|| {
                    panic!("no Debian package owns {library} (dpkg-query -S), linked by {program}")
                });
            assert!(
                installed.contains(&owner),
                "{program} links {library} from {owner}, which the runtime stage does not install ({installed:?})"
            );
        }
    }
}

#[test]
fn the_pods_run_as_the_image_user_with_resources_and_write_only_to_volumes() {
    // Fails when a pod may run as root or as another user than the image's, keeps privileges,
    // has a writable root file system or a directory it writes (CHURNWATCH_*_DIR) that is not a
    // volume, lacks resource requests or limits; when scoring is not a StatefulSet with one
    // volume claim per replica mounted at its state directory behind a headless Service, or
    // runs more than one replica (see deploy/README.md); when query's view is not a volume or
    // its disruption budget does not cover its pods. The same for compose's read-only services.
    let uid = u64::from(image_uid());
    let manifests = manifests();
    for c in kubernetes_containers() {
        let pod = &c.pod["securityContext"];
        assert_eq!(pod["runAsNonRoot"].as_bool(), Some(true), "{}", c.origin);
        assert_eq!(
            pod["runAsUser"].as_u64(),
            Some(uid),
            "{}: the image's uid",
            c.origin
        );
        let security = &c.spec["securityContext"];
        assert_eq!(
            security["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{}",
            c.origin
        );
        assert_eq!(
            security["readOnlyRootFilesystem"].as_bool(),
            Some(true),
            "{}",
            c.origin
        );
        assert!(
            strings(&security["capabilities"]["drop"]).contains(&"ALL".to_owned()),
            "{}",
            c.origin
        );
        for kind in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    c.spec["resources"][kind][resource].is_string(),
                    "{}: no {kind}.{resource}",
                    c.origin
                );
            }
        }
        let mounts: BTreeMap<String, String> = c.spec["volumeMounts"]
            .as_array()
            .expect("volume mounts")
            .iter()
            .map(|m| {
                (
                    str_of(&m["mountPath"], "a mount path").to_owned(),
                    str_of(&m["name"], "a volume").to_owned(),
                )
            })
            .collect();
        for (key, dir) in c.env.iter().filter(|(k, _)| k.ends_with("_DIR")) {
            let volume = mounts.get(dir).unwrap_or_else(|| {
                panic!(
                    "{}: {key}={dir} is not a volume, and the root file system is read-only",
                    c.origin
                )
            });
            assert_eq!(
                pod["fsGroup"].as_u64(),
                Some(uid),
                "{}: {volume} writable",
                c.origin
            );
        }
    }

    let scoring = workloads()
        .into_iter()
        .find(|w| w["metadata"]["name"] == "scoring")
        .expect("a scoring workload");
    assert_eq!(scoring["kind"], "StatefulSet");
    assert_eq!(
        scoring["spec"]["replicas"], 1,
        "scoring's state does not follow a partition to another replica: read deploy/README.md before scaling it out"
    );
    let claim = str_of(
        &scoring["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "a volume claim template",
    );
    let container = &scoring["spec"]["template"]["spec"]["containers"][0];
    let state_dir = container["env"]
        .as_array()
        .and_then(|e| e.iter().find(|v| v["name"] == "CHURNWATCH_STATE_DIR"))
        .map(|v| v["value"].clone())
        .expect("CHURNWATCH_STATE_DIR");
    assert!(
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == claim && m["mountPath"] == state_dir),
        "the claim {claim} holds the state directory {state_dir}"
    );
    let headless = manifests
        .iter()
        .find(|(_, d)| {
            d["kind"] == "Service" && d["metadata"]["name"] == scoring["spec"]["serviceName"]
        })
        .map(|(_, d)| d)
        .expect("the StatefulSet's serviceName is a Service of the manifests");
    assert_eq!(headless["spec"]["clusterIP"], "None", "a headless Service");

    let query = workloads()
        .into_iter()
        .find(|w| w["metadata"]["name"] == "query")
        .expect("a query workload");
    assert_eq!(query["kind"], "Deployment");
    let labels = &query["spec"]["template"]["metadata"]["labels"];
    let budget = manifests
        .iter()
        .find(|(_, d)| d["kind"] == "PodDisruptionBudget")
        .map(|(_, d)| d)
        .expect("a disruption budget for query");
    for (k, v) in budget["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&labels[k], v, "the budget selects query's pods");
    }
    assert!(
        budget["spec"]["minAvailable"].as_u64().unwrap()
            < query["spec"]["replicas"].as_u64().unwrap(),
        "a budget as large as the replicas would block every drain"
    );

    let compose = compose();
    for c in compose_containers()
        .iter()
        .filter(|c| c.service().is_some())
    {
        assert_eq!(c.spec["read_only"].as_bool(), Some(true), "{}", c.origin);
        let volumes = strings(&c.spec["volumes"]);
        for (key, dir) in c.env.iter().filter(|(k, _)| k.ends_with("_DIR")) {
            let volume = volumes
                .iter()
                .find_map(|v| v.strip_suffix(&format!(":{dir}")))
                .unwrap_or_else(|| panic!("{}: {key}={dir} is not a volume", c.origin));
            assert!(
                compose["volumes"].get(volume).is_some(),
                "{}: {volume} is a named volume",
                c.origin
            );
        }
    }
}

fn promtool_check_config(path: &Path) {
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool cannot run ({e}): run scripts/install-prometheus.sh (scripts/test.sh does)")
        });
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Returns the job names of a Prometheus configuration.
fn job_names(config: &Value) -> BTreeSet<String> {
    config["scrape_configs"]
        .as_array()
        .expect("scrape configs")
        .iter()
        .map(|j| str_of(&j["job_name"], "a job name").to_owned())
        .collect()
}

/// Returns the host source of a compose bind mount whose target is `target`, relative to deploy/.
fn mounted_at(service: &Value, target: &str) -> Option<PathBuf> {
    strings(&service["volumes"]).iter().find_map(|v| {
        let mut parts = v.split(':');
        let source = parts.next()?;
        (parts.next()? == target && source.starts_with('.')).then(|| deploy().join(source))
    })
}

#[test]
fn the_compose_prometheus_scrapes_every_service_by_name_with_the_rules() {
    // Fails when the compose Prometheus configuration is invalid (promtool), when a target is
    // not a compose service at the admin port that service is told to listen on, when a service
    // is not scraped, when its job names differ from prometheus.yml's (the alerts match them),
    // or when a rule file it loads is not mounted beside it.
    let compose = compose();
    let prometheus = &compose["services"]["prometheus"];
    let config_path = mounted_at(prometheus, "/etc/prometheus/prometheus.yml")
        .expect("compose mounts a configuration at /etc/prometheus/prometheus.yml");
    promtool_check_config(&config_path);
    let config = yaml(&config_path);
    let shipped = yaml(&deploy().join("prometheus/prometheus.yml"));
    assert_eq!(job_names(&config), job_names(&shipped));

    let admin: BTreeMap<String, u16> = compose_containers()
        .iter()
        .filter(|c| c.service().is_some())
        .map(|c| (c.name.clone(), port_of(c.env("CHURNWATCH_ADMIN_ADDR"))))
        .collect();
    let mut scraped = BTreeSet::new();
    for job in config["scrape_configs"].as_array().unwrap() {
        let name = str_of(&job["job_name"], "a job name");
        for target in job["static_configs"]
            .as_array()
            .expect("static targets")
            .iter()
            .flat_map(|s| strings(&s["targets"]))
        {
            let (host, port) = target.rsplit_once(':').expect("host:port");
            assert_eq!(
                admin.get(host).copied(),
                port.parse().ok(),
                "job {name} scrapes {target}, which is no compose service's admin endpoint ({admin:?})"
            );
            assert_eq!(
                name,
                format!("churnwatch-{host}"),
                "job names follow prometheus.yml"
            );
            scraped.insert(host.to_owned());
        }
    }
    assert_eq!(
        scraped,
        admin.keys().cloned().collect(),
        "every service is scraped"
    );
    for rule in strings(&config["rule_files"]) {
        let source = mounted_at(prometheus, &format!("/etc/prometheus/{rule}"))
            .unwrap_or_else(|| panic!("{rule} is not mounted beside the configuration"));
        assert!(source.is_file(), "{}", source.display());
    }
}

#[test]
fn the_kubernetes_scrape_configuration_finds_the_pods_the_manifests_declare() {
    // Fails when prometheus-kubernetes.yml looks in another namespace than the kustomization's,
    // keeps a port name the containers do not declare, or names jobs other than
    // prometheus.yml's from the pods' labels (the alerts match those job names).
    let config = yaml(&deploy().join("prometheus/prometheus-kubernetes.yml"));
    let job = &config["scrape_configs"][0];
    let namespace = &job["kubernetes_sd_configs"][0]["namespaces"]["names"][0];
    assert_eq!(namespace, &kustomization()["namespace"]);
    let relabel = job["relabel_configs"].as_array().expect("relabel configs");
    let keep_port = relabel
        .iter()
        .find(|r| r["source_labels"][0] == "__meta_kubernetes_pod_container_port_name")
        .expect("a rule keeping the admin port");
    let naming = relabel
        .iter()
        .find(|r| r["target_label"] == "job")
        .expect("a rule naming the job");
    let label = str_of(&naming["source_labels"][0], "a label")
        .strip_prefix("__meta_kubernetes_pod_label_")
        .expect("the job comes from a pod label")
        .to_owned();
    let replacement = str_of(&naming["replacement"], "a replacement");
    let mut jobs = BTreeSet::new();
    for w in workloads() {
        let template = &w["spec"]["template"];
        let value = template["metadata"]["labels"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(k, _)| k.replace(['.', '/', '-'], "_") == label)
            .map(|(_, v)| str_of(v, "a label value").to_owned())
            .unwrap_or_else(|| panic!("{} has no label for {label}", w["metadata"]["name"]));
        jobs.insert(replacement.replace("$1", &value));
        assert!(
            template["spec"]["containers"][0]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == keep_port["regex"]),
            "{} declares no port named {}",
            w["metadata"]["name"],
            keep_port["regex"]
        );
    }
    assert_eq!(
        jobs,
        job_names(&yaml(&deploy().join("prometheus/prometheus.yml")))
    );
}

#[test]
fn grafana_is_provisioned_with_the_compose_prometheus_and_the_dashboard() {
    // Fails when the provisioned data source does not point at the compose Prometheus, when the
    // dashboard provider reads another directory than the one compose mounts the dashboard
    // into, or when a panel names a data source that neither a provisioned uid nor a
    // data-source variable of the dashboard resolves (Grafana does not substitute __inputs
    // when it provisions a dashboard).
    let compose = compose();
    let grafana = &compose["services"]["grafana"];
    let provisioning = mounted_at(grafana, "/etc/grafana/provisioning")
        .expect("compose mounts the provisioning directory");
    let datasources = yaml(&provisioning.join("datasources/prometheus.yaml"));
    let source = &datasources["datasources"][0];
    assert_eq!(source["type"], "prometheus");
    assert_eq!(source["isDefault"].as_bool(), Some(true));
    let url = str_of(&source["url"], "a url");
    let (host, port) = url
        .trim_start_matches("http://")
        .split_once(':')
        .expect("http://host:port");
    let prometheus = &compose["services"][host];
    assert!(
        prometheus["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("prom/prometheus")),
        "{url} is not the compose Prometheus"
    );
    assert!(
        strings(&prometheus["ports"])
            .iter()
            .any(|p| p.ends_with(&format!(":{port}"))),
        "Prometheus listens on {port}"
    );

    let providers = yaml(&provisioning.join("dashboards/churnwatch.yaml"));
    let path = str_of(&providers["providers"][0]["options"]["path"], "a path");
    let dashboard_file = mounted_at(grafana, &format!("{path}/churnwatch.json"))
        .expect("compose mounts churnwatch.json into the provider's directory");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard_file).unwrap()).unwrap();
    let variables: BTreeSet<String> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "datasource" && v["query"] == "prometheus")
        .map(|v| str_of(&v["name"], "a variable").to_owned())
        .collect();
    let uids: BTreeSet<&str> = datasources["datasources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| str_of(&d["uid"], "a uid"))
        .collect();
    let mut refs = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        for ds in
            std::iter::once(&panel["datasource"]).chain(targets.iter().map(|t| &t["datasource"]))
        {
            let Some(uid) = ds["uid"].as_str() else {
                continue;
            };
            refs += 1;
            let resolved = match uid.strip_prefix("${").and_then(|u| u.strip_suffix('}')) {
                Some(variable) => variables.contains(variable),
                None => uids.contains(uid),
            };
            assert!(resolved, "panel {} names data source {uid}", panel["title"]);
        }
    }
    assert!(refs >= 15, "{refs} data source references");
}
