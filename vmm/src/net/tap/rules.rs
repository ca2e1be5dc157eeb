//! The nftables scripts of the TAP network, as text (`nft -f -` input):
//! the host-wide table every TAP pod shares and one table per pod for its
//! published ports. Pure functions, so the rules are unit-tested as text;
//! the e2e suite tests what they do.

use std::net::Ipv4Addr;

use super::{BRIDGE, GATEWAY, PREFIX, SUBNET};
use crate::net::{PortSpec, Proto};

/// The host-wide table (family `inet`, so IPv6 is covered too).
pub const HOST_TABLE: &str = "husk_tap";

/// The per-pod table's name (pod ids are hex digits).
pub fn pod_table(id: &str) -> String {
    format!("husk_tap_{id}")
}

/// The host-wide table, replacing any earlier version of it:
/// - `input`: a pod opens nothing on the host itself (any of its addresses,
///   the gateway included) except DNS to the host's own resolvers
///   (`dns`, port 53); replies to what the host opened pass;
/// - `forward`: nothing from one pod to another (the bridge's ports are
///   isolated too; this covers a pod that routes through the gateway), no
///   link-local destination (cloud metadata services), no IPv6 (pods have
///   none; a hostile guest could still send it);
/// - `postrouting`: the pods' subnet leaves masqueraded; connections from
///   the host's loopback to a published port (DNAT in the pod's table) get
///   the gateway's address, as the pod could not answer 127.0.0.1.
pub fn host_table(dns: &[Ipv4Addr]) -> String {
    let dns_rule = if dns.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = dns.iter().map(ToString::to_string).collect();
        format!(
            "    iifname \"{BRIDGE}\" ip daddr {{ {} }} meta l4proto {{ tcp, udp }} th dport 53 accept\n",
            list.join(", ")
        )
    };
    format!(
        "table inet {HOST_TABLE}\n\
         delete table inet {HOST_TABLE}\n\
         table inet {HOST_TABLE} {{\n\
         \x20 chain input {{\n\
         \x20   type filter hook input priority filter; policy accept;\n\
         \x20   iifname \"{BRIDGE}\" ct state established,related accept\n\
         {dns_rule}\
         \x20   iifname \"{BRIDGE}\" reject with icmpx admin-prohibited\n\
         \x20 }}\n\
         \x20 chain forward {{\n\
         \x20   type filter hook forward priority filter; policy accept;\n\
         \x20   iifname \"{BRIDGE}\" oifname \"{BRIDGE}\" reject with icmpx admin-prohibited\n\
         \x20   iifname \"{BRIDGE}\" meta nfproto ipv6 drop\n\
         \x20   iifname \"{BRIDGE}\" ip daddr 169.254.0.0/16 reject with icmpx admin-prohibited\n\
         \x20 }}\n\
         \x20 chain postrouting {{\n\
         \x20   type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   ip saddr {SUBNET}/{PREFIX} oifname != \"{BRIDGE}\" masquerade\n\
         \x20   oifname \"{BRIDGE}\" ip saddr 127.0.0.0/8 snat ip to {GATEWAY}\n\
         \x20 }}\n\
         }}\n"
    )
}

/// Deletes the host-wide table, if it exists.
pub fn delete_host_table() -> String {
    format!("table inet {HOST_TABLE}\ndelete table inet {HOST_TABLE}\n")
}

/// A pod's table, named `name` ([`pod_table`]): each published port, on the host's own addresses (or
/// the one it names), is forwarded to `addr` — from outside (`prerouting`)
/// and from the host itself (`output`; priority -100 is `dstnat`, which
/// nft 1.0.6 names only for `prerouting`).
pub fn pod_table_script(name: &str, addr: Ipv4Addr, ports: &[PortSpec]) -> String {
    let mut rules = String::new();
    for p in ports {
        let proto = match p.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        let dst = match p.host_ip {
            Some(ip) => format!("ip daddr {ip}"),
            None => "fib daddr type local".into(),
        };
        rules.push_str(&format!(
            "    {dst} {proto} dport {} dnat to {addr}:{}\n",
            p.host_port, p.pod_port
        ));
    }
    format!(
        "table ip {name}\n\
         delete table ip {name}\n\
         table ip {name} {{\n\
         \x20 chain prerouting {{\n\
         \x20   type nat hook prerouting priority dstnat; policy accept;\n\
         {rules}\
         \x20 }}\n\
         \x20 chain output {{\n\
         \x20   type nat hook output priority -100; policy accept;\n\
         {rules}\
         \x20 }}\n\
         }}\n"
    )
}

/// Deletes pod `id`'s table, if it exists.
pub fn delete_pod_table(id: &str) -> String {
    let name = pod_table(id);
    format!("table ip {name}\ndelete table ip {name}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_table_isolates_pods_and_masquerades() {
        let t = host_table(&[Ipv4Addr::new(192, 0, 2, 53)]);
        assert!(t.contains("iifname \"husk0\" reject"));
        assert!(t.contains("ip daddr { 192.0.2.53 } meta l4proto { tcp, udp } th dport 53 accept"));
        assert!(t.contains("iifname \"husk0\" oifname \"husk0\" reject"));
        assert!(t.contains("ip daddr 169.254.0.0/16 reject"));
        assert!(t.contains("ip saddr 10.89.0.0/16 oifname != \"husk0\" masquerade"));
        // Replaced as a whole each time: re-running it never duplicates rules.
        assert!(t.starts_with("table inet husk_tap\ndelete table inet husk_tap\n"));
        assert!(!host_table(&[]).contains("dport 53"));
    }

    #[test]
    fn published_ports_become_dnat_rules_both_ways() {
        let ports: Vec<PortSpec> = vec![
            "8080:80".parse().unwrap(),
            "127.0.0.1:5353:53/udp".parse().unwrap(),
        ];
        let t = pod_table_script(
            &pod_table("0a1b2c3d4e5f"),
            Ipv4Addr::new(10, 89, 0, 7),
            &ports,
        );
        let tcp = "fib daddr type local tcp dport 8080 dnat to 10.89.0.7:80";
        let udp = "ip daddr 127.0.0.1 udp dport 5353 dnat to 10.89.0.7:53";
        assert_eq!(t.matches(tcp).count(), 2, "prerouting and output");
        assert_eq!(t.matches(udp).count(), 2);
        assert!(t.contains("table ip husk_tap_0a1b2c3d4e5f {"));
    }
}
