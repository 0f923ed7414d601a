//! Lists of pods in views (`podswitch show policies`), kept compact and spelled out on demand.
//!
//! A peer such as `namespaceSelector: {}` or a wide `ipBlock` matches every pod of the cluster;
//! a string per matched pod per peer would make the views, not the tables, the bulk of a
//! compile's time and memory. A [`PodList`] holds what it was computed from (label groups, a
//! block, pod indices) and the compile's [`Directory`] of pods (shared by every list), and
//! spells out its strings when it is serialized, printed or compared.
//!
//! Contract: a [`PodList`] serializes, prints (`Debug`) and compares exactly as the
//! `Vec<String>` of its entries would.
use std::fmt;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;

use super::model;

/// The pods of one compile that take part in policy, in view order (pod index `i`), and their
/// label groups (pods of one namespace with equal labels).
#[derive(Debug, Default)]
pub struct Directory {
    /// `namespace/name` of every pod, one after the other: pod `i` is `text[ends[i-1]..ends[i]]`.
    text: String,
    ends: Vec<u32>,
    ips: Vec<Ipv4Addr>,
    /// Whether pod `i` has an address no other pod has (only such pods are matched as pods).
    addressable: Vec<bool>,
    /// Pods of group `g`: `group_pods[group_start[g]..group_start[g + 1]]`, in view order.
    group_start: Vec<u32>,
    group_pods: Vec<u32>,
}

impl Directory {
    /// `pods`: (namespace, name, ip, addressable, group) in view order; groups are numbered
    /// from 0 without gaps.
    pub(crate) fn new<'a>(pods: impl ExactSizeIterator<Item = (&'a str, &'a str, Ipv4Addr, bool, u32)>, groups: usize) -> Self {
        let n = pods.len();
        let mut d = Directory {
            text: String::with_capacity(n * 16),
            ends: Vec::with_capacity(n),
            ips: Vec::with_capacity(n),
            addressable: Vec::with_capacity(n),
            group_start: vec![0; groups + 1],
            group_pods: vec![0; n],
        };
        let mut group_of = Vec::with_capacity(n);
        for (ns, name, ip, addressable, group) in pods {
            d.text.push_str(ns);
            d.text.push('/');
            d.text.push_str(name);
            d.ends.push(u32::try_from(d.text.len()).expect("pod names below 4 GiB"));
            d.ips.push(ip);
            d.addressable.push(addressable);
            d.group_start[group as usize + 1] += 1;
            group_of.push(group);
        }
        for g in 0..groups {
            d.group_start[g + 1] += d.group_start[g];
        }
        let mut fill = d.group_start.clone();
        for (i, g) in group_of.into_iter().enumerate() {
            d.group_pods[fill[g as usize] as usize] = i as u32;
            fill[g as usize] += 1;
        }
        d
    }

    pub(crate) fn len(&self) -> usize {
        self.ips.len()
    }

    /// `namespace/name` of pod `i`.
    pub(crate) fn name(&self, i: u32) -> &str {
        let i = i as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    pub(crate) fn ip(&self, i: u32) -> Ipv4Addr {
        self.ips[i as usize]
    }

    pub(crate) fn addressable(&self, i: u32) -> bool {
        self.addressable[i as usize]
    }

    /// Every pod of label group `g`, in view order.
    pub(crate) fn group(&self, g: u32) -> &[u32] {
        &self.group_pods[self.group_start[g as usize] as usize..self.group_start[g as usize + 1] as usize]
    }

    /// The addressable pods of `groups`, in view order.
    pub(crate) fn addressable_in_groups(&self, groups: &[u32]) -> Vec<u32> {
        let mut v: Vec<u32> = groups.iter().flat_map(|g| self.group(*g)).copied().filter(|i| self.addressable(*i)).collect();
        v.sort_unstable();
        v
    }

    /// The addressable pods whose address is in the block, in view order.
    pub(crate) fn addressable_in_block(&self, cidr: &Ipv4Net, except: &[Ipv4Net]) -> Vec<u32> {
        (0..self.len() as u32).filter(|i| self.addressable(*i) && model::block_contains(cidr, except, self.ip(*i))).collect()
    }
}

