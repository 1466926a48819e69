//! deploy/compose.yaml must stay in step with the server: its services exist and
//! depend on services that exist, both signaling servers point at the compose file's
//! Redis, every `RHIZOME_*` variable it sets is one the binary reads, and the Caddyfile
//! forwards to both servers on the port they bind. Docker Compose is not installed
//! everywhere, so this reads the file's YAML subset itself (block maps and lists, two
//! spaces per level); where `docker compose` exists, its `config` check runs too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// A node of the YAML subset: a scalar or a list of (key or "-", value, children).
#[derive(Debug, Default)]
struct Node {
    value: String,
    children: Vec<(String, Node)>,
}

impl Node {
    fn get(&self, key: &str) -> Option<&Node> {
        self.children.iter().find(|(k, _)| k == key).map(|(_, n)| n)
    }

    fn items(&self) -> Vec<&str> {
        self.children
            .iter()
            .filter(|(k, _)| k == "-")
            .map(|(_, n)| n.value.as_str())
            .collect()
    }
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(s)
        .to_string()
}

/// Parses block-style YAML (the subset compose files use here), checking indentation.
fn parse(text: &str) -> Node {
    let mut lines = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        assert!(!raw.contains('\t'), "line {}: a tab", n + 1);
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = raw.len() - trimmed.len();
        assert_eq!(indent % 2, 0, "line {}: odd indentation", n + 1);
        lines.push((indent, trimmed.trim_end().to_string(), n + 1));
    }
    let mut pos = 0;
    let root = block(&lines, &mut pos, 0);
    assert_eq!(pos, lines.len(), "line {}: bad indentation", lines[pos].2);
    root
}

fn block(lines: &[(usize, String, usize)], pos: &mut usize, indent: usize) -> Node {
    let mut node = Node::default();
    while let Some((i, text, n)) = lines.get(*pos) {
        if *i < indent {
            break;
        }
        assert_eq!(*i, indent, "line {n}: unexpected indentation");
        *pos += 1;
        let (key, rest) = if let Some(item) = text.strip_prefix("- ") {
            ("-".to_string(), item.to_string())
        } else {
            let (k, v) = text
                .split_once(':')
                .unwrap_or_else(|| panic!("line {n}: neither `key:` nor `- item`"));
            assert!(
                v.is_empty() || v.starts_with(' '),
                "line {n}: a space after ':'"
            );
            (unquote(k), v.trim().to_string())
        };
        let mut child = Node {
            value: unquote(&rest),
            children: Vec::new(),
        };
        if rest.is_empty() {
            child = block(lines, pos, indent + 2);
        } else if rest.starts_with('[') {
            assert!(rest.ends_with(']'), "line {n}: an unclosed flow list");
        }
        node.children.push((key, child));
    }
    node
}

#[test]
fn the_compose_file_matches_the_server_it_deploys() {
    let text = std::fs::read_to_string(deploy_dir().join("compose.yaml")).unwrap();
    let root = parse(&text);
    let services = root.get("services").expect("services");
    let names: BTreeSet<&str> = services.children.iter().map(|(k, _)| k.as_str()).collect();
    for want in ["redis", "signal-a", "signal-b", "proxy", "coturn"] {
        assert!(names.contains(want), "service {want} missing: {names:?}");
    }
    let help = Command::new(env!("CARGO_BIN_EXE_rhizome-signaling"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    let mut binds = BTreeMap::new();
    for (name, svc) in &services.children {
        assert!(
            svc.get("image").is_some() || svc.get("build").is_some(),
            "{name}: an image or a build"
        );
        if let Some(deps) = svc.get("depends_on") {
            for d in deps.items() {
                assert!(names.contains(d), "{name} depends on unknown {d}");
            }
        }
        if let Some(build) = svc.get("build") {
            let context = build.get("context").expect("a build context");
            let dockerfile = build.get("dockerfile").expect("a Dockerfile");
            let path = deploy_dir().join(&context.value).join(&dockerfile.value);
            assert!(path.exists(), "{name}: {} missing", path.display());
        }
        if !name.starts_with("signal-") {
            continue;
        }
        let env = svc.get("environment").expect("environment");
        for (var, _) in &env.children {
            assert!(
                help.contains(&format!("env: {var}=")),
                "{name}: {var} is not read by rhizome-signaling"
            );
        }
        let cluster = &env.get("RHIZOME_CLUSTER").expect("RHIZOME_CLUSTER").value;
        assert_eq!(cluster, "redis://redis:6379", "{name}");
        let bind = &env.get("RHIZOME_BIND").expect("RHIZOME_BIND").value;
        let port = bind.rsplit_once(':').expect("host:port").1.to_string();
        binds.insert(name.clone(), port);
    }
    assert_eq!(binds.len(), 2, "two signaling servers");
    let caddy = std::fs::read_to_string(deploy_dir().join("Caddyfile")).unwrap();
    for (name, port) in &binds {
        assert!(
            caddy.contains(&format!("{name}:{port}")),
            "the Caddyfile forwards to {name}:{port}"
        );
    }
    assert!(caddy.contains("/ws"), "the Caddyfile forwards /ws");
    let dockerfile = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("-p rhizome-signaling"));
}

#[test]
fn docker_compose_accepts_the_file_where_it_is_installed() {
    let has_compose = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_compose {
        eprintln!("SKIPPED: docker compose is not installed; the structural test above ran");
        return;
    }
    let out = Command::new("docker")
        .args(["compose", "-f"])
        .arg(deploy_dir().join("compose.yaml"))
        .args(["config", "-q"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_subset_parser_refuses_what_it_does_not_understand() {
    for bad in ["a:\n   b: 1\n", "a:\n\tb: 1\n", "a:b\n", "just text\n"] {
        assert!(std::panic::catch_unwind(|| parse(bad)).is_err(), "{bad:?}");
    }
    let ok = parse("a:\n  b: \"x\"\n  c:\n    - d\n    - e\n");
    assert_eq!(ok.get("a").unwrap().get("b").unwrap().value, "x");
    assert_eq!(ok.get("a").unwrap().get("c").unwrap().items(), ["d", "e"]);
}
