#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

const FILE: &str = r#"
domain: edge
descriptors:
  - key: generic_key
    value: auth
    rate_limit: {unit: minute, requests_per_unit: 5, name: auth}
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 100}
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 1000, algorithm: counter}
    descriptors:
      - key: path
        value: /export
        rate_limit: {unit: DAY, requests_per_unit: 2}
      - key: path
        value: /free
        rate_limit: {unlimited: true}
  - key: plan
    value: gold
---
domain: other
"#;

fn d(entries: &[(&str, &str)]) -> Descriptor {
    Descriptor {
        entries: entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        hits: None,
    }
}

#[test]
fn descriptors_find_their_node_exact_value_first() {
    let all = Descriptors::parse(FILE).unwrap();
    assert_eq!(all.domains(), 2);
    let plan = all
        .plan(
            "edge",
            &[
                d(&[("generic_key", "auth")]),
                d(&[("generic_key", "other")]),
                d(&[("remote_address", "10.0.0.1")]),
                d(&[("user", "u1"), ("path", "/export")]),
                d(&[("user", "u1"), ("path", "/free")]),
                d(&[("user", "u1"), ("path", "/elsewhere")]),
                d(&[("user", "u1")]),
                d(&[("plan", "gold")]),
                d(&[]),
            ],
            0,
        )
        .unwrap();
    let limits: Vec<Option<(u32, Unit)>> = plan
        .per_descriptor
        .iter()
        .map(|p| p.as_ref().map(|(_, r)| (r.requests_per_unit, r.unit)))
        .collect();
    assert_eq!(
        limits,
        [
            Some((5, Unit::Minute)),
            None,
            Some((100, Unit::Second)),
            Some((2, Unit::Day)),
            None,
            None,
            Some((1000, Unit::Hour)),
            None,
            None,
        ]
    );
    assert_eq!(plan.checks.len(), 4);
    assert!(plan.checks.iter().all(|c| c.cost == 1));
    // Every key of the call shares the domain's hash tag; the user's own windows are apart.
    assert!(plan
        .checks
        .iter()
        .all(|c| apiguard_limiter_api::hash_tag(&c.key) == "rls:edge"));
    assert_eq!(plan.checks[3].algorithm, LimitAlgorithm::Counter);
    assert_eq!(
        plan.checks[0].key,
        r#"{rls:edge}["generic_key","auth"]:log:60000"#
    );
    let request = apiguard_limiter_api::CheckRequest {
        checks: plan.checks.clone(),
    };
    request.validate().unwrap();
    assert!(all
        .plan("other", &[d(&[("generic_key", "auth")])], 0)
        .unwrap()
        .checks
        .is_empty());
}

#[test]
fn hits_count_and_a_repeated_descriptor_is_one_check() {
    let all = Descriptors::parse(FILE).unwrap();
    let mut heavy = d(&[("generic_key", "auth")]);
    heavy.hits = Some(3);
    let plan = all
        .plan("edge", &[heavy, d(&[("generic_key", "auth")])], 2)
        .unwrap();
    assert_eq!(plan.checks.len(), 1);
    assert_eq!(plan.checks[0].cost, 5);
    assert_eq!(plan.per_descriptor[0].as_ref().unwrap().0, 0);
    assert_eq!(plan.per_descriptor[1].as_ref().unwrap().0, 0);
    assert!(matches!(
        all.plan("edge", &[d(&[("generic_key", "auth")])], 5000),
        Err(DescriptorError::TooManyHits(0, 5000, _))
    ));
}

#[test]
fn unknown_domains_and_too_many_limits_are_refused() {
    let all = Descriptors::parse(FILE).unwrap();
    assert_eq!(
        all.plan("nope", &[], 0),
        Err(DescriptorError::UnknownDomain("nope".into()))
    );
    assert!(Descriptors::default().plan("edge", &[], 0).is_err());
    let many: Vec<Descriptor> = (0..17)
        .map(|i| {
            let ip = format!("10.0.0.{i}");
            d(&[("remote_address", ip.as_str())])
        })
        .collect();
    assert!(matches!(
        all.plan("edge", &many, 0),
        Err(DescriptorError::TooManyLimits(
            16,
            Rule {
                requests_per_unit: 100,
                ..
            }
        ))
    ));
    assert!(Descriptors::parse(&format!("domain: {}\n", "d".repeat(97)))
        .unwrap_err()
        .to_string()
        .contains("at most 96"));
}

/// A value from a request (a header, say) can be any length: the key stays within the store's
/// bound, distinct values stay distinct.
#[test]
fn long_values_make_bounded_distinct_keys() {
    let all = Descriptors::parse(FILE).unwrap();
    let (a, b) = ("x".repeat(5000), format!("{}y", "x".repeat(4999)));
    let plan = all
        .plan(
            "edge",
            &[d(&[("remote_address", &a)]), d(&[("remote_address", &b)])],
            0,
        )
        .unwrap();
    assert_eq!(plan.checks.len(), 2);
    assert_ne!(plan.checks[0].key, plan.checks[1].key);
    apiguard_limiter_api::CheckRequest {
        checks: plan.checks,
    }
    .validate()
    .unwrap();
}

#[test]
fn the_file_is_checked_with_errors_that_name_the_node() {
    let err = |text: &str| Descriptors::parse(text).unwrap_err().to_string();
    assert_eq!(
        err("domain: a\ndescriptors:\n  - key: k\n    rate_limit: {requests_per_unit: 3}\n"),
        "domain `a`, descriptors[0] (key `k`): rate_limit.unit: required (second, minute, hour or day)"
    );
    assert!(err(
        "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: week, requests_per_unit: 3}\n"
    )
    .starts_with("document 0: "));
    assert!(
        err("domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: minute}\n")
            .contains("requests_per_unit: must be greater than zero")
    );
    assert!(err("domain: a\ndescriptors:\n  - key: k\n    descriptors:\n      - key: j\n        value: v\n      - key: j\n        value: v\n")
        .contains("descriptors[0] (key `k`).descriptors[1] (key `j`): the same key and value `v` appears twice"));
    assert!(err("domain: a\n---\ndomain: a\n").contains("domain `a` is defined twice"));
    assert!(err("domain: a\ndescriptor: []\n").contains("unknown field `descriptor`"));
    assert!(err("descriptors: []\n").contains("missing field `domain`"));
    assert!(err("domain: ''\n").contains("domain must not be empty"));
    assert!(err(
        "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unlimited: true, unit: second}\n"
    )
    .contains("takes no unit"));
}
