//! The authentication stage end to end inside the core: sources, provider choice by issuer,
//! rules, the cache, header changes, and the hostile tokens RFC 8725 warns about.

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::{json, Value};

use super::stage::Invalid;
use super::token::Reject;
use crate::events::Event;
use crate::flow::{Outcome, Pipeline, RequestFacts, Step, WorkerState};
use crate::http::{HeaderOp, Headers};
use crate::jose::Algorithm;
use apiguard_testkit::mint::{mint, sign_raw, SigningKey};

const NOW: i64 = 1_800_000_000;

macro_rules! key {
    ($file:literal) => {
        serde_json::from_str::<Value>(include_str!(concat!("../../tests/fixtures/keys/", $file)))
            .unwrap()
    };
}

struct Fixture {
    rs: SigningKey,
    es: SigningKey,
    es384: SigningKey,
    ed: SigningKey,
    hs: SigningKey,
}

impl Fixture {
    /// An ES256 token (kid `es`) with `extra` merged over the default claims.
    fn es_token(&self, extra: Value) -> String {
        mint(Algorithm::ES256, &self.es, Some("es"), &claims(extra)).unwrap()
    }
}

fn fixture() -> Fixture {
    Fixture {
        rs: SigningKey::from_jwk(&key!("rs256.json")).unwrap(),
        es: SigningKey::from_jwk(&key!("es256.json")).unwrap(),
        es384: SigningKey::from_jwk(&key!("es384.json")).unwrap(),
        ed: SigningKey::from_jwk(&key!("ed25519.json")).unwrap(),
        hs: SigningKey::from_jwk(&key!("hs256.json")).unwrap(),
    }
}

