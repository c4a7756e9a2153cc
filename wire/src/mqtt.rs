//! The MQTT mapping of the protocol (`wire/SPEC.md`, section 9): topic names,
//! the device → partition hash both sides must agree on, the partition →
//! worker hash every worker of a group must agree on, and a topic parser.
//!
//! Every MQTT message carries exactly one frame, the same bytes as a UDP
//! datagram (both delimiters included), except `status` and `_workers`
//! (text) and `result`, `state` and `events` (JSON only), which are for
//! other systems.
//!
//! ```text
//! latentcam/<site>/<device>/hello         device → workers   QoS 1, retained  Hello frame
//! latentcam/<site>/<device>/latent/<p>    device → owner     QoS 1            Latent / Bye frames
//! latentcam/<site>/<device>/heartbeat     device → any       QoS 0            Heartbeat frame
//! latentcam/<site>/<device>/status        device → any       QoS 1, retained  "online" / will "offline"
//! latentcam/<site>/<device>/welcome       owner  → device    QoS 1            Welcome frame
//! latentcam/<site>/<device>/ack/<p>       owner  → device    QoS 1, retained  Ack frame
//! latentcam/<site>/<device>/result        owner  → anyone    QoS 0            JSON result line
//! latentcam/<site>/<device>/state         owner  → anyone    QoS 1, retained  JSON: latest labels, anomaly
//! latentcam/<site>/<device>/events        owner  → anyone    QoS 1            JSON: alarms, label changes
//! latentcam/_workers/<group>/<worker>     worker → workers   QoS 1, retained  "online" / will "offline"
//! ```
//!
//! `<p>` is [`partition`]`(device)`, a number below [`PARTITIONS`].

/// First level of every latentcam topic.
pub const ROOT: &str = "latentcam";

/// Number of partitions devices are hashed into. A protocol constant, so an
/// edge and a host can never disagree about it.
pub const PARTITIONS: u16 = 64;

/// Port of a broker address given without one.
pub const DEFAULT_PORT: u16 = 1883;

/// The broker's port for `mqtts://` when none is given.
pub const DEFAULT_TLS_PORT: u16 = 8883;

/// Longest site, device, group or worker name accepted as a topic level.
pub const MAX_LEVEL_LEN: usize = 64;

/// The partition of a device: FNV-1a (32-bit) of its id's UTF-8 bytes,
/// modulo [`PARTITIONS`].
pub fn partition(device_id: &str) -> u16 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in device_id.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    // The remainder is below PARTITIONS (64), so it fits.
    (hash % u32::from(PARTITIONS)) as u16
}

/// The owner of `partition` among `members` by rendezvous (highest random
/// weight) hashing, so every worker of a group computes the same owners from
/// the same member list, in any order. A member's weight is FNV-1a-64 of
/// `"<partition in decimal>/<member>"` passed through MurmurHash3's 64-bit
/// finaliser; the highest wins, ties go to the smaller name; `None` when there
/// are no members. When a member leaves, only its partitions move; when one
/// joins, it takes about `1/n` of them.
///
/// Workers on different versions must agree, so the result for given
/// arguments is part of the protocol (`wire/SPEC.md` §9) and pinned by tests.
pub fn owner<'a>(partition: u16, members: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // The decimal digits of `partition`, written without allocating: at most
    // five for a `u16`, filled from the end.
    let mut digits = [0u8; 5];
    let mut start = digits.len();
    let mut rest = partition;
    loop {
        start -= 1;
        // The remainder is below 10, so it fits.
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let digits = &digits[start..];
    members
        .into_iter()
        .map(|m| {
            let weight = weight(
                digits
                    .iter()
                    .copied()
                    .chain(core::iter::once(b'/'))
                    .chain(m.bytes()),
            );
            (weight, core::cmp::Reverse(m))
        })
        .max()
        .map(|(_, core::cmp::Reverse(m))| m)
}

