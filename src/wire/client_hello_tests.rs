use super::*;
use proptest::prelude::*;

const KEY_SHARE: u16 = 51;
const X25519: u16 = 0x001d;
const X25519_MLKEM768: u16 = 0x11ec;

/// Byte writer that remembers where every length field sits, so tests can
/// corrupt each one.
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
    /// (offset, width) of each length field.
    lens: Vec<(usize, usize)>,
}

impl Writer {
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    fn prefixed(&mut self, width: usize, f: impl FnOnce(&mut Writer)) {
        let at = self.buf.len();
        self.buf.resize(at + width, 0);
        self.lens.push((at, width));
        f(self);
        let len = (self.buf.len() - at - width) as u64;
        let be = len.to_be_bytes();
        self.buf[at..at + width].copy_from_slice(&be[8 - width..]);
    }
}

#[derive(Clone, Debug)]
enum Ext {
    /// (name_type, name) entries.
    ServerName(Vec<(u8, Vec<u8>)>),
    Alpn(Vec<Vec<u8>>),
    Versions(Vec<u16>),
    /// (group, key length) entries.
    KeyShare(Vec<(u16, usize)>),
    Opaque(u16, Vec<u8>),
}

impl Ext {
    fn sni(name: &str) -> Self {
        Ext::ServerName(vec![(0, name.as_bytes().to_vec())])
    }

    fn alpn(names: &[&str]) -> Self {
        Ext::Alpn(names.iter().map(|n| n.as_bytes().to_vec()).collect())
    }

    fn ext_type(&self) -> u16 {
        match self {
            Ext::ServerName(_) => EXT_SERVER_NAME,
            Ext::Alpn(_) => EXT_ALPN,
            Ext::Versions(_) => EXT_SUPPORTED_VERSIONS,
            Ext::KeyShare(_) => KEY_SHARE,
            Ext::Opaque(ty, _) => *ty,
        }
    }

    fn write(&self, w: &mut Writer) {
        w.u16(self.ext_type());
        w.prefixed(2, |w| match self {
            Ext::ServerName(entries) => w.prefixed(2, |w| {
                for (ty, name) in entries {
                    w.u8(*ty);
                    w.prefixed(2, |w| w.bytes(name));
                }
            }),
            Ext::Alpn(names) => w.prefixed(2, |w| {
                for name in names {
                    w.prefixed(1, |w| w.bytes(name));
                }
            }),
            Ext::Versions(versions) => w.prefixed(1, |w| versions.iter().for_each(|v| w.u16(*v))),
            Ext::KeyShare(shares) => w.prefixed(2, |w| {
                for (group, len) in shares {
                    w.u16(*group);
                    w.prefixed(2, |w| w.bytes(&vec![0x42; *len]));
                }
            }),
            Ext::Opaque(_, data) => w.bytes(data),
        });
    }
}

#[derive(Clone, Debug)]
struct Hello {
    legacy_version: u16,
    session_id: Vec<u8>,
    suites: Vec<u16>,
    /// `None` omits the extensions block entirely.
    exts: Option<Vec<Ext>>,
}

impl Hello {
    fn new(exts: Vec<Ext>) -> Self {
        Hello {
            legacy_version: 0x0303,
            session_id: vec![7; 32],
            suites: vec![0x1301, 0x1302, 0x1303, 0xc02f],
            exts: Some(exts),
        }
    }

    /// What a current browser-like client sends.
    fn typical(sni: &str) -> Self {
        Hello::new(vec![
            Ext::sni(sni),
            Ext::alpn(&["h2", "http/1.1"]),
            Ext::Versions(vec![0x0304, 0x0303]),
            Ext::Opaque(10, vec![0, 4, 0, 0x1d, 0, 0x17]),
            Ext::KeyShare(vec![(X25519, 32)]),
        ])
    }

