//! A [`Plan`] as a PowerShell script for change control on a Windows node:
//! `#Requires -RunAsAdministrator`, `$ErrorActionPreference = 'Stop'`,
//! `[CmdletBinding(SupportsShouldProcess)]` so `-WhatIf` and `-Confirm`
//! work, `-Stage Audit` (allow rules in force, block rules added disabled,
//! connections logged) before `-Stage Enforce`, `-Profile` and
//! `-PolicyStore` as parameters. Every rule is in the group
//! `portwatch <site>`; a run exports the group's current rules (CliXml),
//! adds the new rules, then removes the old ones by name, so there is no
//! moment without rules.
//!
//! Windows applies block rules before allow rules, whatever their order, so
//! "drop everyone else on this port" cannot be a block rule for any address:
//! it would block the allowed hosts too. Each block rule therefore lists the
//! complement of the addresses allowed on its ports, as address ranges.
//! Windows does not filter loopback traffic, so local-only ports blocked for
//! every remote address stay open to the host itself.
//!
//! Text from the site and model only appears in `#` comments
//! ([`comment`]) and single-quoted strings ([`powershell_string`]); the
//! tests tokenize every script (`pwsh` is not on the build machines).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::{Action, CiteOrigin, Plan, Remote, Rule, Way};
use crate::quote::{comment, log_field, powershell_string};

/// The cmdlets the script calls with the parameters it gives each; the
/// test checks each against Microsoft's documented list.
pub const CMDLETS: &[(&str, &[&str])] = &[
    ("Get-NetFirewallRule", &["Group", "PolicyStore"]),
    (
        "New-NetFirewallRule",
        &[
            "DisplayName",
            "Group",
            "Direction",
            "Action",
            "Protocol",
            "LocalPort",
            "RemotePort",
            "RemoteAddress",
            "Profile",
            "PolicyStore",
            "Enabled",
            "Description",
        ],
    ),
    ("Remove-NetFirewallRule", &["Name", "PolicyStore"]),
    (
        "Set-NetFirewallProfile",
        &["Name", "LogAllowed", "LogBlocked", "PolicyStore"],
    ),
];

/// The `New-NetFirewallRule` parameters this renderer writes.
pub const PARAMETERS: &[&str] = CMDLETS[1].1;

/// The longest rule description written, in characters: the vendor page
/// by title and section, or the site's reason, cut with `...`.
pub const DESCRIPTION_MAX: usize = 240;

/// The `Set-NetFirewallProfile` parameters [`logging`] writes; the test
/// checks each against Microsoft's documented list.
pub const LOGGING_PARAMETERS: &[&str] = &[
    "All",
    "LogAllowed",
    "LogBlocked",
    "LogMaxSizeKilobytes",
    "LogFileName",
];

/// Where Windows keeps the firewall log unless told otherwise; the
/// firewall service expands `%systemroot%`.
pub const FIREWALL_LOG: &str = r"%systemroot%\system32\LogFiles\Firewall\pfirewall.log";

/// The largest firewall log Windows keeps (32 MiB less 1 KiB) before it
/// rolls over to `pfirewall.log.old`.
pub const FIREWALL_LOG_KIB: u32 = 32767;

/// What makes the node a sensor portwatch can read without a capture
/// driver (`--enable-logging`): the firewall log of every allowed and
/// dropped connection, and the Security log's Filtering Platform events.
pub fn logging(plan: &Plan) -> String {
    let mut s = String::new();
    let header = [
        format!(
            "Make {} a sensor portwatch can read (--enable-logging).",
            plan.node
        ),
        String::new(),
        "Windows Defender Firewall log, every profile: one line per allowed and".into(),
        "dropped connection, rolled over to pfirewall.log.old at the size cap.".into(),
    ];
    for line in header {
        let _ = writeln!(s, "{}", comment(&line).trim_end());
    }
    let _ = writeln!(
        s,
        "Set-NetFirewallProfile -All -LogAllowed True -LogBlocked True \
         -LogMaxSizeKilobytes {FIREWALL_LOG_KIB} -LogFileName {}",
        powershell_string(FIREWALL_LOG)
    );
    let _ = writeln!(
        s,
        "\n# Security log, audit policy \"Filtering Platform Connection\": events 5156\n\
         # (permitted, a success audit) and 5157 (blocked, a failure audit).\n\
         # On a Windows that is not in English, name the subcategory by its GUID:\n\
         # /subcategory:\"{{0CCE9226-69AE-11D9-BED3-505054503030}}\"\n\
         auditpol /set /subcategory:\"Filtering Platform Connection\" /success:enable /failure:enable\n\
         \n\
         # Audit policy \"Filtering Platform Packet Drop\" (5152, GUID\n\
         # {{0CCE9225-69AE-11D9-BED3-505054503030}}) logs every dropped packet: on a\n\
         # server that is scanned or faces the internet that is more events than all\n\
         # other audits together, and can roll the Security log over and lose the\n\
         # events above. Turn it on for a short window, with a Security log sized\n\
         # for it:\n\
         # auditpol /set /subcategory:\"Filtering Platform Packet Drop\" /failure:enable"
    );
    s
}

