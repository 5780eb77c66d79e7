//! Installing it as operators do: the static binary and the release tarballs, the image FROM scratch
//! built with buildah and run as nobody, the kustomize base rendered by kubectl, the systemd unit
//! checked by systemd-analyze. `.ci/run` installs buildah, kubectl and systemd's tools, and builds the
//! static binary (`scripts/release --binary-only`) before the tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_yaml::Value;

use crate::common::*;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The static binary `scripts/release --binary-only` leaves for the image.
fn static_binary() -> Option<PathBuf> {
    let bin = repo(".build/linux-amd64/tiw-push-exporter");
    if !bin.exists() && !acceptance() {
        println!(
            "skipped: needs {} (scripts/release --binary-only; the acceptance profile runs it)",
            bin.display()
        );
        return None;
    }
    assert!(
        bin.exists(),
        "{} is missing: run scripts/release --binary-only (as .ci/run does)",
        bin.display()
    );
    Some(bin)
}

/// Whether an ELF64 file asks for a dynamic loader (has a PT_INTERP program header).
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3
    })
}

#[test]
fn the_release_binary_is_static_and_the_tarball_has_checksums() {
    // scripts/release builds with Debian's musl-tools, smokes the binary with curl, and checksums.
    if !needs(&["musl-gcc", "curl", "sha256sum"]) {
        return;
    }
    let Some(bin) = static_binary() else { return };
    assert!(
        !has_interpreter(&std::fs::read(&bin).unwrap()),
        "{} is dynamic",
        bin.display()
    );
    assert!(
        has_interpreter(&std::fs::read(release_bin()).unwrap()),
        "the check can tell"
    );
    let version = run_ok(Command::new(&bin).arg("--version"), "the static binary");
    assert!(
        version.contains("platform:         x86_64-unknown-linux-musl"),
        "{version}"
    );

    // The full release: tarball and checksums (the binary is already built: no second build),
    // after the release's own smoke of the binary (demo polled and served). linux-amd64 only: an
    // arm64 build, where cargo-zigbuild is installed, takes minutes and is the release's to make.
    run_ok(
        shell_command(repo("scripts/release"))
            .env("RELEASE_PLATFORMS", "linux-amd64")
            .current_dir(repo("")),
        "scripts/release",
    );
    let name = format!("tiw-push-exporter-{}.linux-amd64", env!("CARGO_PKG_VERSION"));
    let sums = std::fs::read_to_string(repo("dist/sha256sums.txt")).unwrap();
    assert!(sums.contains(&format!("  {name}.tar.gz")), "{sums}");
    run_ok(
        Command::new("sha256sum")
            .args(["-c", "sha256sums.txt"])
            .current_dir(repo("dist")),
        "sha256sum -c",
    );
    let listing = run_ok(
        Command::new("tar")
            .arg("-tzf")
            .arg(repo(&format!("dist/{name}.tar.gz"))),
        "tar -t",
    );
    for file in [
        "tiw-push-exporter",
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        "config.example.yaml",
        "examples/systemd/tiw-push-exporter.service",
        "prometheus/prometheus.yml",
        "prometheus/alerts.yml",
        "deploy/alertmanager/alertmanager.yml",
        "grafana/dashboard.json",
        "docs/runbooks.md",
    ] {
        assert!(
            listing.lines().any(|l| l == format!("{name}/{file}")),
            "{file} missing:\n{listing}"
        );
    }
}

fn buildah(args: &[&str]) -> String {
    run_ok(
        Command::new("buildah").args(args),
        &format!("buildah {}", args.join(" ")),
    )
}

/// Removes every working container and image made since it was created (buildah 1.28's `bud`
/// leaves the `FROM ${BINARY}` stage's container and image behind), whatever the test's outcome.
struct Image {
    name: String,
    /// The working containers and images that existed before the build: not ours to remove.
    before: (Vec<String>, Vec<String>),
}

/// The ids `buildah <args>` lists, one a line.
fn ids(args: &[&str]) -> Vec<String> {
    Command::new("buildah")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The working containers and images buildah has now.
fn buildah_state() -> (Vec<String>, Vec<String>) {
    (
        ids(&["containers", "--quiet", "--notruncate"]),
        ids(&["images", "--all", "--quiet", "--no-trunc"]),
    )
}

impl Drop for Image {
    fn drop(&mut self) {
        let (containers, images) = buildah_state();
        for c in containers.iter().filter(|c| !self.before.0.contains(c)) {
            let _ = Command::new("buildah").args(["rm", c]).output();
        }
        let _ = Command::new("buildah").args(["rmi", "-f", &self.name]).output();
        for i in images.iter().filter(|i| !self.before.1.contains(i)) {
            let _ = Command::new("buildah").args(["rmi", "-f", i]).output();
        }
    }
}

/// A process's parent, from /proc.
fn parent_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

/// The process running `program` (its argv[0], as the container sees it) that descends from
/// `ancestor` (our `buildah run`): other tests run the exporter too, as root.
fn descendant(program: &str, ancestor: u32) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.split(|b| *b == 0).next() != Some(program.as_bytes()) {
            continue;
        }
        let mut up = Some(pid);
        while let Some(p) = up.filter(|p| *p > 1) {
            if p == ancestor {
                return Some(pid);
            }
            up = parent_of(p);
        }
    }
    None
}