    /// The handshake message, with its length fields recorded.
    fn handshake(&self) -> Writer {
        let mut w = Writer::default();
        w.u8(HANDSHAKE_CLIENT_HELLO);
        w.prefixed(3, |w| {
            w.u16(self.legacy_version);
            w.bytes(&[0x5a; 32]);
            w.prefixed(1, |w| w.bytes(&self.session_id));
            w.prefixed(2, |w| self.suites.iter().for_each(|s| w.u16(*s)));
            w.prefixed(1, |w| w.u8(0));
            if let Some(exts) = &self.exts {
                w.prefixed(2, |w| exts.iter().for_each(|e| e.write(w)));
            }
        });
        w
    }

    fn bytes(&self) -> Vec<u8> {
        records(&self.handshake().buf, &[])
    }
}

/// Wraps a handshake message in records whose payload sizes are taken from
/// `sizes` in turn (zero sizes skipped); the last record takes the rest.
fn records(message: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = message;
    let mut sizes = sizes.iter().copied().filter(|&s| s > 0);
    while !rest.is_empty() {
        let n = sizes
            .next()
            .unwrap_or(rest.len())
            .min(rest.len())
            .min(MAX_RECORD_LEN);
        let (chunk, tail) = rest.split_at(n);
        out.extend_from_slice(&[CONTENT_TYPE_HANDSHAKE, 3, 1]);
        out.extend_from_slice(&(n as u16).to_be_bytes());
        out.extend_from_slice(chunk);
        rest = tail;
    }
    out
}

fn complete(buf: &[u8]) -> HelloInfo {
    match peek_client_hello(buf) {
        Peek::Complete(info) => info,
        other => panic!("expected Complete, got {other:?}"),
    }
}

fn assert_prefixes_incomplete(buf: &[u8]) {
    for end in 0..buf.len() {
        assert_eq!(
            peek_client_hello(&buf[..end]),
            Peek::Incomplete,
            "prefix of {end}/{} bytes",
            buf.len()
        );
    }
}

#[test]
fn typical_hello() {
    let buf = Hello::typical("api.cast.ai").bytes();
    let info = complete(&buf);
    assert_eq!(
        info,
        HelloInfo {
            sni: Some("api.cast.ai".into()),
            alpn: vec!["h2".into(), "http/1.1".into()],
            ech: false,
            records: 1,
            hello_len: buf.len(),
            legacy_version: 0x0303,
            supported_versions: vec![0x0304, 0x0303],
        }
    );
    assert_prefixes_incomplete(&buf);
}

#[test]
fn sni_kept_as_sent() {
    let info = complete(&Hello::typical("Api.CAST.ai.").bytes());
    assert_eq!(info.sni.as_deref(), Some("Api.CAST.ai."));
}

#[test]
fn sni_absent() {
    let hello = Hello::new(vec![Ext::Versions(vec![0x0304])]);
    let info = complete(&hello.bytes());
    assert_eq!(info.sni, None);
    assert!(info.alpn.is_empty());
}

#[test]
fn no_extensions_block() {
    let mut hello = Hello::typical("x");
    hello.exts = None;
    let info = complete(&hello.bytes());
    assert_eq!(info.sni, None);
    assert!(info.supported_versions.is_empty());
}

#[test]
fn empty_extensions_block() {
    let info = complete(&Hello::new(vec![]).bytes());
    assert_eq!(info.sni, None);
}

#[test]
fn alpn_in_order() {
    let hello = Hello::new(vec![Ext::alpn(&["http/1.1", "h2", "grpc-exp"])]);
    assert_eq!(
        complete(&hello.bytes()).alpn,
        ["http/1.1", "h2", "grpc-exp"]
    );
}

#[test]
fn alpn_malformed() {
    let empty_list = Hello::new(vec![Ext::Alpn(vec![])]);
    assert_eq!(
        peek_client_hello(&empty_list.bytes()),
        Peek::Invalid("empty ALPN list")
    );
    let empty_name = Hello::new(vec![Ext::Alpn(vec![b"h2".to_vec(), vec![]])]);
    assert_eq!(
        peek_client_hello(&empty_name.bytes()),
        Peek::Invalid("empty ALPN protocol name")
    );
}

