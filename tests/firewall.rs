//! `portwatch firewall`: golden files for every node of every bundled site,
//! nftables accepting and loading them, PowerShell parameters Microsoft
//! documents, and the proof by traffic.
//!
//! `UPDATE_GOLDEN=1 cargo test --test main firewall` rewrites
//! `fixtures/firewall/<site>.<node>.{nft,ps1}`; review the diff.
//!
//! The traffic test (root, `ip`, `nft`, `tcpdump`) builds, per bundled site,
//! three network namespaces of its own (`pwfw<pid>s<i>{n,a,b}`): node N and
//! two peers with the site's addresses, joined to N by veth pairs and routed
//! nowhere else. It loads N's nftables rules (both directions) in N's
//! namespace, listens on every port the model knows (and one it does not)
//! in all three, connects from both peers to N and from N to both peers,
//! captures in N's namespace and replays the capture. Only the expected
//! edges connect on the ports the plan guards (those the model assigns to
//! N); every other port connects, and the replay reports it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use portwatch::config::{load_policy, BUNDLED_SITES};
use portwatch::firewall::{
    nftables, Action, Blocks, Cite, CiteOrigin, Direction, DropKind, Plan, Remote, Rule, Way,
};
use portwatch::policy::{EndpointKind, Peer, Policy};
use portwatch::quote;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::Value;

use crate::prereq::prerequisites;

const PORTWATCH: &str = env!("CARGO_BIN_EXE_portwatch");

/// A port outside the model: the firewall leaves it alone.
const OUTSIDE_PORT: u16 = 3389;