#[derive(Clone)]
enum Items {
    /// These pods: `namespace/name ip`.
    Pods(Arc<[u32]>),
    /// The addressable pods of these label groups, in view order: `namespace/name ip`.
    Groups(Arc<[u32]>),
    /// The addressable pods in the block, in view order: `namespace/name ip`.
    Block(Ipv4Net, Arc<[Ipv4Net]>),
    /// A pod and a port number: `namespace/name port`.
    Ports(Arc<[(u32, u16)]>),
}

/// A list of `namespace/name ip` (or `namespace/name port`) strings, spelled out on demand;
/// see the module contract.
#[derive(Clone)]
pub struct PodList {
    dir: Arc<Directory>,
    items: Items,
}

impl PodList {
    /// Pods by index, in the order given.
    pub(crate) fn pods(dir: &Arc<Directory>, pods: impl Into<Arc<[u32]>>) -> Self {
        Self { dir: dir.clone(), items: Items::Pods(pods.into()) }
    }

    pub(crate) fn empty(dir: &Arc<Directory>) -> Self {
        Self::pods(dir, Vec::new())
    }

    /// The addressable pods of label groups.
    pub(crate) fn groups(dir: &Arc<Directory>, groups: Arc<[u32]>) -> Self {
        Self { dir: dir.clone(), items: Items::Groups(groups) }
    }

    /// The addressable pods in an IPv4 block.
    pub(crate) fn block(dir: &Arc<Directory>, cidr: Ipv4Net, except: &[Ipv4Net]) -> Self {
        Self { dir: dir.clone(), items: Items::Block(cidr, except.into()) }
    }

    /// Pods with a port number each.
    pub(crate) fn ports(dir: &Arc<Directory>, ports: Vec<(u32, u16)>) -> Self {
        Self { dir: dir.clone(), items: Items::Ports(ports.into()) }
    }

    /// The pods the entries are about, with the number to print after the name.
    fn rows(&self) -> Vec<(u32, Row)> {
        let with_ip = |v: &[u32]| v.iter().map(|i| (*i, Row::Ip)).collect();
        match &self.items {
            Items::Pods(v) => with_ip(v),
            Items::Groups(g) => with_ip(&self.dir.addressable_in_groups(g)),
            Items::Block(c, e) => with_ip(&self.dir.addressable_in_block(c, e)),
            Items::Ports(v) => v.iter().map(|(i, p)| (*i, Row::Port(*p))).collect(),
        }
    }

    pub fn len(&self) -> usize {
        match &self.items {
            Items::Pods(v) => v.len(),
            Items::Ports(v) => v.len(),
            _ => self.rows().len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries, spelled out.
    pub fn iter(&self) -> impl Iterator<Item = String> + '_ {
        self.rows().into_iter().map(|(i, row)| {
            let mut s = String::with_capacity(32);
            s.push_str(self.dir.name(i));
            let _ = match row {
                Row::Ip => write!(s, " {}", self.dir.ip(i)),
                Row::Port(p) => write!(s, " {p}"),
            };
            s
        })
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.iter().collect()
    }
}

#[derive(Clone, Copy)]
enum Row {
    Ip,
    Port(u16),
}

impl fmt::Debug for PodList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for PodList {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for PodList {}

impl<S: AsRef<str>> PartialEq<[S]> for PodList {
    fn eq(&self, other: &[S]) -> bool {
        self.len() == other.len() && self.iter().zip(other).all(|(a, b)| a == b.as_ref())
    }
}

impl<S: AsRef<str>, const N: usize> PartialEq<[S; N]> for PodList {
    fn eq(&self, other: &[S; N]) -> bool {
        *self == other[..]
    }
}

impl<S: AsRef<str>> PartialEq<Vec<S>> for PodList {
    fn eq(&self, other: &Vec<S>) -> bool {
        *self == other[..]
    }
}

impl serde::Serialize for PodList {
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        s.collect_seq(self.iter())
    }
}
