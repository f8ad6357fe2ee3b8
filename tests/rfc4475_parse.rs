//! RFC 4475 §3 torture messages against the codec: every `parse` message parses with the right
//! values, every `reject` message gives a typed error, every `app` message parses (its handling
//! is tested over sockets in `rfc4475_wire.rs`).

use std::path::PathBuf;

use screenpop::sip::{HeaderName, Message, Method, ParseError};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/rfc4475")
}

fn load(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn verdicts() -> Vec<(String, String)> {
    let csv = std::fs::read_to_string(dir().join("verdicts.csv")).expect("verdicts.csv");
    csv.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, ',').collect();
            (f[0].to_string(), f[2].to_string())
        })
        .collect()
}

/// Stream framing: the NCL message family and everything else must also frame on TCP.
fn parse_stream(bytes: &[u8]) -> Result<Message, ParseError> {
    Message::parse_stream(bytes).map(|(m, _)| m)
}

#[test]
fn corpus_verdicts() {
    let v = verdicts();
    assert_eq!(v.len(), 49, "verdict table changed");
    let mut failures = Vec::new();
    for (file, expect) in &v {
        let bytes = load(file);
        let res = Message::parse(&bytes);
        match (expect.as_str(), &res) {
            ("parse" | "app", Ok(_)) => {}
            ("reject", Err(e)) => {
                assert_ne!(
                    *e,
                    ParseError::Incomplete,
                    "{file}: datagram cannot be incomplete"
                )
            }
            _ => failures.push(format!("{file}: expected {expect}, got {res:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn req(file: &str) -> screenpop::sip::Request {
    match Message::parse(&load(file)) {
        Ok(Message::Request(r)) => r,
        other => panic!("{file}: {other:?}"),
    }
}

#[test]
fn wsinv_values() {
    let r = req("TC_WSINV.dat");
    assert_eq!(r.method, Method::Invite);
    assert_eq!(r.uri.param("unknownparam"), Some(None));
    assert_eq!(r.to().unwrap().tag(), Some("1918181833n"));
    let from = r.from().unwrap();
    assert_eq!(from.display.as_deref(), Some("J Rosenberg \\\""));
    assert_eq!(from.tag(), Some("98asjd8"));
    assert_eq!(r.headers.get(&HeaderName::MaxForwards), Some("0068"));
    let cseq = r.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (9, Method::Invite));
    let vias: Vec<_> = r
        .headers
        .get_all(&HeaderName::Via)
        .map(|v| screenpop::sip::Via::parse(v).unwrap())
        .collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].host, "192.0.2.2");
    assert_eq!(vias[0].branch(), Some("390skdjuw"));
    assert_eq!(vias[1].transport, "TCP");
    assert_eq!(vias[1].host, "spindle.example.com");
    assert_eq!(vias[1].branch(), Some("z9hG4bK9ikj8"));
    assert_eq!(vias[2].host, "192.168.255.111");
    assert_eq!(vias[2].branch(), Some("z9hG4bK30239"));
    let contact = r.contact().unwrap();
    assert_eq!(contact.display.as_deref(), Some("Quoted string \"\""));
    assert_eq!(contact.param("q"), Some(Some("0.33")));
    assert_eq!(contact.param("newparam"), Some(Some("newvalue")));
    assert_eq!(r.headers.get(&HeaderName::Subject), Some(""));
    assert_eq!(
        r.headers.get_named("NewFangledHeader"),
        Some("newfangled value continued newfangled value")
    );
    assert_eq!(r.body.len(), 150);
}

#[test]
fn intmeth_values() {
    let r = req("TC_INTMETH.dat");
    assert_eq!(
        r.method,
        Method::Extension("!interesting-Method0123456789_*+`.%indeed'~".into())
    );
    assert_eq!(r.uri.host, "example.com");
    assert_eq!(
        r.uri.user.as_deref(),
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert!(r.to().unwrap().display.unwrap().contains("NUL:\0"));
    assert_eq!(r.from().unwrap().tag(), Some("_token~1'+`*%!-."));
    assert_eq!(
        r.call_id(),
        Some("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{")
    );
}

#[test]
fn escapes_and_compact_forms() {
    let r = req("TC_ESC01_V.dat");
    assert_eq!(
        r.uri.user_unescaped().as_deref(),
        Some("sips:user@example.com")
    );
    assert_eq!(
        r.to().unwrap().uri.user_unescaped().as_deref(),
        Some("user")
    );
    assert_eq!(r.call_id(), Some("esc01.239409asdfakjkn23onasd0-3234"));
    assert_eq!(
        r.headers.get(&HeaderName::ContentType),
        Some("application/sdp")
    );
    let null = req("TC_ESCNULL_V.dat");
    assert_eq!(null.headers.count(&HeaderName::Contact), 2);
    assert_eq!(
        null.to().unwrap().uri.user_unescaped().as_deref(),
        Some("null-\0-null")
    );
    let esc2 = req("TC_ESC02_V.dat");
    assert_eq!(esc2.method, Method::Extension("RE%47IST%45R".into()));
    assert_eq!(
        esc2.headers.count(&HeaderName::Contact),
        2,
        "C%6Fntact is not Contact"
    );
    assert_eq!(esc2.to().unwrap().display.as_deref(), Some("%Z%45"));
}

#[test]
fn other_valid_messages() {
    assert_eq!(
        req("TC_LWSDISP_V.dat").from().unwrap().display.as_deref(),
        Some("caller")
    );
    let semi = req("TC_SEMIURI_V.dat");
    assert_eq!(semi.uri.user.as_deref(), Some("user;par=u%40example.net"));
    assert_eq!(semi.headers.count(&HeaderName::Accept), 6);
    let t = req("TC_TRANSPORTS_V.dat");
    let transports: Vec<String> = t
        .headers
        .get_all(&HeaderName::Via)
        .map(|v| screenpop::sip::Via::parse(v).unwrap().transport)
        .collect();
    assert_eq!(transports, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
    let dbl = req("TC_DBLREQ.dat");
    assert_eq!(dbl.method, Method::Register);
    assert!(dbl.body.is_empty(), "second request must be ignored");
    let mp = req("TC_MPART01.dat");
    assert!(mp.body.contains(&0) && mp.body.contains(&b'\r'));
    assert_eq!(
        mp.body.len(),
        mp.headers
            .get(&HeaderName::ContentLength)
            .unwrap()
            .parse::<usize>()
            .unwrap()
    );
    for (file, status, reason_prefix) in [
        ("TC_NOREASON_V.dat", 100, ""),
        ("TC_UNREASON_V.dat", 200, "= 2**3 * 5**2 "),
    ] {
        match Message::parse(&load(file)).unwrap() {
            Message::Response(r) => {
                assert_eq!(r.status, status);
                assert!(r.reason.starts_with(reason_prefix), "{file}");
            }
            _ => panic!("{file} is a response"),
        }
    }
    let bb = req("TC_BADBRANCH_V.dat");
    assert_eq!(bb.top_via().unwrap().branch(), Some("z9hG4bK"));
    let unk = req("TC_UNKSM2_V.dat");
    assert_eq!(unk.to().unwrap().uri.scheme, "isbn");
    assert_eq!(unk.contact().unwrap().uri.scheme, "name");
}

#[test]
fn reject_reasons_are_specific() {
    type Check = fn(&ParseError) -> bool;
    let cases: &[(&str, Check)] = &[
        ("TC_BADVERS_V.dat", |e| {
            matches!(e, ParseError::BadVersion(_))
        }),
        ("TC_BIGCODE_V.dat", |e| *e == ParseError::BadStatusCode),
        ("TC_CLERR_I.dat", |e| *e == ParseError::TruncatedBody),
        ("TC_NCL_I.dat", |e| {
            matches!(e, ParseError::BadContentLength(_))
        }),
        ("TC_MISMATCH01_V.dat", |e| {
            matches!(e, ParseError::CSeqMismatch { .. })
        }),
        ("TC_MISMATCH02_V.dat", |e| {
            matches!(e, ParseError::CSeqMismatch { .. })
        }),
        ("TC_LWSSTART_V.dat", |e| {
            matches!(e, ParseError::BadStartLine(_))
        }),
        ("TC_TRWS_I.dat", |e| {
            matches!(e, ParseError::BadStartLine(_))
        }),
        ("TC_LWSRURI_I.dat", |e| {
            matches!(e, ParseError::BadStartLine(_))
        }),
        ("TC_LTGTRURI_I.dat", |e| matches!(e, ParseError::BadUri(_))),
        ("TC_ESCRURI_V.dat", |e| matches!(e, ParseError::BadUri(_))),
        ("TC_BADDATE_V.dat", |e| {
            matches!(e, ParseError::BadHeader { header: "Date", .. })
        }),
        ("TC_QUOTBAL_I.dat", |e| {
            matches!(e, ParseError::BadHeader { header: "To", .. })
        }),
        ("TC_BADDN_I.dat", |e| {
            matches!(e, ParseError::BadHeader { header: "From", .. })
        }),
        ("TC_REGBADCT_I.dat", |e| {
            matches!(
                e,
                ParseError::BadHeader {
                    header: "Contact",
                    ..
                }
            )
        }),
    ];
    for (file, ok) in cases {
        let err = Message::parse(&load(file)).expect_err(file);
        assert!(ok(&err), "{file}: unexpected error {err:?}");
        let expected_status = if *file == "TC_BADVERS_V.dat" {
            505
        } else {
            400
        };
        assert_eq!(err.status(), expected_status, "{file}");
    }
}

#[test]
fn stream_transport_framing() {
    // Every valid message frames identically over a stream when it carries Content-Length.
    for (file, expect) in verdicts() {
        let bytes = load(&file);
        if expect == "reject" {
            assert!(parse_stream(&bytes).is_err(), "{file} must not frame");
            continue;
        }
        let has_cl = Message::parse(&bytes)
            .map(|m| m.headers().get(&HeaderName::ContentLength).is_some())
            .unwrap_or(false);
        if has_cl {
            assert!(
                parse_stream(&bytes).is_ok(),
                "{file} must frame on a stream"
            );
        } else {
            assert_eq!(
                parse_stream(&bytes).unwrap_err(),
                ParseError::MissingContentLength,
                "{file}"
            );
        }
    }
}