/// The uid a process runs as.
fn uid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uid.split_whitespace().next()?.parse().ok()
}

/// `buildah run` of the exporter. Killing `buildah run` leaves the process it started in the chroot
/// running, so when dropped this stops that process first (SIGTERM, as a container runtime would),
/// then `buildah run` itself.
struct InContainer(std::process::Child);

impl Drop for InContainer {
    fn drop(&mut self) {
        if let Some(pid) = descendant("/bin/tiw-push-exporter", self.0.id()) {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_builds_from_scratch_starts_the_demo_as_nobody_and_passes_its_healthcheck() {
    if !needs(&["buildah", "root"]) || static_binary().is_none() {
        return;
    }
    let revision = run_ok(
        Command::new("git").args(["rev-parse", "HEAD"]).current_dir(repo("")),
        "git",
    );
    let revision = revision.trim();
    let image = Image {
        name: format!("localhost/tiw-push-exporter:ci-{}", std::process::id()),
        before: buildah_state(),
    };
    let version_arg = format!("VERSION={}", env!("CARGO_PKG_VERSION"));
    let revision_arg = format!("REVISION={revision}");
    let started = std::time::Instant::now();
    // The docker format keeps HEALTHCHECK (OCI images have no field for it).
    buildah(&[
        "bud",
        "--isolation",
        "chroot",
        "--format",
        "docker",
        "--build-arg",
        "BINARY=prebuilt",
        "--build-arg",
        &version_arg,
        "--build-arg",
        &revision_arg,
        "-t",
        &image.name,
        repo("").to_str().unwrap(),
    ]);
    let size = buildah(&["images", "--format", "{{.Size}}", &image.name]);
    println!(
        "image built: {} in {:?}, size {}",
        image.name,
        started.elapsed(),
        size.trim()
    );

    let inspect: serde_json::Value =
        serde_json::from_str(&buildah(&["inspect", "--type", "image", &image.name])).unwrap();
    let config = &inspect["Docker"]["config"];
    assert_eq!(config["User"], "65534:65534");
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.revision"], revision);
    assert_eq!(labels["org.opencontainers.image.version"], env!("CARGO_PKG_VERSION"));
    for key in ["source", "documentation", "licenses"] {
        let value = labels[format!("org.opencontainers.image.{key}")].as_str().unwrap_or("");
        assert!(!value.is_empty(), "label {key}");
    }
    assert!(labels["org.opencontainers.image.source"]
        .as_str()
        .unwrap()
        .starts_with("https://"));
    let healthcheck: Vec<String> = config["Healthcheck"]["Test"]
        .as_array()
        .expect("a HEALTHCHECK")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(healthcheck[0], "CMD", "{healthcheck:?}");

    let container = buildah(&["from", &image.name]).trim().to_string();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let address = format!("TIW_WEB_LISTEN_ADDRESS=127.0.0.1:{port}");
    // The documented first command, as the image runs it: nobody, no /tmp, the address from the
    // environment (which the health check reads too).
    // `buildah run` in the container as the image runs: nobody, the address in the environment.
    let run_as_image = || {
        let mut cmd = Command::new("buildah");
        cmd.args([
            "run",
            "--isolation",
            "chroot",
            "--user",
            "65534:65534",
            "--env",
            &address,
        ])
        .arg(&container)
        .arg("--");
        cmd
    };
    let demo = InContainer(
        run_as_image()
            .args(["/bin/tiw-push-exporter", "demo"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("buildah run"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let metrics = wait_for(Duration::from_secs(60), "the demo in the image", || async {
        let m = reqwest::get(format!("{base}/metrics")).await.ok()?.text().await.ok()?;
        m.contains("tiw_push_task_status{").then_some(m)
    })
    .await;
    println!(
        "image started: demo answers /metrics on 127.0.0.1:{port} after {:?} ({} bytes)",
        started.elapsed(),
        metrics.len()
    );
    let pid = descendant("/bin/tiw-push-exporter", demo.0.id()).expect("the exporter's process in the container");
    let uid = uid_of(pid).expect("its uid");
    assert_eq!(uid, 65534, "runs as nobody");
    println!("image process runs as uid {uid}");

    run_ok(run_as_image().args(&healthcheck[1..]), "the image's HEALTHCHECK");
    println!("image healthcheck passed: {}", healthcheck[1..].join(" "));
    drop(demo);
    assert!(
        descendant("/bin/tiw-push-exporter", pid).is_none() && uid_of(pid).is_none(),
        "the demo in the container stopped"
    );
    println!("image stopped: SIGTERM to the demo ended it");
    drop(image);
}

/// A container's `args`.
fn container_args(container: &Value) -> Vec<String> {
    container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// Asserts the binary takes `args` (clap stops at an unknown argument before it reads --help).
fn takes_args(args: &[String], what: &str) {
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_tiw-push-exporter"))
            .args(args)
            .arg("--help"),
        what,
    );
}

/// `kubectl kustomize` renders the base and the TLS overlay; what they say agrees with the
/// exporter's sources (ports, paths, image version) and with the hardening README promises.
#[test]
fn the_kustomize_base_renders_and_agrees_with_the_sources() {
    if !needs(&["kubectl"]) {
        return;
    }
    let render = |dir: &str| -> Vec<Value> {
        let text = run_ok(
            Command::new("kubectl").arg("kustomize").arg(repo(dir)),
            "kubectl kustomize",
        );
        serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect()
    };
    let base = render("deploy/kubernetes");
    let find = |docs: &[Value], kind: &str, name: &str| -> Value {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name}"))
            .clone()
    };
    let deployment = find(&base, "Deployment", "tiw-push-exporter");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        container["image"],
        format!(
            "ghcr.io/tiw-push-exporter/tiw-push-exporter:{}",
            env!("CARGO_PKG_VERSION")
        ),
        "the image is the version Cargo.toml builds"
    );
    let port = |name: &str| -> i64 {
        container["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("container port {name}"))["containerPort"]
            .as_i64()
            .unwrap()
    };
    let env = |name: &str| -> Option<String> {
        container["env"]
            .as_sequence()?
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str().map(str::to_string))
    };
    assert_eq!(env("TIW_WEB_LISTEN_ADDRESS"), Some(format!(":{}", port("http"))));
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "http");
        assert_eq!(container[probe]["httpGet"]["scheme"], "HTTP");
    }

    // The config the pod reads: callbacks on their own listener, on the port the Services use.
    let cm = find(&base, "ConfigMap", "tiw-push-exporter");
    let config_path = env("TIW_CONFIG_FILE").unwrap();
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "config")
        .unwrap()["mountPath"]
        .as_str()
        .unwrap()
        .to_string();
    let file = Path::new(&config_path).strip_prefix(&mount).unwrap().to_str().unwrap();
    // The Secret's variables; TIW_HA_REPLICAS is unset in the base (the HA overlay sets it).
    let secrets = |name: &str| (name != "TIW_HA_REPLICAS").then(|| format!("value-of-{name}"));
    let config = tiw_push_exporter::config::Config::from_yaml(cm["data"][file].as_str().unwrap(), &secrets).unwrap();
    let callback_addr = config.callback.listen_address.expect("callbacks on their own listener");
    assert_eq!(callback_addr.port() as i64, port("callback"));

    let metrics_svc = find(&base, "Service", "tiw-push-exporter");
    assert_eq!(
        metrics_svc["spec"]["ports"].as_sequence().unwrap().len(),
        1,
        "metrics only"
    );
    assert_eq!(metrics_svc["spec"]["ports"][0]["targetPort"], "http");
    let callback_svc = find(&base, "Service", "tiw-push-exporter-callback");
    assert_eq!(callback_svc["spec"]["ports"][0]["targetPort"], "callback");
    let ingress = find(&base, "Ingress", "tiw-push-exporter-callback");
    let paths = ingress["spec"]["rules"][0]["http"]["paths"].as_sequence().unwrap();
    assert_eq!(paths.len(), 1, "the callback path alone");
    assert_eq!(paths[0]["path"], config.callback.path.as_str());
    assert_eq!(paths[0]["pathType"], "Exact");
    assert_eq!(paths[0]["backend"]["service"]["name"], "tiw-push-exporter-callback");

    let policy = find(&base, "NetworkPolicy", "tiw-push-exporter");
    let allowed: Vec<&str> = policy["spec"]["ingress"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|rule| {
            rule["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .filter_map(|p| p["port"].as_str())
        })
        .collect();
    assert_eq!(allowed, ["http", "callback"]);

    // The label Prometheus selects by, on both kinds it selects.
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        let doc = find(&base, kind, "tiw-push-exporter");
        assert_eq!(doc["metadata"]["labels"]["release"], "kube-prometheus-stack", "{kind}");
    }
    let monitor = find(&base, "ServiceMonitor", "tiw-push-exporter");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    takes_args(&container_args(container), "the Deployment's args");

    // TLS on: probes and scrapes switch to HTTPS, serve and healthcheck get the web config.
    let tls = render("deploy/overlays/tls");
    let deployment = find(&tls, "Deployment", "tiw-push-exporter");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
    }
    assert!(container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "TIW_WEB_CONFIG_FILE"));
    let monitor = find(&tls, "ServiceMonitor", "tiw-push-exporter");
    assert_eq!(monitor["spec"]["endpoints"][0]["scheme"], "https");
}