/// FNV-1a, 64-bit, then MurmurHash3's 64-bit finaliser: FNV alone barely
/// mixes a last byte into the high bits, so weights of `w1`, `w2`, `w3`
/// would be correlated and the partitions badly balanced.
fn weight(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// True when `level` can be one level of a topic name: 1 to
/// [`MAX_LEVEL_LEN`] bytes, none of `/`, `+`, `#`, NUL or control
/// characters, and not starting with `$` or `_` (reserved for brokers and
/// for `_workers`).
pub fn valid_level(level: &str) -> bool {
    !level.is_empty()
        && level.len() <= MAX_LEVEL_LEN
        && !level.starts_with('$')
        && !level.starts_with('_')
        && !level
            .chars()
            .any(|c| matches!(c, '/' | '+' | '#') || c.is_control())
}

/// What a device topic is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// `…/hello`
    Hello,
    /// `…/latent/<p>`
    Latent(u16),
    /// `…/heartbeat`
    Heartbeat,
    /// `…/status`
    Status,
    /// `…/welcome`
    Welcome,
    /// `…/ack/<p>`
    Ack(u16),
    /// `…/result`
    Result,
    /// `…/state`
    State,
    /// `…/events`
    Events,
}

/// A parsed device topic, borrowing from the topic string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceTopic<'a> {
    /// The `<site>` level.
    pub site: &'a str,
    /// The `<device>` level.
    pub device: &'a str,
    /// The rest.
    pub kind: TopicKind,
}

/// Parses `latentcam/<site>/<device>/<kind>[/<p>]`. `None` for anything
/// else, including a partition number that is not the device's own.
pub fn parse_device_topic(topic: &str) -> Option<DeviceTopic<'_>> {
    let mut levels = topic.split('/');
    if levels.next()? != ROOT {
        return None;
    }
    let site = levels.next().filter(|l| valid_level(l))?;
    let device = levels.next().filter(|l| valid_level(l))?;
    let name = levels.next()?;
    let part = levels.next();
    if levels.next().is_some() {
        return None;
    }
    let own = |p: Option<&str>| -> Option<u16> {
        let p: u16 = p?.parse().ok()?;
        (p == partition(device)).then_some(p)
    };
    let kind = match (name, part) {
        ("hello", None) => TopicKind::Hello,
        ("latent", p) => TopicKind::Latent(own(p)?),
        ("heartbeat", None) => TopicKind::Heartbeat,
        ("status", None) => TopicKind::Status,
        ("welcome", None) => TopicKind::Welcome,
        ("ack", p) => TopicKind::Ack(own(p)?),
        ("result", None) => TopicKind::Result,
        ("state", None) => TopicKind::State,
        ("events", None) => TopicKind::Events,
        _ => return None,
    };
    Some(DeviceTopic { site, device, kind })
}

#[cfg(feature = "alloc")]
pub use owned::*;

#[cfg(feature = "alloc")]
mod owned {
    use alloc::format;
    use alloc::string::String;

    use alloc::string::ToString;

    use super::{DEFAULT_PORT, DEFAULT_TLS_PORT, ROOT, partition, valid_level};