#[test]
fn ech_flag_keeps_outer_sni() {
    let mut hello = Hello::typical("public.example");
    hello
        .exts
        .as_mut()
        .unwrap()
        .push(Ext::Opaque(EXT_ENCRYPTED_CLIENT_HELLO, vec![0; 200]));
    let info = complete(&hello.bytes());
    assert!(info.ech);
    assert_eq!(info.sni.as_deref(), Some("public.example"));
    assert!(!complete(&Hello::typical("a").bytes()).ech);
}

#[test]
fn draft_ech_and_esni_codepoints_count_as_ech() {
    for ext in [0xfe0a, 0xfe0b, 0xfe0c, 0xfe0d, 0xffce] {
        let mut hello = Hello::typical("public.example");
        hello
            .exts
            .as_mut()
            .unwrap()
            .push(Ext::Opaque(ext, vec![0; 40]));
        assert!(complete(&hello.bytes()).ech, "{ext:#06x}");
    }
    for ext in [0xfe09, 0xfe0e, 0xffcd] {
        let mut hello = Hello::typical("public.example");
        hello.exts.as_mut().unwrap().push(Ext::Opaque(ext, vec![]));
        assert!(!complete(&hello.bytes()).ech, "{ext:#06x}");
    }
}

#[test]
fn grease_ignored() {
    let hello = Hello::new(vec![
        Ext::Opaque(0x0a0a, vec![]),
        Ext::sni("grease.example"),
        Ext::Opaque(0xfafa, vec![0]),
        Ext::Opaque(0x0a0a, vec![1, 2, 3]),
        Ext::Versions(vec![0x3a3a, 0x0304, 0x0303]),
    ]);
    let info = complete(&hello.bytes());
    assert_eq!(info.sni.as_deref(), Some("grease.example"));
    assert_eq!(info.supported_versions, [0x0304, 0x0303]);
}

#[test]
fn grease_values() {
    let grease: Vec<u16> = (0..=0xffff).filter(|&v| is_grease(v)).collect();
    let expected: Vec<u16> = (0..16).map(|i| 0x0a0a + 0x1010 * i).collect();
    assert_eq!(grease, expected);
}

#[test]
fn extension_order_does_not_matter() {
    let exts = Hello::typical("order.example").exts.unwrap();
    let expected = complete(&Hello::new(exts.clone()).bytes());
    for rotation in 0..exts.len() {
        for reverse in [false, true] {
            let mut shuffled = exts.clone();
            shuffled.rotate_left(rotation);
            if reverse {
                shuffled.reverse();
            }
            assert_eq!(complete(&Hello::new(shuffled).bytes()), expected);
        }
    }
}

#[test]
fn duplicate_extension_invalid() {
    for dup in [
        Ext::sni("b.example"),
        Ext::alpn(&["h2"]),
        Ext::Versions(vec![0x0304]),
        Ext::Opaque(10, vec![]),
    ] {
        let mut hello = Hello::typical("a.example");
        hello.exts.as_mut().unwrap().push(dup);
        assert_eq!(
            peek_client_hello(&hello.bytes()),
            Peek::Invalid("duplicate extension")
        );
    }
}

#[test]
fn server_name_entries() {
    let two = Hello::new(vec![Ext::ServerName(vec![
        (0, b"a.example".to_vec()),
        (0, b"b.example".to_vec()),
    ])]);
    assert_eq!(
        peek_client_hello(&two.bytes()),
        Peek::Invalid("more than one host_name")
    );

    let other_type_only = Hello::new(vec![Ext::ServerName(vec![(1, b"x".to_vec())])]);
    assert_eq!(
        peek_client_hello(&other_type_only.bytes()),
        Peek::Invalid("server_name has no host_name")
    );

    let empty_list = Hello::new(vec![Ext::ServerName(vec![])]);
    assert_eq!(
        peek_client_hello(&empty_list.bytes()),
        Peek::Invalid("server_name has no host_name")
    );

    let mixed = Hello::new(vec![Ext::ServerName(vec![
        (7, b"ignored".to_vec()),
        (0, b"real.example".to_vec()),
    ])]);
    assert_eq!(
        complete(&mixed.bytes()).sni.as_deref(),
        Some("real.example")
    );
}