/// The HA overlay: two replicas of the base's pod, each with its store, the budget split between
/// them, not-ready before stopping, one at a time.
#[test]
fn the_ha_overlay_runs_two_replicas_that_share_the_budget() {
    if !needs(&["kubectl"]) {
        return;
    }
    let text = run_ok(
        Command::new("kubectl").arg("kustomize").arg(repo("deploy/overlays/ha")),
        "kubectl kustomize deploy/overlays/ha",
    );
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let of_kind = |kind: &str| docs.iter().filter(|d| d["kind"] == kind).cloned().collect::<Vec<_>>();
    assert!(of_kind("Deployment").is_empty() && of_kind("PersistentVolumeClaim").is_empty());
    let set = &of_kind("StatefulSet")[0];
    let replicas = set["spec"]["replicas"].as_i64().unwrap();
    assert_eq!(replicas, 2);
    assert_eq!(
        set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], "data",
        "one store per replica"
    );
    let pod = &set["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"],
        format!(
            "ghcr.io/tiw-push-exporter/tiw-push-exporter:{}",
            env!("CARGO_PKG_VERSION")
        )
    );
    let env: std::collections::HashMap<String, String> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        env["TIW_HA_REPLICAS"],
        replicas.to_string(),
        "the budget is split as many ways as there are replicas"
    );
    let args = container_args(container);
    assert!(args.iter().any(|a| a.starts_with("--web.shutdown-delay=")), "{args:?}");
    takes_args(&args, "the StatefulSet's args");
    // The config each replica reads: half of Tencent's 20/s each.
    let cm = of_kind("ConfigMap")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "tiw-push-exporter")
        .unwrap();
    let vars = |name: &str| match name {
        "TIW_HA_REPLICAS" => Some(env["TIW_HA_REPLICAS"].clone()),
        other => Some(format!("value-of-{other}")),
    };
    let config =
        tiw_push_exporter::config::Config::from_yaml(cm["data"]["config.yaml"].as_str().unwrap(), &vars).unwrap();
    assert_eq!(config.ha_replicas, 2);
    // 20/s less the pair's margin of one, halved.
    assert_eq!(config.apps[0].api.requests_per_second, 9);
    let pdb = &of_kind("PodDisruptionBudget")[0];
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    // Callbacks reach both through the base's Service and Ingress.
    assert!(of_kind("Ingress")
        .iter()
        .any(|i| i["metadata"]["name"] == "tiw-push-exporter-callback"));
}