/// The rules' group, one line: `portwatch <site>`.
pub fn group(plan: &Plan) -> String {
    format!("portwatch {}", log_field(&plan.site))
}

pub fn render(plan: &Plan) -> String {
    let g = group(plan);
    let gq = powershell_string(&g);
    let mut s = String::from(
        "#Requires -Version 5.1\n#Requires -Modules NetSecurity\n#Requires -RunAsAdministrator\n",
    );
    // Lines with the site's and model's text, each one comment.
    let named = [
        plan.title(),
        format!("Written by: {}", plan.command("powershell")),
        format!("Vendor page: {}", plan.page),
        String::new(),
        format!(
            "Run in an elevated PowerShell on {}; every rule is in the group {gq}.",
            plan.node
        ),
    ];
    for line in named {
        let _ = writeln!(s, "{}", comment(&line).trim_end());
    }
    let blocks = match plan.blocks {
        super::Blocks::Assigned => {
            "Blocks only on the ports the model assigns to this node; the others\n\
             # (80, 443, 445 on an engine...) with portwatch firewall --block-all-model-ports."
        }
        super::Blocks::AllKnown => {
            "Blocks on every port the model knows, assigned to this node or not\n\
             # (--block-all-model-ports)."
        }
    };
    // portwatch's own text.
    let _ = writeln!(
        s,
        "#   -WhatIf            show what would change, change nothing (-Confirm: ask each step)\n\
         #   -Stage Audit       (default) allow rules in force, block rules added disabled,\n\
         #                      allowed and dropped connections logged: nothing is blocked.\n\
         #                      Replay pfirewall.log with portwatch: its unexpected findings\n\
         #                      are what Enforce would block.\n\
         #   -Stage Enforce     the same rules, block rules enabled.\n\
         #   -Profile P         Any (default), Domain, Private, Public; several allowed.\n\
         #   -PolicyStore S     PersistentStore (default, this computer) or a GPO as\n\
         #                      'DOMAIN\\GPO name'.\n\
         #   -BackupDirectory D where the group's current rules are exported (CliXml)\n\
         #                      before any change; default: the current directory.\n\
         # The new rules are added before the old ones of the group are removed: there\n\
         # is no moment without rules. To restore, run the script that wrote the old\n\
         # rules again; the export shows what they were (Import-Clixml).\n\
         #\n\
         # {blocks}\n\
         # Block rules win over allow rules in Windows Defender Firewall, so each\n\
         # block rule lists every address its ports are NOT allowed from (the\n\
         # complement of the allow rules). Loopback traffic is not filtered."
    );
    let _ = writeln!(
        s,
        "\n[CmdletBinding(SupportsShouldProcess)]\n\
         param(\n\
         \x20   [ValidateSet('Audit', 'Enforce')]\n\
         \x20   [string] $Stage = 'Audit',\n\
         \x20   [Alias('Profile')]\n\
         \x20   [ValidateSet('Any', 'Domain', 'Private', 'Public')]\n\
         \x20   [string[]] $FirewallProfile = @('Any'),\n\
         \x20   [ValidateNotNullOrEmpty()]\n\
         \x20   [string] $PolicyStore = 'PersistentStore',\n\
         \x20   [ValidateNotNullOrEmpty()]\n\
         \x20   [string] $BackupDirectory = (Get-Location).Path\n\
         )\n\
         \n\
         $ErrorActionPreference = 'Stop'\n\
         $Group = {gq}\n\
         # Audit: the block rules are added disabled. Enforce: enabled.\n\
         $Blocking = if ($Stage -eq 'Enforce') {{ 'True' }} else {{ 'False' }}\n\
         \n\
         # The rules of the group now: exported first, removed once the new ones are in.\n\
         $Old = @(Get-NetFirewallRule -Group $Group -PolicyStore $PolicyStore -ErrorAction SilentlyContinue)\n\
         $Backup = Join-Path $BackupDirectory ('portwatch-rules-' + (Get-Date -Format 'yyyyMMdd-HHmmss') + '.xml')\n\
         if ($Old.Count -gt 0 -and $PSCmdlet.ShouldProcess($Backup, 'Export the current rules of the group')) {{\n\
         \x20   $Old | ForEach-Object {{\n\
         \x20       [pscustomobject]@{{\n\
         \x20           Rule          = $_\n\
         \x20           PortFilter    = $_ | Get-NetFirewallPortFilter\n\
         \x20           AddressFilter = $_ | Get-NetFirewallAddressFilter\n\
         \x20       }}\n\
         \x20   }} | Export-Clixml -Path $Backup -Confirm:$false\n\
         \x20   Write-Host ('Exported ' + $Old.Count + ' rules of the group to ' + $Backup)\n\
         }}\n\
         \n\
         if ($Stage -eq 'Audit') {{\n\
         \x20   # Log allowed and dropped connections of the profiles the rules apply to.\n\
         \x20   $Profiles = @('Domain', 'Private', 'Public')\n\
         \x20   if ($FirewallProfile -notcontains 'Any') {{ $Profiles = $FirewallProfile }}\n\
         \x20   Set-NetFirewallProfile -Name $Profiles -LogAllowed True -LogBlocked True -PolicyStore $PolicyStore\n\
         }}"
    );
    // Allowed address spans per (way, port): what each block rule leaves out.
    let mut allowed: BTreeMap<(Way, u16), Vec<Span>> = BTreeMap::new();
    for r in plan.rules.iter().filter(|r| r.action == Action::Allow) {
        for p in &r.ports {
            allowed
                .entry((r.way, *p))
                .or_default()
                .extend(spans(&r.remote));
        }
    }
    // Allow rules first: on a node without the group yet, nothing allowed
    // is blocked between two commands.
    for r in &plan.rules {
        match r.action {
            Action::Allow => command(&mut s, plan, r, &r.ports, &address_list(&r.remote)),
            Action::Drop(_) => {
                // Ports with the same allowed set share one block rule.
                let mut by_set: BTreeMap<Vec<String>, Vec<u16>> = BTreeMap::new();
                for p in &r.ports {
                    let ranges = match allowed.get(&(r.way, *p)) {
                        None => Vec::new(),
                        Some(spans) => match show(&complement(spans.clone())) {
                            v if v.is_empty() => continue, // allowed from anywhere
                            v => v,
                        },
                    };
                    by_set.entry(ranges).or_default().push(*p);
                }
                for (ranges, ports) in by_set {
                    let addrs = if ranges.is_empty() {
                        "Any".to_string()
                    } else {
                        quoted(ranges.iter())
                    };
                    command(&mut s, plan, r, &ports, &addrs);
                }
            }
        }
    }
    let _ = writeln!(
        s,
        "\n# The earlier rules of the group, now that the new ones are in.\n\
         if ($Old.Count -gt 0) {{\n\
         \x20   Remove-NetFirewallRule -Name $Old.Name -PolicyStore $PolicyStore\n\
         }}"
    );
    s
}