/// Microsoft's documented parameters of `New-NetFirewallRule`
/// (learn.microsoft.com/powershell/module/netsecurity/new-netfirewallrule).
const NEW_NETFIREWALLRULE_PARAMETERS: &[&str] = &[
    "Action",
    "AllowWatchKey",
    "AsJob",
    "Authentication",
    "CimSession",
    "Description",
    "Direction",
    "DisplayName",
    "DynamicTarget",
    "EdgeTraversalPolicy",
    "Enabled",
    "Encryption",
    "GPOSession",
    "Group",
    "IcmpType",
    "InterfaceAlias",
    "InterfaceType",
    "LocalAddress",
    "LocalOnlyMapping",
    "LocalPort",
    "LocalUser",
    "LooseSourceMapping",
    "Name",
    "OverrideBlockRules",
    "Owner",
    "Package",
    "Platform",
    "PolicyStore",
    "Profile",
    "Program",
    "Protocol",
    "RemoteAddress",
    "RemoteDynamicKeywordAddresses",
    "RemoteMachine",
    "RemotePort",
    "RemoteUser",
    "Service",
    "ThrottleLimit",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn policy(site: &str) -> Policy {
    load_policy(Path::new(site), None).unwrap().policy
}

fn firewall(args: &[&str]) -> String {
    let out = Command::new(PORTWATCH)
        .arg("firewall")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "firewall {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every (site, node) of the bundled sites.
fn site_nodes() -> Vec<(String, String)> {
    BUNDLED_SITES
        .iter()
        .flat_map(|(site, _, _)| {
            policy(site)
                .site
                .nodes
                .iter()
                .map(|n| (site.to_string(), n.name.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn golden(site: &str, node: &str, ext: &str) -> PathBuf {
    root().join(format!("fixtures/firewall/{site}.{node}.{ext}"))
}

#[test]
fn firewall_goldens_for_every_node_of_every_bundled_site() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut stale = Vec::new();
    for (site, node) in site_nodes() {
        for (format, ext) in [("nftables", "nft"), ("powershell", "ps1")] {
            let text = firewall(&["--site", &site, "--node", &node, "--format", format]);
            let path = golden(&site, &node, ext);
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &text).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(&text) {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "differ from the output (UPDATE_GOLDEN=1 cargo test --test main firewall, then review): {stale:#?}"
    );
}

#[test]
fn firewall_rejects_a_name_that_is_no_node() {
    let out = Command::new(PORTWATCH)
        .args(["firewall", "--site", "multi-node", "--node", "corp-users"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--node corp-users: no such node"), "{err}");
}

/// Microsoft's documented parameters of `Get-NetFirewallRule`
/// (learn.microsoft.com/powershell/module/netsecurity/get-netfirewallrule).
const GET_NETFIREWALLRULE_PARAMETERS: &[&str] = &[
    "Action",
    "All",
    "AsJob",
    "AssociatedNetFirewallAddressFilter",
    "AssociatedNetFirewallApplicationFilter",
    "AssociatedNetFirewallInterfaceFilter",
    "AssociatedNetFirewallInterfaceTypeFilter",
    "AssociatedNetFirewallPortFilter",
    "AssociatedNetFirewallProfile",
    "AssociatedNetFirewallSecurityFilter",
    "AssociatedNetFirewallServiceFilter",
    "AssociatedNetIPsecRule",
    "CimSession",
    "Description",
    "Direction",
    "DisplayGroup",
    "DisplayName",
    "EdgeTraversalPolicy",
    "Enabled",
    "GPOSession",
    "Group",
    "LocalOnlyMapping",
    "LooseSourceMapping",
    "Name",
    "Owner",
    "PolicyStore",
    "PolicyStoreSource",
    "PolicyStoreSourceType",
    "PrimaryStatus",
    "Status",
    "ThrottleLimit",
    "TracePolicyStore",
];

/// Microsoft's documented parameters of `Remove-NetFirewallRule`
/// (learn.microsoft.com/powershell/module/netsecurity/remove-netfirewallrule).
const REMOVE_NETFIREWALLRULE_PARAMETERS: &[&str] = &[
    "Action",
    "All",
    "AsJob",
    "AssociatedNetFirewallAddressFilter",
    "AssociatedNetFirewallApplicationFilter",
    "AssociatedNetFirewallInterfaceFilter",
    "AssociatedNetFirewallInterfaceTypeFilter",
    "AssociatedNetFirewallPortFilter",
    "AssociatedNetFirewallProfile",
    "AssociatedNetFirewallSecurityFilter",
    "AssociatedNetFirewallServiceFilter",
    "AssociatedNetIPsecRule",
    "CimSession",
    "Description",
    "Direction",
    "DisplayGroup",
    "DisplayName",
    "EdgeTraversalPolicy",
    "Enabled",
    "GPOSession",
    "Group",
    "InputObject",
    "LocalOnlyMapping",
    "LooseSourceMapping",
    "Name",
    "Owner",
    "PassThru",
    "PolicyStore",
    "PolicyStoreSource",
    "PolicyStoreSourceType",
    "PrimaryStatus",
    "Status",
    "ThrottleLimit",
    "TracePolicyStore",
];

/// PowerShell's common parameters: every cmdlet takes them.
const COMMON_PARAMETERS: &[&str] = &[
    "Confirm",
    "Debug",
    "ErrorAction",
    "ErrorVariable",
    "InformationAction",
    "InformationVariable",
    "OutBuffer",
    "OutVariable",
    "PipelineVariable",
    "ProgressAction",
    "Verbose",
    "WarningAction",
    "WarningVariable",
    "WhatIf",
];

fn documented(cmdlet: &str) -> &'static [&'static str] {
    match cmdlet {
        "New-NetFirewallRule" => NEW_NETFIREWALLRULE_PARAMETERS,
        "Get-NetFirewallRule" => GET_NETFIREWALLRULE_PARAMETERS,
        "Remove-NetFirewallRule" => REMOVE_NETFIREWALLRULE_PARAMETERS,
        "Set-NetFirewallProfile" => SET_NETFIREWALLPROFILE_PARAMETERS,
        other => panic!("no documented list for {other}"),
    }
}

/// Every NetSecurity cmdlet the script calls, with only parameters
/// Microsoft documents for it (or common ones), the renderer's declared
/// list matching what it writes; every rule in the group `$Group`, which
/// holds the site's group.
#[test]
fn firewall_powershell_uses_only_documented_parameters_and_one_group() {
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (site, node) in site_nodes() {
        for direction in ["in", "both"] {
            let text = firewall(&[
                "--site",
                &site,
                "--node",
                &node,
                "--format",
                "powershell",
                "--direction",
                direction,
            ]);
            assert!(text.contains(&format!("\n$Group = 'portwatch {site}'\n")));
            let rules: Vec<&str> = (text.lines())
                .filter(|l| l.starts_with("New-NetFirewallRule "))
                .collect();
            assert!(!rules.is_empty(), "{site} {node}");
            for line in rules {
                assert!(line.contains("-Group $Group "), "{line}");
                assert!(line.contains("-Description '"), "{line}");
            }
            for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
                // The cmdlet where it is called: `$Old = @(Get-NetFirewallRule …)`.
                let Some(at) = ["Get-", "New-", "Remove-", "Set-"]
                    .iter()
                    .filter_map(|verb| line.find(&format!("{verb}NetFirewall")))
                    .min()
                else {
                    continue;
                };
                let line = &line[at..];
                let cmdlet = line.split([' ', ')']).next().unwrap();
                if cmdlet.ends_with("Filter") {
                    continue;
                }
                assert_eq!(
                    line.matches('\'').count() % 2,
                    0,
                    "unbalanced quotes: {line}"
                );
                let set = used.entry(cmdlet.to_string()).or_default();
                set.extend(
                    parameters(line)
                        .into_iter()
                        .filter(|p| !COMMON_PARAMETERS.contains(&p.as_str())),
                );
            }
        }
    }
    let declared = portwatch::firewall::powershell::CMDLETS;
    assert_eq!(
        used.keys().collect::<Vec<_>>(),
        declared.iter().map(|c| c.0).collect::<Vec<_>>()
    );
    for (cmdlet, params) in declared {
        documented_and_declared(&used[*cmdlet], documented(cmdlet), params);
    }
}

/// The issue's list, on every node's script: `#Requires -RunAsAdministrator`,
/// `$ErrorActionPreference = 'Stop'` before any command, an advanced script
/// (`-WhatIf`), `-Stage Audit` by default with block rules added disabled
/// then, `-Profile` and `-PolicyStore` as parameters passed to every rule,
/// the group's rules exported before any change, the new rules added (allow
/// rules first) before the old ones are removed by name, short descriptions
/// citing the vendor page by title and no path of this repository.
#[test]
fn firewall_powershell_is_fit_for_change_control() {
    for (site, node) in site_nodes() {
        let text = std::fs::read_to_string(golden(&site, &node, "ps1")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..3],
            [
                "#Requires -Version 5.1",
                "#Requires -Modules NetSecurity",
                "#Requires -RunAsAdministrator"
            ]
        );
        let at = |want: &str| {
            (lines.iter())
                .position(|l| l.trim_start().starts_with(want))
                .unwrap_or_else(|| panic!("{site} {node}: no line `{want}`"))
        };
        let last = |want: &str| {
            (lines.iter())
                .rposition(|l| l.trim_start().starts_with(want))
                .unwrap()
        };
        let binding = at("[CmdletBinding(SupportsShouldProcess)]");
        assert_eq!(lines[binding + 1], "param(");
        for param in [
            "[string] $Stage = 'Audit',",
            "[Alias('Profile')]",
            "[string[]] $FirewallProfile = @('Any'),",
            "[string] $PolicyStore = 'PersistentStore',",
        ] {
            assert!(
                lines[binding..].iter().any(|l| l.trim() == param),
                "{param}"
            );
        }
        let stop = at("$ErrorActionPreference = 'Stop'");
        let blocking = at("$Blocking = if ($Stage -eq 'Enforce') { 'True' } else { 'False' }");
        let old = at("$Old = @(Get-NetFirewallRule -Group $Group -PolicyStore $PolicyStore");
        let export = at("} | Export-Clixml -Path $Backup");
        let audit = at("Set-NetFirewallProfile -Name $Profiles -LogAllowed True -LogBlocked True");
        let first_new = at("New-NetFirewallRule ");
        let first_block = (lines.iter())
            .position(|l| l.starts_with("New-NetFirewallRule ") && l.contains("-Action Block"))
            .unwrap_or(lines.len());
        let last_allow = (lines.iter())
            .rposition(|l| l.starts_with("New-NetFirewallRule ") && l.contains("-Action Allow"))
            .unwrap();
        let remove = at("Remove-NetFirewallRule -Name $Old.Name -PolicyStore $PolicyStore");
        assert!(
            binding < stop
                && stop < blocking
                && blocking < old
                && old < export
                && export < audit
                && audit < first_new
                && first_new <= last_allow
                && last_allow < first_block
                && last("New-NetFirewallRule ") < remove,
            "{site} {node}: order"
        );
        assert!(
            !text.contains("Remove-NetFirewallRule -Group"),
            "{site} {node}"
        );
        assert!(!text.contains("shared/seed"), "{site} {node}");
        for l in lines
            .iter()
            .filter(|l| l.starts_with("New-NetFirewallRule "))
        {
            assert!(
                l.contains(" -Profile $FirewallProfile -PolicyStore $PolicyStore "),
                "{l}"
            );
            let enabled = match l.contains("-Action Block") {
                true => " -Enabled $Blocking ",
                false => " -Enabled True ",
            };
            assert!(l.contains(enabled), "{l}");
            let description = l.split(" -Description '").nth(1).unwrap();
            let description = description.strip_suffix("' | Out-Null").unwrap();
            assert!(description.chars().count() <= 240, "{l}");
            assert!(
                description
                    .starts_with("Qlik help: Ports (Qlik Sense Enterprise on Windows), section")
                    || description.starts_with("site "),
                "{l}"
            );
        }
    }
}

/// Every parameter `used` is in Microsoft's `documented` list, and the
/// renderer's own `declared` list matches what it writes.
fn documented_and_declared(used: &BTreeSet<String>, documented: &[&str], declared: &[&str]) {
    let undocumented: Vec<_> = (used.iter())
        .filter(|p| !documented.contains(&p.as_str()))
        .collect();
    assert!(undocumented.is_empty(), "{undocumented:?}");
    let declared: BTreeSet<String> = declared.iter().map(|s| s.to_string()).collect();
    assert_eq!(used, &declared);
}

/// Microsoft's documented parameters of `Set-NetFirewallProfile`
/// (learn.microsoft.com/powershell/module/netsecurity/set-netfirewallprofile).
const SET_NETFIREWALLPROFILE_PARAMETERS: &[&str] = &[
    "All",
    "AllowInboundRules",
    "AllowLocalFirewallRules",
    "AllowLocalIPsecRules",
    "AllowUnicastResponseToMulticast",
    "AllowUserApps",
    "AllowUserPorts",
    "AsJob",
    "CimSession",
    "DefaultInboundAction",
    "DefaultOutboundAction",
    "DisabledInterfaceAliases",
    "Enabled",
    "EnableStealthModeForIPsec",
    "GPOSession",
    "InputObject",
    "LogAllowed",
    "LogBlocked",
    "LogFileName",
    "LogIgnored",
    "LogMaxSizeKilobytes",
    "Name",
    "NotifyOnListen",
    "PassThru",
    "PolicyStore",
    "ThrottleLimit",
];

#[test]
fn firewall_powershell_enable_logging_makes_the_node_a_sensor() {
    let (site, node) = site_nodes().remove(0);
    let args = ["--site", &site, "--node", &node, "--format", "powershell"];
    let rules = firewall(&args);
    let text = firewall(&[&args[..], &["--enable-logging"]].concat());
    // Additive: the rules as they were, then the logging.
    let logging = text.strip_prefix(&rules).expect("the rules come first");
    let profile: Vec<&str> = (logging.lines())
        .filter(|l| l.starts_with("Set-NetFirewallProfile "))
        .collect();
    assert_eq!(profile.len(), 1, "{logging}");
    let used: BTreeSet<String> = parameters(profile[0]).into_iter().collect();
    documented_and_declared(
        &used,
        SET_NETFIREWALLPROFILE_PARAMETERS,
        portwatch::firewall::powershell::LOGGING_PARAMETERS,
    );
    for want in [
        "-All ",
        "-LogAllowed True ",
        "-LogBlocked True ",
        "-LogMaxSizeKilobytes 32767 ",
        r"-LogFileName '%systemroot%\system32\LogFiles\Firewall\pfirewall.log'",
    ] {
        assert!(profile[0].contains(want), "{want}: {}", profile[0]);
    }
    // Connections audited (success 5156, failure 5157); packet drops only
    // offered, commented out under their warning.
    let live: Vec<&str> = (logging.lines())
        .filter(|l| l.starts_with("auditpol "))
        .collect();
    assert_eq!(
        live,
        ["auditpol /set /subcategory:\"Filtering Platform Connection\" /success:enable /failure:enable"]
    );
    let drop_line =
        "# auditpol /set /subcategory:\"Filtering Platform Packet Drop\" /failure:enable";
    let at = logging.find(drop_line).expect("the packet drop line");
    let warning = &logging[..at];
    assert!(warning.contains("every dropped packet"), "{warning}");
    assert!(warning.contains("lose the"), "{warning}");
}

#[test]
fn firewall_enable_logging_is_refused_for_nftables() {
    let (site, node) = site_nodes().remove(0);
    let out = Command::new(PORTWATCH)
        .args([
            "firewall",
            "--site",
            &site,
            "--node",
            &node,
            "--enable-logging",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--enable-logging is for --format powershell"),
        "{err}"
    );
}

/// The `-Name` parameters of a command line, skipping quoted strings.
fn parameters(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        if c == '\'' {
            quoted = !quoted;
        } else if !quoted && c == '-' && prev == ' ' {
            let name: String = line[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            if name.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
                out.push(name);
            }
        }
        prev = c;
    }
    out
}

fn sh(cmd: &[&str]) {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Network namespaces created by this test: deleted on drop (with the veth
/// pairs in them), and the processes started in them killed.
struct Lab {
    namespaces: Vec<String>,
    children: Vec<Child>,
    dir: PathBuf,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let dir = std::env::temp_dir().join(format!("portwatch-fw-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Lab {
            namespaces: Vec::new(),
            children: Vec::new(),
            dir,
        }
    }

    fn netns(&mut self, name: String) -> String {
        sh(&["ip", "netns", "add", &name]);
        self.namespaces.push(name.clone());
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        name
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn firewall_nftables_goldens_check_and_load_in_a_namespace() {
    if !prerequisites("nftables load test", &["ip", "nft"]) {
        return;
    }
    let mut lab = Lab::new("load");
    let ns = lab.netns(format!("pwfw{}l", std::process::id()));
    for (site, node) in site_nodes() {
        for direction in ["in", "both"] {
            let text = firewall(&["--site", &site, "--node", &node, "--direction", direction]);
            let file = lab.dir.join(format!("{site}.{node}.{direction}.nft"));
            std::fs::write(&file, &text).unwrap();
            let f = file.to_str().unwrap();
            sh(&["ip", "netns", "exec", &ns, "nft", "-c", "-f", f]);
            // Loaded twice: the file replaces its table, nothing piles up.
            sh(&["ip", "netns", "exec", &ns, "nft", "-f", f]);
            sh(&["ip", "netns", "exec", &ns, "nft", "-f", f]);
            let listed = Command::new("ip")
                .args(["netns", "exec", &ns, "nft", "list", "tables"])
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&listed.stdout).trim(),
                "table inet portwatch"
            );
        }
    }
}

/// Move the calling thread into a network namespace; sockets it creates
/// afterwards live there.
fn enter(ns: &str) {
    let f = File::open(format!("/run/netns/{ns}")).unwrap();
    // SAFETY: setns on a valid namespace fd only changes this thread's
    // network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// Run `f` on a thread inside namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter(&ns);
        f()
    })
    .join()
    .unwrap()
}

/// A peer of node N in the test: a site endpoint and the address it uses.
#[derive(Clone, Debug)]
struct PeerHost {
    name: String,
    addr: Ipv4Addr,
}

fn v4(addrs: impl IntoIterator<Item = IpAddr>) -> Option<Ipv4Addr> {
    addrs.into_iter().find_map(|a| match a {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    })
}

/// N: the node with the most expected inbound edges. Peers: the endpoint
/// with the most edges into N, and one of another kind (a user network or
/// an external), so both allowed and refused attempts come from each side.
fn choose(p: &Policy) -> (String, Ipv4Addr, Vec<PeerHost>) {
    let all = p.all_edges();
    let inbound = |name: &str| {
        let id = p.endpoint_id(name).unwrap();
        all.iter().filter(|e| e.dst == id).count()
    };
    let n = (p.site.nodes.iter())
        .max_by_key(|n| (inbound(&n.name), std::cmp::Reverse(n.name.clone())))
        .unwrap();
    let nid = p.endpoint_id(&n.name).unwrap();
    let addr_of = |id: portwatch::policy::EndpointId| -> Ipv4Addr {
        let e = p.endpoint(id);
        match e.kind {
            EndpointKind::Node => v4(p.site.nodes[e.index].addresses.iter().copied()).unwrap(),
            EndpointKind::External => {
                v4(p.site.externals[e.index].nets.iter().map(|n| n.addr())).unwrap()
            }
            EndpointKind::UserNetwork => {
                let u = &p.site.user_networks[e.index];
                let net = (u.cidrs.iter())
                    .find_map(|c| match c {
                        ipnet::IpNet::V4(n) => Some(*n),
                        _ => None,
                    })
                    .unwrap_or_else(|| "198.51.100.0/24".parse().unwrap());
                Ipv4Addr::from(u32::from(net.network()) + 77)
            }
        }
    };
    let mut candidates: Vec<_> = (0..p.endpoints.len())
        .map(|i| portwatch::policy::EndpointId(i as u16))
        .filter(|id| *id != nid)
        .map(|id| {
            let edges = all.iter().filter(|e| e.src == id && e.dst == nid).count();
            (edges, id)
        })
        .collect();
    candidates.sort_by_key(|(edges, id)| (std::cmp::Reverse(*edges), *id));
    let first = candidates[0].1;
    // Another kind of endpoint, else another endpoint, else a second host
    // of the same one (a site of one node and its users).
    let second = (candidates.iter().map(|(_, id)| *id))
        .find(|id| p.endpoint(*id).kind != p.endpoint(first).kind)
        .or_else(|| candidates.get(1).map(|(_, id)| *id));
    let mut peers: Vec<PeerHost> = [Some(first), second]
        .into_iter()
        .flatten()
        .map(|id| PeerHost {
            name: p.endpoint(id).name.clone(),
            addr: addr_of(id),
        })
        .collect();
    if peers.len() == 1 {
        peers.push(PeerHost {
            name: peers[0].name.clone(),
            addr: Ipv4Addr::from(u32::from(peers[0].addr) + 1),
        });
    }
    for peer in &peers {
        let id = p.endpoint_id(&peer.name).unwrap();
        assert_eq!(p.peer_of(peer.addr.into()), Peer::Endpoint(id), "{peer:?}");
    }
    (
        n.name.clone(),
        v4(n.addresses.iter().copied()).unwrap(),
        peers,
    )
}

/// Start tcpdump in `ns` and wait until it listens.
fn start_capture(ns: &str, file: &Path) -> Child {
    let mut c = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "tcpdump",
            "-i",
            "any",
            "-U",
            "--immediate-mode",
            "-s",
            "128",
        ])
        .arg("-w")
        .arg(file)
        .arg("tcp")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(c.stderr.take().unwrap());
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 && !line.contains("listening on") {
        line.clear();
    }
    assert!(line.contains("listening on"), "tcpdump did not start");
    // Keep draining stderr so tcpdump never blocks on it.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    c
}

#[test]
fn firewall_traffic_in_namespaces_connects_expected_edges_only_and_replay_agrees() {
    if !prerequisites("firewall traffic test", &["ip", "nft", "tcpdump"]) {
        return;
    }
    let pid = std::process::id();
    let sites: BTreeSet<String> = std::fs::read_to_string(root().join("fixtures/fixtures.tsv"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split('\t').nth(1).map(str::to_string))
        .collect();
    for (i, (site, _, _)) in BUNDLED_SITES.iter().enumerate() {
        if !sites.contains(*site) {
            continue;
        }
        let p = policy(site);
        let (node, naddr, peers) = choose(&p);
        let mut lab = Lab::new(site);
        let nns = lab.netns(format!("pwfw{pid}s{i}n"));
        for (j, peer) in peers.iter().enumerate() {
            let pns = lab.netns(format!("pwfw{pid}s{i}{}", ["a", "b"][j]));
            let (here, there) = (format!("fw{pid}{j}n"), format!("fw{pid}{j}p"));
            sh(&[
                "ip", "-n", &nns, "link", "add", &here, "type", "veth", "peer", "name", &there,
                "netns", &pns,
            ]);
            for (ns, dev, own, other) in [
                (&nns, &here, naddr, peer.addr),
                (&pns, &there, peer.addr, naddr),
            ] {
                sh(&[
                    "ip",
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{own}/32"),
                    "dev",
                    dev,
                ]);
                sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
                sh(&[
                    "ip",
                    "-n",
                    ns,
                    "route",
                    "add",
                    &format!("{other}/32"),
                    "dev",
                    dev,
                ]);
            }
        }
        // Both directions: N's inbound edges, and the edges N opens.
        let rules = lab.dir.join("rules.nft");
        let text = firewall(&["--site", site, "--node", &node, "--direction", "both"]);
        std::fs::write(&rules, text).unwrap();
        let load = [
            "ip",
            "netns",
            "exec",
            &nns,
            "nft",
            "-f",
            rules.to_str().unwrap(),
        ];
        sh(&load);

        // Listeners on every port the model knows, and one it does not, on
        // N and on both peers.
        let mut ports: BTreeSet<u16> = p.model.rules.iter().map(|r| r.port).collect();
        ports.insert(OUTSIDE_PORT);
        let ports: Vec<u16> = ports.into_iter().collect();
        let peer_ns: Vec<String> = (0..peers.len())
            .map(|j| format!("pwfw{pid}s{i}{}", ["a", "b"][j]))
            .collect();
        let mut listeners: Vec<TcpListener> = Vec::new();
        for ns in std::iter::once(&nns).chain(&peer_ns) {
            let ports = ports.clone();
            listeners.extend(in_ns(ns, move || {
                ports
                    .iter()
                    .map(|port| TcpListener::bind(("0.0.0.0", *port)).unwrap())
                    .collect::<Vec<_>>()
            }));
        }
        let pcap = lab.dir.join("n.pcap");
        let capture = start_capture(&nns, &pcap);
        lab.children.push(capture);

        // Every peer tries every port of N, and N every port of every peer,
        // all at once.
        let me = PeerHost {
            name: node.clone(),
            addr: naddr,
        };
        let mut tries: Vec<Attempt> = Vec::new();
        for (peer, pns) in peers.iter().zip(&peer_ns) {
            for port in &ports {
                tries.push(Attempt::new(pns, peer, &me, *port));
                tries.push(Attempt::new(&nns, &me, peer, *port));
            }
        }
        let results: Vec<(Attempt, bool)> = tries.into_iter().map(Attempt::join).collect();
        // Capture time moves past the SYN timeout of the replay below (2s
        // after the last SYN, retransmitted at 1s; not 1s, which races
        // with that retransmission).
        std::thread::sleep(Duration::from_millis(2000));
        let (last, _) = results.iter().find(|r| r.1).expect("some attempt connects");
        let (ns, to) = (
            last.ns.clone(),
            SocketAddr::from((last.dst.addr, last.port)),
        );
        assert!(in_ns(&ns, move || {
            TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_ok()
        }));
        std::thread::sleep(Duration::from_millis(300));
        let mut capture = lab.children.pop().unwrap();
        sh(&["kill", "-INT", &capture.id().to_string()]);
        let _ = capture.wait();
        drop(listeners);

        if let Some(dir) = std::env::var_os("PORTWATCH_KEEP_CAPTURES") {
            std::fs::copy(&pcap, Path::new(&dir).join(format!("firewall-{site}.pcap"))).unwrap();
        }
        // What the firewall let through is exactly what the model expects.
        let all = p.all_edges();
        let expected = |a: &Attempt| {
            let (src, dst) = (p.endpoint_id(&a.src.name), p.endpoint_id(&a.dst.name));
            all.iter()
                .any(|e| Some(e.src) == src && Some(e.dst) == dst && e.port == a.port)
        };
        // The ports the plan drops on, per way: the ports the model assigns
        // to N. Others (and the port outside the model) are left alone.
        let plan = Plan::derive(&p, &node, Direction::Both, Blocks::Assigned).unwrap();
        let guarded = |way: Way| -> BTreeSet<u16> {
            (plan.rules.iter())
                .filter(|r| r.way == way && r.action != Action::Allow)
                .flat_map(|r| r.ports.clone())
                .collect()
        };
        let guarded = [guarded(Way::Inbound), guarded(Way::Outbound)];
        let left_alone = |a: &Attempt| !guarded[usize::from(a.src.name == node)].contains(&a.port);
        let (mut allowed, mut dropped, mut alone) = ([0, 0], [0, 0], [0, 0]);
        for (a, connected) in &results {
            let want = expected(a) || left_alone(a);
            assert_eq!(
                *connected,
                want,
                "{site}: {a} connected={connected}, expected edge={}, left alone={}",
                expected(a),
                left_alone(a)
            );
            let way = usize::from(a.src.name == node);
            if left_alone(a) && !expected(a) {
                alone[way] += 1;
            } else {
                allowed[way] += usize::from(want);
                dropped[way] += usize::from(!want);
            }
        }
        assert!(allowed[0] > 0, "{site}: no expected inbound edge tried");

        // The replay of that traffic agrees.
        let out = Command::new(PORTWATCH)
            .args([
                "replay", "--site", site, "--sensor", &node, "--format", "json",
            ])
            .args(["--syn-timeout", "2s"])
            .arg(&pcap)
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{site}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        let findings = report["findings"].as_array().unwrap();
        assert!(
            !findings.iter().any(|f| f["kind"] == "blocked"),
            "{site}: an expected edge is blocked: {findings:#?}"
        );
        let same = |f: &Value, a: &Attempt| {
            f["src"] == a.src.name.as_str()
                && f["dst"] == a.dst.name.as_str()
                && f["port"] == a.port
        };
        let addrs = |f: &Value, a: &Attempt| {
            f["src_addr"] == a.src.addr.to_string().as_str()
                && f["dst_addr"] == a.dst.addr.to_string().as_str()
        };
        for (a, connected) in &results {
            let f = findings.iter().find(|f| same(f, a) && addrs(f, a));
            if a.port == OUTSIDE_PORT {
                let f = f.unwrap_or_else(|| panic!("{site}: {a}: no finding"));
                assert_eq!(f["kind"], "unexpected");
                assert!(f["outcomes"]["established"].as_u64() >= Some(1));
            } else if *connected && !expected(a) {
                // A port the model knows but not on this side of N: left
                // alone by the firewall, still a finding of the audit.
                let f = f.unwrap_or_else(|| panic!("{site}: {a}: no finding"));
                assert!(f["outcomes"]["established"].as_u64() >= Some(1), "{f}");
            } else if *connected {
                assert!(f.is_none(), "{site}: finding for an expected edge: {f:?}");
                let flows = report["flows"].as_array().unwrap();
                let flow = flows.iter().find(|r| same(r, a));
                let flow = flow.unwrap_or_else(|| panic!("{site}: no flow {a}"));
                assert_eq!(flow["verdict"], "expected");
                assert!(flow["outcomes"]["established"].as_u64() >= Some(1));
            } else if a.src.name == node {
                // Dropped by N's output chain before any capture point: the
                // sensor on N never sees these attempts.
                let flows = report["flows"].as_array().unwrap();
                assert!(
                    f.is_none() && !flows.iter().any(|r| same(r, a)),
                    "{site}: {a} seen"
                );
            } else {
                let f = f.unwrap_or_else(|| panic!("{site}: failed {a} is no finding"));
                let kind = f["kind"].as_str().unwrap();
                assert!(kind == "unexpected" || kind == "local_only", "{f}");
                let o = &f["outcomes"];
                assert_eq!(o["established"], 0, "{f}");
                assert_eq!(
                    o["refused"].as_u64().unwrap() + o["unanswered"].as_u64().unwrap(),
                    f["count"].as_u64().unwrap(),
                    "{site}: {f}"
                );
            }
        }
        eprintln!(
            "{site}: node {node}, peers {}: inbound {} expected edges connected, {} attempts dropped, \
             {} on ports not N's left alone; outbound {} connected, {} dropped, {} left alone",
            peers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(" and "),
            allowed[0],
            dropped[0],
            alone[0],
            allowed[1],
            dropped[1],
            alone[1]
        );
    }
}

/// One connection attempt from a namespace, running on its own thread.
struct Attempt {
    ns: String,
    src: PeerHost,
    dst: PeerHost,
    port: u16,
    thread: Option<std::thread::JoinHandle<bool>>,
}

impl Attempt {
    fn new(ns: &str, src: &PeerHost, dst: &PeerHost, port: u16) -> Attempt {
        let (ns2, to) = (ns.to_string(), SocketAddr::from((dst.addr, port)));
        Attempt {
            ns: ns.to_string(),
            src: src.clone(),
            dst: dst.clone(),
            port,
            thread: Some(std::thread::spawn(move || {
                enter(&ns2);
                TcpStream::connect_timeout(&to, Duration::from_millis(1500)).is_ok()
            })),
        }
    }

    /// Whether it connected.
    fn join(mut self) -> (Attempt, bool) {
        let ok = self.thread.take().unwrap().join().unwrap();
        (self, ok)
    }
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}) -> {} ({}):{}",
            self.src.name, self.src.addr, self.dst.name, self.dst.addr, self.port
        )
    }
}

/// Text with what matters to nft (quotes, `#`, `;`, braces, line breaks)
/// made likely, and any other character.
fn hostile() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        '\n', '\r', '\t', '\0', '"', '\'', '\\', '#', ';', '{', '}', ' ', '\u{2028}', 'é',
    ]);
    prop::collection::vec(prop_oneof![special, any::<char>()], 0..40)
        .prop_map(|cs| cs.into_iter().collect())
}