#[test]
fn host_name_bytes() {
    assert_eq!(
        peek_client_hello(&Hello::typical("").bytes()),
        Peek::Invalid("empty host_name")
    );
    for bad in ["a b", "a\0b", "a\tb", "a\x7fb", "bücher.example", "a\r\nb"] {
        assert_eq!(
            peek_client_hello(&Hello::typical(bad).bytes()),
            Peek::Invalid("SNI contains non-ASCII or control bytes"),
            "{bad:?}"
        );
    }
    let printable: String = (0x21u8..=0x7e).map(char::from).collect();
    assert_eq!(
        complete(&Hello::typical(&printable).bytes()).sni,
        Some(printable)
    );
}

#[test]
fn body_fields() {
    let mut long_session = Hello::typical("a");
    long_session.session_id = vec![0; 33];
    assert_eq!(
        peek_client_hello(&long_session.bytes()),
        Peek::Invalid("session_id too long")
    );

    let mut odd_suites = Hello::typical("a");
    odd_suites.suites.clear();
    assert_eq!(
        peek_client_hello(&odd_suites.bytes()),
        Peek::Invalid("bad cipher_suites length")
    );

    let mut legacy = Hello::typical("a");
    legacy.legacy_version = 0x0301;
    legacy.session_id.clear();
    assert_eq!(complete(&legacy.bytes()).legacy_version, 0x0301);
}

#[test]
fn every_length_field_off_by_one() {
    let hello = Hello::new(vec![
        Ext::sni("len.example"),
        Ext::alpn(&["h2", "http/1.1"]),
        Ext::Versions(vec![0x0304, 0x0303]),
        Ext::Opaque(EXT_ENCRYPTED_CLIENT_HELLO, vec![1, 2, 3]),
    ]);
    // Only extensions whose contents are parsed: a key_share's inner
    // lengths are opaque to this module.
    let hs = hello.handshake();
    let good = records(&hs.buf, &[]);
    // The record length field, then every field inside the message.
    let fields = std::iter::once((3, 2)).chain(
        hs.lens
            .iter()
            .map(|&(at, width)| (at + RECORD_HEADER_LEN, width)),
    );
    for (at, width) in fields {
        for delta in [1i64, -1] {
            let mut bad = good.clone();
            let mut value = 0i64;
            for b in &bad[at..at + width] {
                value = value << 8 | i64::from(*b);
            }
            let value = (value + delta) as u64;
            bad[at..at + width].copy_from_slice(&value.to_be_bytes()[8 - width..]);
            let verdict = peek_client_hello(&bad);
            assert!(
                matches!(verdict, Peek::Invalid(_) | Peek::Incomplete),
                "field at {at} ({width} bytes) {delta:+}: {verdict:?}"
            );
        }
    }
}

#[test]
fn split_across_records() {
    let hs = Hello::typical("split.example").handshake().buf;
    let expected = complete(&records(&hs, &[]));
    let splits: &[&[usize]] = &[
        &[1],
        &[2],
        &[3],
        &[4],
        &[5],
        &[1, 1, 1, 1],
        &[1, 2, 1, 50],
        &[40, 40],
        &[100, 1],
        &[10, 20, 30, 40],
        &[hs.len() - 1],
    ];
    for sizes in splits {
        let buf = records(&hs, sizes);
        let count = sizes.len().min(4) + 1;
        let info = complete(&buf);
        assert_eq!(info.records, count, "{sizes:?}");
        assert_eq!(info.hello_len, buf.len());
        assert_eq!(info.sni, expected.sni);
        assert_eq!(info.alpn, expected.alpn);
        assert_prefixes_incomplete(&buf);
    }
}