/// A rule's `-Description`: the vendor page by title and section (or the
/// site's reason), one line ([`log_field`]), at most [`DESCRIPTION_MAX`]
/// characters.
pub fn description(plan: &Plan, r: &Rule) -> String {
    let mut sections: Vec<&str> = Vec::new();
    let mut parts: Vec<String> = Vec::new();
    for c in &r.cites {
        match c.origin {
            CiteOrigin::Model => {
                if !sections.contains(&c.section()) {
                    sections.push(c.section());
                }
            }
            CiteOrigin::Site => parts.push(format!("{}: {}", c.rule, c.text)),
            CiteOrigin::Option => parts.push(c.rule.clone()),
        }
    }
    if !sections.is_empty() {
        let quoted: Vec<String> = sections.iter().map(|s| format!("\"{s}\"")).collect();
        let word = if sections.len() == 1 {
            "section"
        } else {
            "sections"
        };
        parts.insert(0, format!("{}, {word} {}", plan.page, quoted.join(", ")));
    }
    let text = log_field(&parts.join("; ")).into_owned();
    if text.chars().count() <= DESCRIPTION_MAX {
        return text;
    }
    let cut: String = text.chars().take(DESCRIPTION_MAX - 3).collect();
    format!("{cut}...")
}

fn address_list(r: &Remote) -> String {
    match r {
        Remote::Any => "Any".into(),
        Remote::Nets(nets) => quoted(nets.iter().map(super::host_or_net)),
        Remote::AllBut(_) => quoted(show(&spans(r)).iter()),
    }
}