/// The systemd unit passes `systemd-analyze verify` and rates "OK" in `systemd-analyze security`.
#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    if !needs(&["systemd-analyze"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit_text = std::fs::read_to_string(repo("examples/systemd/tiw-push-exporter.service")).unwrap();
    // verify checks that ExecStart exists: the release binary stands in for /usr/local/bin's.
    let unit = unit_text.replace("/usr/local/bin/tiw-push-exporter", release_bin().to_str().unwrap());
    let path = dir.path().join("tiw-push-exporter.service");
    std::fs::write(&path, unit).unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );
    // ExecStart's arguments are ones the binary takes.
    let exec_args: Vec<String> = unit_text
        .split("ExecStart=")
        .nth(1)
        .unwrap()
        .split('\n')
        .scan(true, |more, line| {
            let this = *more;
            *more = line.trim_end().ends_with('\\');
            this.then(|| line.trim().trim_end_matches('\\').trim().to_string())
        })
        .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .skip(1)
        .collect();
    takes_args(&exec_args, "the unit's ExecStart arguments");
    let security = run_ok(
        Command::new("systemd-analyze")
            .args(["security", "--offline=yes"])
            .arg(&path),
        "systemd-analyze security",
    );
    let exposure: f64 = security
        .lines()
        .find_map(|l| l.split("Overall exposure level for tiw-push-exporter.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level:\n{security}"));
    println!("systemd-analyze security: exposure {exposure}");
    assert!(exposure <= 2.0, "exposure {exposure}:\n{security}");
}