#[test]
fn post_quantum_sized_hello() {
    let mut hello = Hello::typical("pq.example");
    let exts = hello.exts.as_mut().unwrap();
    exts.retain(|e| !matches!(e, Ext::KeyShare(_)));
    exts.push(Ext::KeyShare(vec![
        (0x4a4a, 1),
        (X25519_MLKEM768, 1216),
        (X25519, 32),
    ]));
    exts.push(Ext::Opaque(0x0015, vec![0; 1000]));
    let hs = hello.handshake().buf;
    assert!(hs.len() > 2048);
    for sizes in [&[][..], &[512, 512, 512], &[1000], &[1, 2047]] {
        let buf = records(&hs, sizes);
        let info = complete(&buf);
        assert_eq!(info.sni.as_deref(), Some("pq.example"));
        assert_eq!(info.records, sizes.len() + 1);
        assert_prefixes_incomplete(&buf);
    }
}

#[test]
fn not_tls() {
    let random: Vec<u8> = (0..64u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(5))
        .collect();
    for buf in [
        &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"\x17\x03\x03\x00\x10",
        b"\x15\x03\x03\x00\x02\x02\x28",
        b"\x80\x2e\x01\x00\x02",
        b"\x16",
        &random,
    ] {
        let expected = if buf == b"\x16" {
            Peek::Incomplete
        } else {
            Peek::NotTls
        };
        assert_eq!(peek_client_hello(buf), expected, "{buf:?}");
        assert_eq!(peek_client_hello(&buf[..1]), expected, "{buf:?}");
    }
    assert_eq!(peek_client_hello(b"\x16\x02"), Peek::NotTls);
    assert_eq!(peek_client_hello(b"\x16\x03"), Peek::Incomplete);
    assert_eq!(peek_client_hello(b""), Peek::Incomplete);
}

#[test]
fn record_layer_errors() {
    assert_eq!(
        peek_client_hello(b"\x16\x03\x00"),
        Peek::Invalid("unsupported record version")
    );
    assert_eq!(
        peek_client_hello(b"\x16\x03\x01\x40\x01"),
        Peek::Invalid("record too long")
    );
    assert_eq!(
        peek_client_hello(b"\x16\x03\x01\x00\x00"),
        Peek::Invalid("empty handshake record")
    );
    // Decided from the first payload byte, without waiting for the rest.
    assert_eq!(
        peek_client_hello(b"\x16\x03\x01\x00\x40\x02"),
        Peek::Invalid("handshake is not a ClientHello")
    );
    assert_eq!(
        peek_client_hello(b"\x16\x03\x01\x00\x40\x01\x01\x00\x01"),
        Peek::Invalid("ClientHello too long")
    );
}

#[test]
fn later_record_must_be_handshake() {
    let hs = Hello::typical("a.example").handshake().buf;
    let mut buf = records(&hs, &[20]);
    buf[25] = 0x17;
    assert_eq!(
        peek_client_hello(&buf),
        Peek::Invalid("non-handshake record inside ClientHello")
    );
    buf[25] = 0x16;
    buf[26] = 0x02;
    assert_eq!(peek_client_hello(&buf), Peek::Invalid("bad record version"));
}

#[test]
fn bytes_after_hello_records_ignored() {
    let mut buf = Hello::typical("a.example").bytes();
    let hello_len = buf.len();
    // A ChangeCipherSpec record, then the start of early data.
    buf.extend_from_slice(b"\x14\x03\x03\x00\x01\x01\x17\x03\x03");
    let info = complete(&buf);
    assert_eq!(info.hello_len, hello_len);
    assert_eq!(info.records, 1);
}

#[test]
fn data_after_hello_in_same_record() {
    let mut hs = Hello::typical("a.example").handshake().buf;
    hs.extend_from_slice(&[1, 0, 0, 0]);
    assert_eq!(
        peek_client_hello(&records(&hs, &[])),
        Peek::Invalid("data after ClientHello in its record")
    );
}

#[test]
fn trailing_garbage_after_extensions() {
    let mut hs = Hello::typical("a.example").handshake();
    hs.buf.push(0);
    let (at, width) = hs.lens[0];
    let len = hs.buf.len() - at - width;
    hs.buf[at..at + width].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
    assert_eq!(
        peek_client_hello(&records(&hs.buf, &[])),
        Peek::Invalid("trailing data after extensions")
    );
}