fn claims(extra: Value) -> Value {
    let mut c = json!({"iss": "https://idp.example/", "aud": "api", "sub": "u1", "exp": NOW + 600, "iat": NOW - 10,
                       "tenant_id": "t1", "roles": ["editor", "viewer"], "org": {"id": 7}});
    if let (Some(o), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    c
}

fn pipeline(f: &Fixture, extra_provider: Value, extra_jwt: Value) -> (Pipeline, WorkerState) {
    let mut provider = json!({
        "issuer": "https://idp.example/",
        "audiences": ["api"],
        "jwks": {"inline": {"keys": [
            f.rs.public_jwk(Some("rs")), f.es.public_jwk(Some("es")),
            f.es384.public_jwk(Some("es384")), f.ed.public_jwk(Some("ed"))
        ]}},
        "claims_to_headers": [
            {"claim": "sub", "header": "x-user-id"},
            {"claim": "roles", "header": "x-roles"},
            {"claim": "org.id", "header": "x-org"}
        ]
    });
    merge(&mut provider, extra_provider);
    let mut jwt = json!({"providers": {"primary": provider},
                         "rules": [{"prefix": "/healthz", "requires": []}, {"prefix": "/", "requires": ["primary"]}]});
    merge(&mut jwt, extra_jwt);
    let (p, _) = Pipeline::from_json(json!({"jwt": jwt}).to_string().as_bytes()).unwrap();
    let state = p.worker_state();
    (p, state)
}

fn merge(into: &mut Value, extra: Value) {
    if let (Some(o), Some(e)) = (into.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
}

fn run(p: &Pipeline, s: &mut WorkerState, path: &str, headers: &[(&str, &[u8])]) -> Outcome {
    let list: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(n, v)| ((*n).to_owned(), v.to_vec()))
        .collect();
    p.on_request(
        &RequestFacts {
            path: path.as_bytes(),
            headers: Headers::new(&list),
            source: None,
            body_follows: false,
        },
        NOW * 1000,
        s,
    )
}

fn bearer(t: &str) -> Vec<u8> {
    format!("Bearer {t}").into_bytes()
}

fn status(o: &Outcome) -> u16 {
    match &o.step {
        Step::Continue(_) => 200,
        Step::Respond(r) => r.status,
        Step::FetchKeys(_) | Step::CheckLimits { .. } => 0,
    }
}

#[test]
fn every_algorithm_passes_and_sets_identity_headers() {
    let f = fixture();
    let (p, mut s) = pipeline(
        &f,
        json!({"algorithms": ["RS256", "ES256", "ES384", "EdDSA", "PS256"]}),
        json!({}),
    );
    for (alg, key, kid) in [
        (Algorithm::RS256, &f.rs, "rs"),
        (Algorithm::PS256, &f.rs, "rs"),
        (Algorithm::ES256, &f.es, "es"),
        (Algorithm::ES384, &f.es384, "es384"),
        (Algorithm::EdDSA, &f.ed, "ed"),
    ] {
        let t = mint(alg, key, Some(kid), &claims(json!({}))).unwrap();
        let o = run(
            &p,
            &mut s,
            "/api/x",
            &[("authorization", &bearer(&t)), ("x-user-id", b"spoofed")],
        );
        let Step::Continue(ops) = &o.step else {
            panic!("{alg:?}: {:?}", o.step)
        };
        // The client's copy is removed before the verified value is set.
        let removed = ops
            .iter()
            .position(|op| op == &HeaderOp::Remove("x-user-id".into()));
        let set = ops
            .iter()
            .position(|op| op == &HeaderOp::Set("x-user-id".into(), "u1".into()));
        assert!(removed < set, "{ops:?}");
        assert!(
            ops.contains(&HeaderOp::Set("x-user-id".into(), "u1".into())),
            "{ops:?}"
        );
        assert!(ops.contains(&HeaderOp::Set("x-roles".into(), "editor,viewer".into())));
        assert!(ops.contains(&HeaderOp::Set("x-org".into(), "7".into())));
        assert_eq!(o.identity.unwrap().claims.map["tenant_id"], "t1");
        assert_eq!(o.events, vec![Event::JwtAccepted { cached: false }]);
    }
}

#[test]
fn cache_hits_are_rechecked_for_expiry_and_flushed_on_key_change() {
    let f = fixture();
    let (p, mut s) = pipeline(&f, json!({}), json!({}));
    let t = f.es_token(json!({"exp": NOW + 5}));
    let h = bearer(&t);
    assert_eq!(
        run(&p, &mut s, "/a", &[("authorization", &h)]).events,
        vec![Event::JwtAccepted { cached: false }]
    );
    assert_eq!(
        run(&p, &mut s, "/a", &[("authorization", &h)]).events,
        vec![Event::JwtAccepted { cached: true }]
    );
    // Past exp + leeway the cached entry does not count.
    let list = vec![("authorization".to_owned(), h.clone())];
    let facts = RequestFacts {
        path: b"/a",
        headers: Headers::new(&list),
        source: None,
        body_follows: false,
    };
    let late = p.on_request(&facts, (NOW + 5 + 30) * 1000, &mut s);
    assert_eq!(
        late.events,
        vec![Event::JwtRejected(Invalid::Token(Reject::Expired))]
    );
    // New keys empty the cache.
    run(
        &p,
        &mut s,
        "/a",
        &[("authorization", &bearer(&f.es_token(json!({}))))],
    );
    let keys = s.jwt.keys.get(0).cloned();
    s.jwt.keys.set(0, keys);
    assert_eq!(
        run(&p, &mut s, "/a", &[("authorization", &h)]).events,
        vec![Event::JwtAccepted { cached: false }]
    );
}

#[test]
fn rules_pick_public_and_protected_paths_after_normalisation() {
    let f = fixture();
    let (p, mut s) = pipeline(&f, json!({}), json!({}));
    assert_eq!(status(&run(&p, &mut s, "/healthz", &[])), 200);
    assert_eq!(status(&run(&p, &mut s, "/healthz/live", &[])), 200);
    assert_eq!(status(&run(&p, &mut s, "/healthzx", &[])), 401);
    assert_eq!(status(&run(&p, &mut s, "/healthz/../admin", &[])), 401);
    assert_eq!(status(&run(&p, &mut s, "/%68ealthz", &[])), 200);
    assert_eq!(status(&run(&p, &mut s, "/a%2Fb", &[])), 400);
    // Public paths still lose client-supplied identity headers.
    let o = run(&p, &mut s, "/healthz", &[("x-user-id", b"admin")]);
    let Step::Continue(ops) = o.step else {
        panic!()
    };
    assert!(ops.contains(&HeaderOp::Remove("x-user-id".into())));
}

#[test]
fn missing_and_invalid_are_told_apart_only_by_www_authenticate() {
    let f = fixture();
    let (p, mut s) = pipeline(&f, json!({}), json!({}));
    let missing = run(&p, &mut s, "/a", &[]);
    assert_eq!(missing.events, vec![Event::JwtMissing]);
    let Step::Respond(m) = missing.step else {
        panic!()
    };
    assert_eq!(m.status, 401);
    // Another auth scheme is no token of ours.
    assert_eq!(
        run(
            &p,
            &mut s,
            "/a",
            &[("authorization", b"Basic dXNlcjpwYXNz")]
        )
        .events,
        vec![Event::JwtMissing]
    );
    let mut bodies = Vec::new();
    let t = f.es_token(json!({"aud": "other"}));
    let expired = f.es_token(json!({"exp": NOW - 100}));
    for h in [
        bearer("garbage"),
        bearer(&t),
        bearer(&expired),
        b"Bearer \xff\xfe".to_vec(),
    ] {
        let Step::Respond(r) = run(&p, &mut s, "/a", &[("authorization", &h)]).step else {
            panic!()
        };
        bodies.push((r.status, r.headers, r.body));
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "401s differ: {bodies:?}"
    );
}

#[test]
fn hostile_tokens_are_refused() {
    let f = fixture();
    let (p, mut s) = pipeline(&f, json!({}), json!({}));
    let c = claims(json!({})).to_string();
    let reject = |s: &mut WorkerState, t: String| {
        let o = run(&p, s, "/a", &[("authorization", &bearer(&t))]);
        match o.events.as_slice() {
            [Event::JwtRejected(why)] => *why,
            other => panic!("accepted or odd: {other:?} for {t}"),
        }
    };
    let raw = |alg: Algorithm, key: &SigningKey, header: &str| {
        sign_raw(alg, key, header.as_bytes(), c.as_bytes()).unwrap()
    };
    let es = |h: &str| raw(Algorithm::ES256, &f.es, h);
    // alg none, with and without a signature.
    let none = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(&c));
    assert_eq!(
        reject(&mut s, none),
        Invalid::Token(Reject::AlgorithmNotAllowed)
    );
    // Duplicate members in the header and in the claims.
    assert_eq!(
        reject(&mut s, es(r#"{"alg":"ES256","kid":"es","kid":"rs"}"#)),
        Invalid::Token(Reject::DuplicateMember)
    );
    let dup_claims = sign_raw(
        Algorithm::ES256,
        &f.es,
        br#"{"alg":"ES256","kid":"es"}"#,
        br#"{"iss":"https://idp.example/","sub":"a","sub":"b"}"#,
    )
    .unwrap();
    assert_eq!(
        reject(&mut s, dup_claims),
        Invalid::Token(Reject::DuplicateMember)
    );
    // Extensions and nested content.
    for h in [
        r#"{"alg":"ES256","kid":"es","crit":["exp"]}"#,
        r#"{"alg":"ES256","kid":"es","b64":false}"#,
        r#"{"alg":"ES256","kid":"es","cty":"JWT"}"#,
    ] {
        assert_eq!(
            reject(&mut s, es(h)),
            Invalid::Token(Reject::UnsupportedHeader),
            "{h}"
        );
    }
    // An embedded key is never trusted: signed with a key of the attacker's, it does not verify.
    let embedded = raw(
        Algorithm::ES384,
        &f.es384,
        &format!(r#"{{"alg":"ES256","jwk":{}}}"#, f.es384.public_jwk(None)),
    );
    assert!(matches!(reject(&mut s, embedded), Invalid::Token(_)));
    // Key confusion: an HS256 token keyed with the RSA public key's bytes.
    let rsa_pub = f.rs.public_jwk(Some("rs")).to_string();
    let confused = sign_raw(
        Algorithm::HS256,
        &SigningKey::Hmac(rsa_pub.into_bytes()),
        br#"{"alg":"HS256","kid":"rs"}"#,
        c.as_bytes(),
    )
    .unwrap();
    assert_eq!(
        reject(&mut s, confused),
        Invalid::Token(Reject::AlgorithmNotAllowed)
    );
    // The header says RS256 but the kid names the EC key.
    let lying = raw(Algorithm::RS256, &f.rs, r#"{"alg":"RS256","kid":"es"}"#);
    assert_eq!(
        reject(&mut s, lying),
        Invalid::Token(Reject::AlgorithmNotAllowed)
    );
    // JWE, oversize, tampered payload, unknown issuer.
    assert_eq!(
        reject(&mut s, "a.b.c.d.e".into()),
        Invalid::Token(Reject::Encrypted)
    );
    assert_eq!(
        reject(&mut s, "a".repeat(9000)),
        Invalid::Token(Reject::TooLarge)
    );
    let good = f.es_token(json!({}));
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&claims(json!({"sub": "admin"})).to_string()),
        parts[2]
    );
    assert_eq!(
        reject(&mut s, tampered),
        Invalid::Token(Reject::BadSignature)
    );
    let foreign = f.es_token(json!({"iss": "https://evil/"}));
    assert_eq!(reject(&mut s, foreign), Invalid::UnknownIssuer);
    // Two Authorization headers.
    let o = run(
        &p,
        &mut s,
        "/a",
        &[
            ("authorization", &bearer(&good)),
            ("authorization", &bearer(&good)),
        ],
    );
    assert_eq!(o.events, vec![Event::JwtRejected(Invalid::Repeated)]);
    // Deeply nested claims.
    let deep = format!(
        r#"{{"iss":"https://idp.example/","x":{}{}}}"#,
        "[".repeat(20),
        "]".repeat(20)
    );
    let deep = sign_raw(
        Algorithm::ES256,
        &f.es,
        br#"{"alg":"ES256","kid":"es"}"#,
        deep.as_bytes(),
    )
    .unwrap();
    assert_eq!(reject(&mut s, deep), Invalid::Token(Reject::TooDeep));
}

fn b64(s: &str) -> String {
    use base64ct::{Base64UrlUnpadded, Encoding};
    Base64UrlUnpadded::encode_string(s.as_bytes())
}

#[test]
fn hmac_only_when_listed_and_claim_rules() {
    let f = fixture();
    let hs_jwks = json!({"inline": {"keys": [f.hs.public_jwk(Some("hs"))]}});
    let (p, mut s) = pipeline(
        &f,
        json!({"jwks": hs_jwks, "algorithms": ["HS256"], "typ": "at+jwt",
                                         "required_claims": ["tenant_id"], "max_lifetime_s": 3600}),
        json!({}),
    );
    let token = |c: Value, typ: &str| {
        sign_raw(
            Algorithm::HS256,
            &f.hs,
            json!({"alg": "HS256", "kid": "hs", "typ": typ})
                .to_string()
                .as_bytes(),
            c.to_string().as_bytes(),
        )
        .unwrap()
    };
    assert_eq!(
        status(&run(
            &p,
            &mut s,
            "/a",
            &[(
                "authorization",
                &bearer(&token(claims(json!({})), "at+jwt"))
            )]
        )),
        200
    );
    assert_eq!(
        status(&run(
            &p,
            &mut s,
            "/a",
            &[(
                "authorization",
                &bearer(&token(claims(json!({})), "application/AT+JWT"))
            )]
        )),
        200
    );
    assert_eq!(
        status(&run(
            &p,
            &mut s,
            "/a",
            &[("authorization", &bearer(&token(claims(json!({})), "JWT")))]
        )),
        401
    );
    let mut no_tenant = claims(json!({}));
    no_tenant.as_object_mut().unwrap().remove("tenant_id");
    assert_eq!(
        status(&run(
            &p,
            &mut s,
            "/a",
            &[("authorization", &bearer(&token(no_tenant, "at+jwt")))]
        )),
        401
    );
    assert_eq!(
        status(&run(
            &p,
            &mut s,
            "/a",
            &[(
                "authorization",
                &bearer(&token(claims(json!({"exp": NOW + 7200})), "at+jwt"))
            )]
        )),
        401
    );
    // Without HS256 in `algorithms`, an oct key cannot be configured to verify anything.
    let bad = json!({"jwt": {"providers": {"p": {"issuer": "i", "jwks": {"inline": {"keys": [f.hs.public_jwk(None)]}}}}}});
    let err = Pipeline::from_json(bad.to_string().as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("jwt.providers.p.algorithms: no key"),
        "{err}"
    );
}

#[test]
fn token_sources_in_order_and_forward_token() {
    let f = fixture();
    let (p, mut s) = pipeline(
        &f,
        json!({"sources": [{"header": "x-token"}, {"query": "access_token"}, {"cookie": "session"}],
                                         "forward_token": false}),
        json!({}),
    );
    let t = mint(Algorithm::EdDSA, &f.ed, Some("ed"), &claims(json!({}))).unwrap();
    let o = run(&p, &mut s, "/a", &[("x-token", t.as_bytes())]);
    let Step::Continue(ops) = o.step else {
        panic!()
    };
    assert!(ops.contains(&HeaderOp::Remove("x-token".into())));
    assert_eq!(
        status(&run(&p, &mut s, &format!("/a?x=1&access_token={t}"), &[])),
        200
    );
    assert_eq!(
        status(&run(
            &p,
            &mut s,
            "/a",
            &[("cookie", format!("a=b; session={t}").as_bytes())]
        )),
        200
    );
    assert_eq!(
        status(&run(
            &p,
            &mut s,
            &format!("/a?access_token={t}&access_token={t}"),
            &[]
        )),
        401
    );
    // Authorization is not a source of this provider.
    assert_eq!(
        run(&p, &mut s, "/a", &[("authorization", &bearer(&t))]).events,
        vec![Event::JwtMissing]
    );
}

#[test]
fn inline_keys_are_checked_at_configure_time() {
    let weak = json!({"kty": "oct", "k": "c2hvcnQ"});
    let cfg = json!({"jwt": {"providers": {"p": {"issuer": "i", "algorithms": ["HS256"], "jwks": {"inline": {"keys": [weak]}}}}}});
    let err = Pipeline::from_json(cfg.to_string().as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("jwt.providers.p.jwks.inline.keys[0]: keys[0]: weak key"),
        "{err}"
    );
    let rfc = serde_json::from_str::<Value>(include_str!(
        "../../tests/vectors/rfc7520-cookbook/jwk/3_4.rsa_private_key.json"
    ))
    .unwrap();
    let cfg =
        json!({"jwt": {"providers": {"p": {"issuer": "i", "jwks": {"inline": {"keys": [rfc]}}}}}});
    let err = Pipeline::from_json(cfg.to_string().as_bytes())
        .unwrap_err()
        .to_string();
    assert!(err.contains("private key material"), "{err}");
}

/// A remote provider without the token's key asks for one fetch; the keys it brings serve the
/// retry. A token naming a `kid` the fetched keys lack is refused on the retry (a request waits
/// for at most one fetch), and asks again only once `min_refetch_s` has passed.
#[test]
fn remote_providers_ask_for_keys() {
    let f = fixture();
    let (p, mut s) = pipeline(
        &f,
        json!({"jwks": {"remote": {"cluster": "idp", "path": "/jwks", "min_refetch_s": 30}}}),
        json!({}),
    );
    let t = f.es_token(json!({}));
    let auth = bearer(&t);
    let o = run(&p, &mut s, "/a", &[("authorization", &auth)]);
    let Step::FetchKeys(fetch) = &o.step else {
        panic!("{:?}", o.step)
    };
    assert_eq!(
        (fetch.provider, fetch.cluster.as_str(), fetch.path.as_str()),
        (0, "idp", "/jwks")
    );
    // The fetch brings only the RSA key: the ES256 token's `kid` stays unknown.
    let body = json!({"keys": [f.rs.public_jwk(Some("rs"))]})
        .to_string()
        .into_bytes();
    let notes = s.jwt.finish_fetch(0, NOW, (Some(200), body.len(), body));
    assert!(
        matches!(
            notes[..],
            [crate::jwt::shared::KeyNote::Fetched { keys: 1, .. }]
        ),
        "{notes:?}"
    );
    let headers = vec![("authorization".to_owned(), auth.clone())];
    let facts = RequestFacts {
        path: b"/a",
        headers: Headers::new(&headers),
        source: None,
        body_follows: false,
    };
    let retry = p.on_request_after_fetch(&facts, NOW * 1000, &mut s);
    assert_eq!(status(&retry), 401, "{:?}", retry.step);
    assert_eq!(
        retry.events,
        [Event::JwtRejected(Invalid::Token(Reject::UnknownKid))]
    );
    // Within min_refetch_s, no new fetch: refused at once.
    let o = p.on_request(&facts, (NOW + 29) * 1000, &mut s);
    assert_eq!(status(&o), 401, "{:?}", o.step);
    // After it, an unknown kid asks again.
    let o = p.on_request(&facts, (NOW + 30) * 1000, &mut s);
    assert!(matches!(o.step, Step::FetchKeys(_)), "{:?}", o.step);
}

/// Registered claims have the types RFC 7519 gives them, or the token is refused; `sub` is
/// required unless the provider opts out.
#[test]
fn registered_claims_have_their_types() {
    let f = fixture();
    let (p, mut s) = pipeline(&f, json!({}), json!({}));
    let status_of = |s: &mut WorkerState, p: &Pipeline, claims: Value| {
        let t = mint(Algorithm::ES256, &f.es, Some("es"), &claims).unwrap();
        let o = run(p, s, "/a", &[("authorization", &bearer(&t))]);
        (status(&o), o.events)
    };
    let refused = |why| (401, vec![Event::JwtRejected(Invalid::Token(why))]);
    for (extra, why) in [
        (json!({"sub": {"id": "admin"}}), Reject::BadClaimType),
        (json!({"sub": 7}), Reject::BadClaimType),
        (json!({"sub": ""}), Reject::BadClaimType),
        (json!({"aud": [1, "api"]}), Reject::BadClaimType),
        (json!({"exp": 1e20}), Reject::BadTimeClaim),
        (json!({"exp": i64::MAX}), Reject::BadTimeClaim),
        (json!({"exp": u64::MAX}), Reject::BadTimeClaim),
        (json!({"nbf": 1e20}), Reject::BadTimeClaim),
        (json!({"iat": -1}), Reject::BadTimeClaim),
        (json!({"exp": "2030-01-01"}), Reject::BadTimeClaim),
    ] {
        assert_eq!(
            status_of(&mut s, &p, claims(extra.clone())),
            refused(why),
            "{extra}"
        );
    }
    // The last second of year 9999 is still a date.
    assert_eq!(
        status_of(&mut s, &p, claims(json!({"exp": 253_402_300_799_i64}))).0,
        200
    );
    let mut no_sub = claims(json!({}));
    no_sub.as_object_mut().unwrap().remove("sub");
    assert_eq!(
        status_of(&mut s, &p, no_sub.clone()),
        refused(Reject::MissingClaim)
    );
    let (lenient, mut s2) = pipeline(&f, json!({"require_sub": false}), json!({}));
    assert_eq!(status_of(&mut s2, &lenient, no_sub).0, 200);
}

/// A token header is read under every spelling a backend reads alike, and two copies under any
/// spellings are refused: apiguard must never verify one copy while the backend reads another.
/// `forward_token: false` removes the copy the client actually sent.
#[test]
fn token_headers_are_read_as_backends_read_them() {
    let f = fixture();
    let (p, mut s) = pipeline(
        &f,
        json!({"sources": [{"header": "x-token"}], "forward_token": false}),
        json!({}),
    );
    let t = f.es_token(json!({}));
    let o = run(&p, &mut s, "/a", &[("x_token", t.as_bytes())]);
    assert_eq!(status(&o), 200, "{o:?}");
    let Step::Continue(ops) = &o.step else {
        panic!("{:?}", o.step)
    };
    assert!(ops.contains(&HeaderOp::Remove("x_token".into())), "{ops:?}");
    let other = f.es_token(json!({"sub": "mallory"}));
    let o = run(
        &p,
        &mut s,
        "/a",
        &[("x-token", t.as_bytes()), ("X_Token", other.as_bytes())],
    );
    assert_eq!(o.events, vec![Event::JwtRejected(Invalid::Repeated)]);
}