    /// Every topic one device uses, built once.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct DeviceTopics {
        /// The device's partition.
        pub partition: u16,
        /// `latentcam/<site>/<device>/hello`
        pub hello: String,
        /// `latentcam/<site>/<device>/latent/<p>`
        pub latent: String,
        /// `latentcam/<site>/<device>/heartbeat`
        pub heartbeat: String,
        /// `latentcam/<site>/<device>/status`
        pub status: String,
        /// `latentcam/<site>/<device>/welcome`
        pub welcome: String,
        /// `latentcam/<site>/<device>/ack/<p>`
        pub ack: String,
        /// `latentcam/<site>/<device>/result`
        pub result: String,
        /// `latentcam/<site>/<device>/state`
        pub state: String,
        /// `latentcam/<site>/<device>/events`
        pub events: String,
    }

    impl DeviceTopics {
        /// The topics of `device` at `site`; `None` when either is not a
        /// valid topic level ([`valid_level`]).
        pub fn new(site: &str, device: &str) -> Option<Self> {
            if !valid_level(site) || !valid_level(device) {
                return None;
            }
            let p = partition(device);
            let base = format!("{ROOT}/{site}/{device}");
            Some(Self {
                partition: p,
                hello: format!("{base}/hello"),
                latent: format!("{base}/latent/{p}"),
                heartbeat: format!("{base}/heartbeat"),
                status: format!("{base}/status"),
                welcome: format!("{base}/welcome"),
                ack: format!("{base}/ack/{p}"),
                result: format!("{base}/result"),
                state: format!("{base}/state"),
                events: format!("{base}/events"),
            })
        }
    }

    /// `latentcam/_workers/<group>/<worker>`: a worker's retained presence.
    pub fn worker_topic(group: &str, worker: &str) -> String {
        format!("{ROOT}/_workers/{group}/{worker}")
    }

    /// `latentcam/_workers/<group>/+`: every worker of a group.
    pub fn workers_filter(group: &str) -> String {
        format!("{ROOT}/_workers/{group}/+")
    }

    /// `latentcam/+/+/hello`: every device's retained `Hello`.
    pub fn hello_filter() -> String {
        format!("{ROOT}/+/+/hello")
    }

    /// `$share/<group>/latentcam/+/+/latent/<p>`: one partition's latents,
    /// shared among the group's subscribers.
    pub fn shared_latent_filter(group: &str, partition: u16) -> String {
        format!("$share/{group}/{ROOT}/+/+/latent/{partition}")
    }

    /// `latentcam/+/+/ack/<p>`: the retained acknowledgements of one
    /// partition's devices (read by a worker taking the partition over).
    pub fn ack_filter(partition: u16) -> String {
        format!("{ROOT}/+/+/ack/{partition}")
    }

    /// A broker address, parsed.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Broker {
        /// Host name or address: IPv6 in brackets from [`parse_broker`],
        /// without them from [`parse_url`].
        pub host: String,
        /// Port.
        pub port: u16,
        /// `mqtts://`: the connection is TLS, and the broker's certificate is
        /// checked against its host name.
        pub tls: bool,
    }

    /// Splits a broker address into host and port: `host:port`, `host`
    /// (port [`DEFAULT_PORT`]), either with an `mqtt://` prefix; IPv6 as
    /// `[addr]:port`. TLS addresses are refused here; [`parse_broker`] takes
    /// them. The error says what is wrong.
    pub fn parse_address(address: &str) -> Result<(String, u16), String> {
        match parse_broker(address)? {
            Broker { tls: true, .. } => Err(format!(
                "{address}: a TLS address where a plain one is needed"
            )),
            Broker { host, port, .. } => Ok((host, port)),
        }
    }

    /// [`parse_address`], plus `mqtts://host[:port]` for TLS (port
    /// [`DEFAULT_TLS_PORT`] by default).
    pub fn parse_broker(address: &str) -> Result<Broker, String> {
        let (rest, tls) = match address.split_once("://") {
            None => (address, false),
            Some(("mqtt", rest)) => (rest, false),
            Some(("mqtts", rest)) => (rest, true),
            Some((scheme, _)) => {
                return Err(format!(
                    "scheme `{scheme}://` is not supported: write host:port, mqtt://host:port or \
                     mqtts://host:port"
                ));
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (inside, after) = bracketed
                .split_once(']')
                .ok_or("an IPv6 address needs its closing `]`")?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or("expected `:port` after `]`")?),
            };
            (format!("[{inside}]"), port)
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (rest.to_string(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err("no broker host: write host:port, e.g. 192.168.1.10:1883".into());
        }
        if host.contains(['/', ' ']) {
            return Err(format!("`{host}` is not a host name"));
        }
        let port = match port {
            None if tls => DEFAULT_TLS_PORT,
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(format!("port `{p}` is not a number from 1 to 65535")),
            },
        };
        Ok(Broker { host, port, tls })
    }

    /// A host's `--mqtt` URL: [`parse_broker`], plus `tcp://` and `ssl://`
    /// as synonyms of `mqtt://` and `mqtts://` (the schemes other MQTT
    /// tools write). The host comes without IPv6 brackets, as MQTT client
    /// libraries want it. Errors start with the URL.
    pub fn parse_url(url: &str) -> Result<Broker, String> {
        let address = if let Some(rest) = url.strip_prefix("tcp://") {
            format!("mqtt://{rest}")
        } else if let Some(rest) = url.strip_prefix("ssl://") {
            format!("mqtts://{rest}")
        } else {
            url.to_string()
        };
        let broker = parse_broker(&address).map_err(|e| format!("{url}: {e}"))?;
        Ok(Broker {
            host: broker.host.trim_matches(['[', ']']).to_string(),
            ..broker
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_fnv1a_mod_64() {
        // FNV-1a("") = 0x811c9dc5, FNV-1a("a") = 0xe40c292c (published
        // test vectors of the hash), so the partitions are fixed forever.
        assert_eq!(partition(""), (0x811c_9dc5u32 % 64) as u16);
        assert_eq!(partition("a"), (0xe40c_292cu32 % 64) as u16);
        assert_eq!(partition("foobar"), (0xbf9c_f968u32 % 64) as u16);
    }

    #[test]
    fn partition_golden() {
        // Pinned from the implementation devices run; a change moves devices
        // between partitions and breaks fleets with mixed versions.
        for (device, p) in [
            ("cam-01", 56),
            ("cam-02", 49),
            ("cam-03", 30),
            ("garage", 44),
            ("shop 3", 8),
            ("ça-va", 56),
            ("cam-0123456789", 56),
        ] {
            assert_eq!(partition(device), p, "{device:?}");
        }
    }

    #[test]
    fn owner_golden() {
        // Pinned from the host's implementation before it moved here: workers
        // of one group on different versions must pick the same owners.
        let partitions = [0, 1, 7, 9, 10, 42, 63, 100, 999, 65535];
        let cases: [(&[&str], [&str; 10]); 6] = [
            (
                &["w1", "w2"],
                ["w2", "w1", "w2", "w1", "w1", "w2", "w2", "w1", "w2", "w1"],
            ),
            (
                &["w1", "w2", "w3"],
                ["w2", "w3", "w2", "w1", "w1", "w3", "w2", "w3", "w2", "w1"],
            ),
            // The order of the members does not matter.
            (
                &["w3", "w2", "w1"],
                ["w2", "w3", "w2", "w1", "w1", "w3", "w2", "w3", "w2", "w1"],
            ),
            (
                &["host-a", "host-b", "host-c", "host-d"],
                [
                    "host-d", "host-d", "host-b", "host-a", "host-d", "host-c", "host-a", "host-b",
                    "host-d", "host-b",
                ],
            ),
            (&["", "a"], ["", "", "", "a", "a", "", "a", "", "a", ""]),
            (
                &["w1"],
                ["w1", "w1", "w1", "w1", "w1", "w1", "w1", "w1", "w1", "w1"],
            ),
        ];
        for (members, owners) in cases {
            for (p, expected) in partitions.into_iter().zip(owners) {
                assert_eq!(
                    owner(p, members.iter().copied()),
                    Some(expected),
                    "partition {p} among {members:?}"
                );
            }
        }
        // Every partition, as the digit of its owner `w<digit>`.
        for (members, table) in [
            (
                &["w1", "w2", "w3"][..],
                "2333323231123233131213212122222132133332233133131221112231113322",
            ),
            (
                &["w1", "w2"][..],
                "2112221211122222121212212122222112121112212122121221112221112222",
            ),
        ] {
            assert_eq!(table.len(), usize::from(PARTITIONS));
            for (p, digit) in (0..PARTITIONS).zip(table.bytes()) {
                let owner = owner(p, members.iter().copied()).unwrap();
                assert_eq!(
                    owner.as_bytes()[1],
                    digit,
                    "partition {p} among {members:?}"
                );
            }
        }
        assert_eq!(owner(0, []), None);
    }

    #[test]
    fn rendezvous_moves_only_the_leavers_partitions() {
        let three = ["w1", "w2", "w3"];
        let two = ["w1", "w2"];
        let mut counts = [0u32; 3];
        for p in 0..PARTITIONS {
            let a = owner(p, three).unwrap();
            counts[three.iter().position(|&m| m == a).unwrap()] += 1;
            let b = owner(p, two).unwrap();
            if a != "w3" {
                assert_eq!(a, b, "partition {p} moved although its owner stayed");
            }
        }
        // Every member owns a fair share (64 partitions, 3 members).
        assert!(counts.iter().all(|&n| n >= 16), "{counts:?}");
    }

    #[test]
    fn weight_golden() {
        // FNV-1a-64 then the MurmurHash3 finaliser, pinned from the host's
        // implementation before it moved here.
        for (input, expected) in [
            ("0/w1", 0x150e_6e8e_e80c_bc6f_u64),
            ("5/cam", 0x351f_5031_57ce_b05e),
            ("63/", 0x0f84_8190_e01f_b903),
            ("65535/w1", 0xfb76_a5c9_ff94_e82d),
        ] {
            assert_eq!(weight(input.bytes()), expected, "{input:?}");
        }
    }

    #[test]
    fn levels() {
        assert!(valid_level("cam-01"));
        assert!(valid_level("shop 3"));
        for bad in ["", "a/b", "a+", "#", "$SYS", "_workers", "a\nb"] {
            assert!(!valid_level(bad), "{bad:?}");
        }
        assert!(!valid_level(&"x".repeat(MAX_LEVEL_LEN + 1)));
    }

    #[test]
    fn parses_device_topics() {
        let p = partition("cam-01");
        let latent = alloc_free_topic(p);
        let t = parse_device_topic(latent.as_str()).unwrap();
        assert_eq!(t.site, "shop");
        assert_eq!(t.device, "cam-01");
        assert_eq!(t.kind, TopicKind::Latent(p));
        assert_eq!(
            parse_device_topic("latentcam/shop/cam-01/hello").map(|t| t.kind),
            Some(TopicKind::Hello)
        );
        // Another partition than the device's own, extra levels, other roots.
        let wrong = (p + 1) % PARTITIONS;
        let mut buf = heapless_topic();
        write_topic(&mut buf, wrong);
        assert_eq!(parse_device_topic(buf.as_str()), None);
        assert_eq!(parse_device_topic("latentcam/shop/cam-01/hello/x"), None);
        assert_eq!(parse_device_topic("other/shop/cam-01/hello"), None);
        assert_eq!(parse_device_topic("latentcam/_workers/g/w"), None);
    }

    // A tiny fixed buffer so these tests also run without `alloc`.
    struct Buf {
        bytes: [u8; 64],
        len: usize,
    }
    impl Buf {
        fn as_str(&self) -> &str {
            core::str::from_utf8(&self.bytes[..self.len]).unwrap()
        }
    }
    impl core::fmt::Write for Buf {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let end = self.len + s.len();
            self.bytes
                .get_mut(self.len..end)
                .ok_or(core::fmt::Error)?
                .copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
    fn heapless_topic() -> Buf {
        Buf {
            bytes: [0; 64],
            len: 0,
        }
    }
    fn write_topic(buf: &mut Buf, p: u16) {
        use core::fmt::Write;
        write!(buf, "latentcam/shop/cam-01/latent/{p}").unwrap();
    }
    fn alloc_free_topic(p: u16) -> Buf {
        let mut buf = heapless_topic();
        write_topic(&mut buf, p);
        buf
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn device_topics() {
        let t = DeviceTopics::new("shop", "cam-01").unwrap();
        let p = partition("cam-01");
        assert_eq!(t.latent, alloc::format!("latentcam/shop/cam-01/latent/{p}"));
        assert_eq!(t.ack, alloc::format!("latentcam/shop/cam-01/ack/{p}"));
        assert_eq!(t.hello, "latentcam/shop/cam-01/hello");
        assert_eq!(t.state, "latentcam/shop/cam-01/state");
        assert_eq!(t.events, "latentcam/shop/cam-01/events");
        for (topic, kind) in [
            (&t.result, TopicKind::Result),
            (&t.state, TopicKind::State),
            (&t.events, TopicKind::Events),
        ] {
            assert_eq!(parse_device_topic(topic).map(|t| t.kind), Some(kind));
        }
        assert!(DeviceTopics::new("shop", "a/b").is_none());
        assert_eq!(
            shared_latent_filter("g", 7),
            "$share/g/latentcam/+/+/latent/7"
        );
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn addresses() {
        assert_eq!(parse_address("broker:1884"), Ok(("broker".into(), 1884)));
        assert_eq!(parse_address("broker"), Ok(("broker".into(), DEFAULT_PORT)));
        assert_eq!(
            parse_address("mqtt://10.0.0.2:1883/"),
            Ok(("10.0.0.2".into(), 1883))
        );
        assert_eq!(parse_address("[::1]:1885"), Ok(("[::1]".into(), 1885)));
        assert_eq!(parse_address("[::1]"), Ok(("[::1]".into(), DEFAULT_PORT)));
        for bad in [
            "",
            ":1883",
            "broker:0",
            "broker:x",
            "broker:70000",
            "tcp://broker:1883",
            "mqtts://broker",
            "[::1",
        ] {
            assert!(parse_address(bad).is_err(), "{bad:?} accepted");
        }
        let broker = |host: &str, port, tls| Broker {
            host: host.into(),
            port,
            tls,
        };
        assert_eq!(
            parse_broker("mqtts://broker"),
            Ok(broker("broker", DEFAULT_TLS_PORT, true))
        );
        assert_eq!(
            parse_broker("mqtts://[::1]:8884/"),
            Ok(broker("[::1]", 8884, true))
        );
        assert_eq!(
            parse_broker("mqtt://broker"),
            Ok(broker("broker", DEFAULT_PORT, false))
        );
        assert!(parse_broker("ssl://broker").is_err());
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn urls() {
        let broker = |host: &str, port, tls| Broker {
            host: host.into(),
            port,
            tls,
        };
        for (url, expected) in [
            ("b", broker("b", DEFAULT_PORT, false)),
            ("b:1884", broker("b", 1884, false)),
            ("mqtt://b:1884", broker("b", 1884, false)),
            ("tcp://10.0.0.1", broker("10.0.0.1", DEFAULT_PORT, false)),
            ("tcp://b:1885/", broker("b", 1885, false)),
            ("mqtts://b", broker("b", DEFAULT_TLS_PORT, true)),
            ("ssl://b", broker("b", DEFAULT_TLS_PORT, true)),
            ("ssl://[::1]:8884", broker("::1", 8884, true)),
            ("[fe80::1]", broker("fe80::1", DEFAULT_PORT, false)),
            ("mqtt://[::1]:1885", broker("::1", 1885, false)),
        ] {
            assert_eq!(parse_url(url), Ok(expected), "{url:?}");
        }
        for (url, error) in [
            (
                "http://b",
                "http://b: scheme `http://` is not supported: write host:port, \
                 mqtt://host:port or mqtts://host:port",
            ),
            (
                "mqtt://b:x",
                "mqtt://b:x: port `x` is not a number from 1 to 65535",
            ),
            (
                "tcp://:1883",
                "tcp://:1883: no broker host: write host:port, e.g. 192.168.1.10:1883",
            ),
            (
                "ssl://[::1",
                "ssl://[::1: an IPv6 address needs its closing `]`",
            ),
        ] {
            assert_eq!(parse_url(url), Err(error.into()), "{url:?}");
        }
    }
}
