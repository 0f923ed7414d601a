//! Label selectors (`metav1.LabelSelector`) read into plain values, validated as the API server
//! validates them, and matched as `metav1.LabelSelectorAsSelector` does.
//!
//! Contract:
//! - `matchLabels` and `matchExpressions` are ANDed; an empty selector (`{}`, neither field or
//!   both empty) selects everything. What a *missing* selector means is the caller's business
//!   (in a NetworkPolicy peer it is not "everything").
//! - Operators (case-sensitive, as the API): `In` (label present with one of the values),
//!   `NotIn` (label absent, or present with none of the values), `Exists`, `DoesNotExist`.
//!   `In`/`NotIn` need at least one value, `Exists`/`DoesNotExist` take none; an unknown
//!   operator, an invalid label key or value is an error sentence: the caller fails closed.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.key);
        match &self.op {
            Op::In(vals) => v.is_some_and(|v| vals.contains(v)),
            Op::NotIn(vals) => v.is_none_or(|v| !vals.contains(v)),
            Op::Exists => v.is_some(),
            Op::DoesNotExist => v.is_none(),
        }
    }
}

/// A parsed, valid selector. No requirement: selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// The selector that selects everything (`{}`).
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Reads and validates `sel`; the error names the offending field relative to the selector.
    pub fn parse(sel: &LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            validate_key(k).map_err(|source| SelectorError::MatchLabelsKey { key: k.clone(), source })?;
            validate_value(v).map_err(|source| SelectorError::MatchLabelsValue { key: k.clone(), value: v.clone(), source })?;
            requirements.push(Requirement { key: k.clone(), op: Op::In(BTreeSet::from([v.clone()])) });
        }
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            let at = format!("matchExpressions[{i}]");
            validate_key(&e.key).map_err(|source| SelectorError::ExpressionKey { at: at.clone(), key: e.key.clone(), source })?;
            let values: Vec<String> = e.values.clone().unwrap_or_default();
            let op = match e.operator.as_str() {
                "In" | "NotIn" => {
                    if values.is_empty() {
                        return Err(SelectorError::NoValues { at, operator: e.operator.clone() });
                    }
                    for v in &values {
                        validate_value(v).map_err(|source| SelectorError::ExpressionValue { at: at.clone(), value: v.clone(), source })?;
                    }
                    let set: BTreeSet<String> = values.into_iter().collect();
                    if e.operator == "In" {
                        Op::In(set)
                    } else {
                        Op::NotIn(set)
                    }
                }
                "Exists" | "DoesNotExist" => {
                    if !values.is_empty() {
                        return Err(SelectorError::Values { at, operator: e.operator.clone(), values });
                    }
                    if e.operator == "Exists" {
                        Op::Exists
                    } else {
                        Op::DoesNotExist
                    }
                }
                other => {
                    return Err(SelectorError::Operator { at, operator: other.to_string() });
                }
            };
            requirements.push(Requirement { key: e.key.clone(), op });
        }
        Ok(Self { requirements })
    }
}

/// Kubernetes' selector string form (`pod=a,ns in (x,y),!gone`); `(all)` for the empty one.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requirements.is_empty() {
            return f.write_str("(all)");
        }
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match &r.op {
                Op::In(v) if v.len() == 1 => format!("{}={}", r.key, v.iter().next().expect("one value")),
                Op::In(v) => format!("{} in ({})", r.key, v.iter().cloned().collect::<Vec<_>>().join(",")),
                Op::NotIn(v) => format!("{} notin ({})", r.key, v.iter().cloned().collect::<Vec<_>>().join(",")),
                Op::Exists => r.key.clone(),
                Op::DoesNotExist => format!("!{}", r.key),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// The name part of a label key, and a label value: at most 63 characters, alphanumerics,
/// `-`, `_`, `.`, beginning and ending with an alphanumeric.
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// DNS-1123 subdomain: the optional prefix of a label key.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
        })
}

/// What is wrong with a label key or value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("the prefix must be a DNS subdomain (lowercase)")]
    Prefix,
    #[error("must be at most 63 alphanumerics, '-', '_' or '.', beginning and ending with an alphanumeric (with an optional DNS prefix and '/')")]
    Name,
    #[error("must be empty or at most 63 alphanumerics, '-', '_' or '.', beginning and ending with an alphanumeric")]
    Value,
}

/// What is wrong with a label selector; the field is named relative to the selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("matchLabels key {key:?}: {source}")]
    MatchLabelsKey { key: String, source: LabelError },
    #[error("matchLabels[{key:?}] value {value:?}: {source}")]
    MatchLabelsValue { key: String, value: String, source: LabelError },
    #[error("{at}.key {key:?}: {source}")]
    ExpressionKey { at: String, key: String, source: LabelError },
    #[error("{at} value {value:?}: {source}")]
    ExpressionValue { at: String, value: String, source: LabelError },
    #[error("{at}: operator {operator} needs at least one value")]
    NoValues { at: String, operator: String },
    #[error("{at}: operator {operator} takes no values, got {values:?}")]
    Values { at: String, operator: String, values: Vec<String> },
    #[error("{at}: operator {operator:?} is not In, NotIn, Exists or DoesNotExist")]
    Operator { at: String, operator: String },
}

/// A label key: `[prefix/]name` (Kubernetes' qualified name).
pub fn validate_key(k: &str) -> Result<(), LabelError> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        if !is_dns_subdomain(p) {
            return Err(LabelError::Prefix);
        }
    }
    if !is_label_name(name) {
        return Err(LabelError::Name);
    }
    Ok(())
}

/// A label value: empty, or like the name part of a key.
pub fn validate_value(v: &str) -> Result<(), LabelError> {
    if v.is_empty() || is_label_name(v) {
        Ok(())
    } else {
        Err(LabelError::Value)
    }
}