/// A PowerShell array of single-quoted strings: `'a','b'`.
fn quoted<S: AsRef<str>>(items: impl Iterator<Item = S>) -> String {
    items
        .map(|s| powershell_string(s.as_ref()))
        .collect::<Vec<_>>()
        .join(",")
}

fn command(s: &mut String, plan: &Plan, r: &Rule, ports: &[u16], addrs: &str) {
    let group = group(plan);
    let (direction, port_param) = match r.way {
        Way::Inbound => ("Inbound", "LocalPort"),
        Way::Outbound => ("Outbound", "RemotePort"),
    };
    let (action, enabled) = match r.action {
        Action::Allow => ("Allow", "True"),
        Action::Drop(_) => ("Block", "$Blocking"),
    };
    let ports = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let summary = match r.action {
        Action::Allow => r.summary.clone(),
        Action::Drop(_) => format!("{} ({ports}/tcp)", r.summary),
    };
    let _ = writeln!(s, "\n{}", comment(&summary));
    for c in &r.cites {
        let _ = writeln!(s, "{}", comment(&format!("  {}: {}", c.rule, c.text)));
    }
    let _ = writeln!(
        s,
        "New-NetFirewallRule -DisplayName {} -Group $Group \
         -Direction {direction} -Action {action} -Protocol TCP -{port_param} {ports} \
         -RemoteAddress {addrs} -Profile $FirewallProfile -PolicyStore $PolicyStore \
         -Enabled {enabled} -Description {} | Out-Null",
        powershell_string(&format!("{group}: {}", log_field(&summary))),
        powershell_string(&description(plan, r)),
    );
}

/// A span of addresses of one family: (is IPv4, first, last).
type Span = (bool, u128, u128);

fn net_span(n: &IpNet) -> Span {
    (
        n.addr().is_ipv4(),
        to_u128(n.network()),
        to_u128(n.broadcast()),
    )
}

/// The addresses a remote covers.
fn spans(r: &Remote) -> Vec<Span> {
    match r {
        Remote::Any => vec![(true, 0, u32::MAX as u128), (false, 0, u128::MAX)],
        Remote::Nets(nets) => nets.iter().map(net_span).collect(),
        Remote::AllBut(nets) => complement(nets.iter().map(net_span).collect()),
    }
}

/// The spans of both families not covered by `spans`.
fn complement(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort();
    let mut out = Vec::new();
    for (v4, max) in [(true, u32::MAX as u128), (false, u128::MAX)] {
        let mut next = Some(0u128); // first address not yet covered or emitted
        for (_, lo, hi) in spans.iter().filter(|s| s.0 == v4) {
            if let Some(n) = next {
                if *lo > n {
                    out.push((v4, n, lo - 1));
                }
                if *hi >= n {
                    next = hi.checked_add(1).filter(|x| *x <= max);
                }
            }
        }
        if let Some(n) = next {
            out.push((v4, n, max));
        }
    }
    out
}

/// Spans as `first-last`, or a single address.
fn show(spans: &[Span]) -> Vec<String> {
    let addr = |v4: bool, x: u128| -> String {
        if v4 {
            Ipv4Addr::from(x as u32).to_string()
        } else {
            Ipv6Addr::from(x).to_string()
        }
    };
    spans
        .iter()
        .map(|(v4, lo, hi)| {
            if lo == hi {
                addr(*v4, *lo)
            } else {
                format!("{}-{}", addr(*v4, *lo), addr(*v4, *hi))
            }
        })
        .collect()
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complement_leaves_out_the_allowed_hosts() {
        let nets: Vec<IpNet> = ["192.0.2.11/32", "192.0.2.10/32", "2001:db8::10/128"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            show(&complement(nets.iter().map(net_span).collect())),
            vec![
                "0.0.0.0-192.0.2.9",
                "192.0.2.12-255.255.255.255",
                "::-2001:db8::f",
                "2001:db8::11-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ]
        );
    }

    #[test]
    fn complement_of_everything_is_empty_and_of_nothing_is_everything() {
        let all: Vec<IpNet> = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
        assert!(complement(all.iter().map(net_span).collect()).is_empty());
        assert_eq!(
            show(&complement(Vec::new())),
            vec![
                "0.0.0.0-255.255.255.255",
                "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
            ]
        );
    }
}