fn hostname() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,12}[a-z0-9])?){0,4}\\.?"
}

prop_compose! {
    fn hello_case()(
        sni in proptest::option::of(hostname()),
        alpn in proptest::collection::vec("[a-z0-9/.-]{1,16}", 0..4),
        grease in proptest::collection::vec(0u16..16, 0..3),
        ech in any::<bool>(),
        pq in any::<bool>(),
        filler in proptest::collection::vec(1u16..0x0a00, 0..6),
    )(
        exts in {
            let mut exts = Vec::new();
            if let Some(name) = &sni {
                exts.push(Ext::sni(name));
            }
            if !alpn.is_empty() {
                exts.push(Ext::Alpn(alpn.iter().map(|a| a.as_bytes().to_vec()).collect()));
            }
            let grease_version = grease.first().map_or(0x0a0a, |g| 0x0a0a + 0x1010 * g);
            exts.push(Ext::Versions(vec![grease_version, 0x0304, 0x0303]));
            for g in &grease {
                exts.push(Ext::Opaque(0x0a0a + 0x1010 * g, vec![0; usize::from(*g)]));
            }
            if ech {
                exts.push(Ext::Opaque(EXT_ENCRYPTED_CLIENT_HELLO, vec![9; 90]));
            }
            let share = if pq { (X25519_MLKEM768, 1216) } else { (X25519, 32) };
            exts.push(Ext::KeyShare(vec![share]));
            // Distinct filler types that collide with nothing parsed here.
            let mut types: Vec<u16> = filler
                .iter()
                .map(|t| t + 0x0100)
                .filter(|t| !is_grease(*t))
                .collect();
            types.sort_unstable();
            types.dedup();
            exts.extend(types.into_iter().map(|t| Ext::Opaque(t, vec![t as u8; 5])));
            Just(exts).prop_shuffle()
        },
        sizes in proptest::collection::vec(1usize..800, 0..5),
        sni in Just(sni),
        alpn in Just(alpn),
        ech in Just(ech),
    ) -> (Vec<u8>, Option<String>, Vec<String>, bool) {
        (records(&Hello::new(exts).handshake().buf, &sizes), sni, alpn, ech)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn generated_hellos((buf, sni, alpn, ech) in hello_case()) {
        for end in 0..buf.len() {
            prop_assert_eq!(peek_client_hello(&buf[..end]), Peek::Incomplete);
        }
        let info = complete(&buf);
        prop_assert_eq!(info.sni, sni);
        prop_assert_eq!(info.alpn, alpn);
        prop_assert_eq!(info.ech, ech);
        prop_assert_eq!(info.hello_len, buf.len());
        prop_assert_eq!(info.supported_versions, vec![0x0304, 0x0303]);
    }

    #[test]
    fn mutations_never_panic(
        (buf, _, _, _) in hello_case(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut buf = buf;
        for (at, byte) in edits {
            let i = at.index(buf.len());
            buf[i] = byte;
        }
        check_consistent(&buf);
        check_consistent(&buf[..cut.index(buf.len() + 1)]);
    }

    #[test]
    fn random_bytes_never_panic(
        tls_prefix in any::<bool>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut buf = if tls_prefix { vec![0x16, 3, 1, 2, 0, 1, 0, 1, 0xfc] } else { vec![] };
        buf.extend(bytes);
        check_consistent(&buf);
    }
}

/// Whatever a buffer yields, a Complete verdict must be reproducible from
/// exactly the hello's records, and every strict prefix of those must have
/// been Incomplete.
fn check_consistent(buf: &[u8]) {
    if let Peek::Complete(info) = peek_client_hello(buf) {
        let hello = &buf[..info.hello_len];
        assert_eq!(peek_client_hello(hello), Peek::Complete(info));
        assert_prefixes_incomplete(hello);
    }
}