/// A plan of two inbound rules (an allow, a drop that logs) and an
/// outbound allow, every text in it given.
fn plan_of(texts: [String; 6]) -> Plan {
    let [site, node, model, summary, rule, text] = texts;
    let cite = Cite {
        origin: CiteOrigin::Site,
        rule,
        text,
    };
    let net = |s: &str| Remote::Nets(vec![s.parse().unwrap()]);
    let rule = |way, action, ports: Vec<u16>, remote| Rule {
        way,
        action,
        ports,
        remote,
        summary: summary.clone(),
        cites: vec![cite.clone()],
    };
    Plan {
        page: model.clone(),
        site,
        model,
        node,
        addresses: vec!["192.0.2.10".parse().unwrap()],
        direction: Direction::Both,
        blocks: Blocks::Assigned,
        rules: vec![
            rule(
                Way::Inbound,
                Action::Allow,
                vec![4242],
                net("192.0.2.11/32"),
            ),
            rule(
                Way::Inbound,
                Action::Drop(DropKind::NotExpected),
                vec![4242, 4243],
                Remote::Any,
            ),
            rule(
                Way::Outbound,
                Action::Allow,
                vec![443],
                net("2001:db8::/32"),
            ),
        ],
    }
}

/// Load `plan`'s file in the namespace `ns` and compare what nft holds with
/// the plan: one table, its two chains, and per chain the two fixed rules
/// then each rule of the plan with its quoted note (a drop's log rule has
/// none).
fn loads_exactly(ns: &str, dir: &Path, plan: &Plan) -> Result<(), String> {
    let file = dir.join("plan.nft");
    let text = nftables::render(plan);
    std::fs::write(&file, &text).unwrap();
    let f = file.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .output()
            .unwrap();
        match out.status.success() {
            true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
            false => Err(format!(
                "{args:?}: {}\n{text}",
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    };
    run(&["nft", "flush", "ruleset"])?;
    run(&["nft", "-c", "-f", f])?;
    run(&["nft", "-f", f])?;
    let listed: Value = serde_json::from_str(&run(&["nft", "-j", "list", "ruleset"])?).unwrap();
    let items = listed["nftables"].as_array().unwrap();
    let of = |kind: &'static str| items.iter().filter_map(move |i| i.get(kind));
    let tables: Vec<String> = of("table")
        .map(|t| {
            format!(
                "{} {}",
                t["family"].as_str().unwrap(),
                t["name"].as_str().unwrap()
            )
        })
        .collect();
    let chains: Vec<&str> = of("chain").map(|c| c["name"].as_str().unwrap()).collect();
    let comments = |chain: &str| -> Vec<Option<String>> {
        of("rule")
            .filter(|r| r["chain"] == chain)
            .map(|r| r["comment"].as_str().map(str::to_string))
            .collect()
    };
    let want = |way: Way| -> Vec<Option<String>> {
        let fixed = ["portwatch: replies", "portwatch: same host"];
        let mut w: Vec<Option<String>> = fixed.iter().map(|c| Some(c.to_string())).collect();
        for r in plan.rules.iter().filter(|r| r.way == way) {
            let quoted = quote::nft_string(&nftables::note(r));
            if matches!(r.action, Action::Drop(_)) {
                w.push(None);
            }
            w.push(Some(quoted[1..quoted.len() - 1].to_string()));
        }
        w
    };
    let got = (tables, chains, comments("input"), comments("output"));
    let expected = (
        vec!["inet portwatch".to_string()],
        vec!["input", "output"],
        want(Way::Inbound),
        want(Way::Outbound),
    );
    if got != expected {
        return Err(format!("{got:?}\n!=\n{expected:?}\n{text}"));
    }
    Ok(())
}

/// The issue's reproducer: a site name with line breaks made nft create a
/// table of its own; now the header holds it as a comment.
#[test]
fn firewall_names_with_line_breaks_stay_in_comments() {
    if !prerequisites("nftables quoting test", &["ip", "nft"]) {
        return;
    }
    let mut lab = Lab::new("names");
    let ns = lab.netns(format!("pwfw{}q", std::process::id()));
    let evil =
        "x\ntable inet backdoor {\n chain c { type filter hook input priority 0; accept; }\n}\n#";
    let texts = [evil, evil, evil, evil, "r\" accept; #", "t"].map(str::to_string);
    loads_exactly(&ns, &lab.dir, &plan_of(texts)).unwrap();
}

/// For any texts in a plan, nft accepts the file and holds exactly the
/// plan's rules: nothing in a name, summary or citation becomes a command.
#[test]
fn firewall_nft_quoting_holds_for_any_text() {
    if !prerequisites("nftables quoting property test", &["ip", "nft"]) {
        return;
    }
    let mut lab = Lab::new("prop");
    let ns = lab.netns(format!("pwfw{}p", std::process::id()));
    let mut runner = TestRunner::new(ProptestConfig::with_cases(48));
    let texts = [(); 6].map(|_| hostile());
    let result = runner.run(&texts, |texts| {
        loads_exactly(&ns, &lab.dir, &plan_of(texts)).map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
