//! The HTTP API exposed to hostile peers, against the real host binary on
//! 127.0.0.1: no route but the health check without the token, no
//! cross-site request riding on a browser's session, no photo that decodes
//! to gigabytes, no answer the size of the whole registry, and no pile of
//! stalled connections that keeps the API or the device port from anyone
//! else.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use latentcam_wire::frame::MAX_FRAME_LEN;
use latentcam_wire::{FrameDecoder, Message, PROTOCOL_VERSION, WelcomeStatus};
use serde_json::Value;

use crate::common::http::{self, Api};
use crate::serve::{Host, scratch};
use latentcam_testkit::repo;

/// The photo a test enrols when it wants one to succeed.
fn photo() -> Vec<u8> {
    std::fs::read(repo().join("models/efficientnet-lite0/fixtures/crops/HappyFish.png")).unwrap()
}

/// A metric's value from `/metrics`.
fn metric(api: &Api, name: &str) -> f64 {
    let answer = api.get("/metrics");
    assert_eq!(answer.status, 200);
    let text = answer.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
        .parse()
        .unwrap()
}

/// Labels in a few-shot store file (none when it does not exist yet).
fn enrolled(store: &std::path::Path) -> Vec<(String, usize)> {
    if !store.exists() {
        return Vec::new();
    }
    latentcam_host::heads::fewshot::FewShotStore::load(store, 1280)
        .unwrap()
        .labels()
        .map(|(l, n)| (l.to_owned(), n))
        .collect()
}

#[test]
fn every_route_but_the_health_check_needs_the_token() {
    let dir = scratch("http-token");
    let jsonl = dir.join("results.jsonl");
    let host = Host::start_with(&jsonl, "127.0.0.1:0", &["--http", "127.0.0.1:0"]);
    let api = host.api();

    // The host created the token file: a random 32-byte hex token, 0600.
    let token_file = dir.join("http.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(api.token.len(), 64);
    assert!(api.token.bytes().all(|b| b.is_ascii_hexdigit()));

    let anonymous = |method: &str, path: &str, headers: &[(&str, &str)]| {
        http::send(&api.base, method, path, headers, b"")
    };
    let health = anonymous("GET", "/healthz", &[]);
    assert_eq!((health.status, health.text().as_str()), (200, "ok"));
    for path in [
        "/api/devices",
        "/api/devices/x/latest",
        "/api/search?device=x&seq=0",
        "/metrics",
        "/no/such/route",
    ] {
        let answer = anonymous("GET", path, &[]);
        assert_eq!(answer.status, 401, "{path}: {answer:?}");
        assert!(answer.json()["error"].as_str().unwrap().contains("Bearer"));
        assert!(answer.header("www-authenticate").is_some());
    }
    let wrong = format!("Bearer {}", "0".repeat(64));
    let answer = anonymous("GET", "/api/devices", &[("Authorization", &wrong)]);
    assert_eq!(answer.status, 401);
    // A browser without a session is shown the login form.
    let answer = anonymous("GET", "/", &[]);
    assert_eq!(answer.status, 303);
    assert_eq!(answer.header("location"), Some("/login"));
    let form = anonymous("GET", "/login", &[]);
    assert_eq!(form.status, 200);
    assert!(form.text().contains(r#"name="token""#), "{}", form.text());
    assert_eq!(form.header("x-frame-options"), Some("DENY"));

    // The bearer token opens the API.
    let answer = api.get("/api/devices");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["total"], 0);

    // A wrong token at the form opens nothing; the right one a session.
    let origin = format!("http://{}", http::authority(&api.base));
    let answer = http::send(
        &api.base,
        "POST",
        "/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", &origin),
        ],
        format!("token={}", "1".repeat(64)).as_bytes(),
    );
    assert_eq!(answer.status, 401);
    assert!(answer.header("set-cookie").is_none());
    let cookie = api.login();
    let answer = http::send(&api.base, "POST", "/login", &[], b"");
    assert_eq!(answer.status, 415, "a login form, or nothing");
    let set = http::send(
        &api.base,
        "POST",
        "/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", &origin),
        ],
        format!("token={}", api.token).as_bytes(),
    );
    let attributes = set.header("set-cookie").unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attributes.contains(attribute), "{attributes}");
    }
    let answer = anonymous("GET", "/api/devices", &[("Cookie", &cookie)]);
    assert_eq!(answer.status, 200, "{answer:?}");
    let page = anonymous("GET", "/", &[("Cookie", &cookie)]);
    assert_eq!(page.status, 200);
    assert!(page.text().contains("latentcam host"));
    // A made-up session is nobody's.
    let forged = format!("latentcam_session={}", "a".repeat(64));
    assert_eq!(
        anonymous("GET", "/api/devices", &[("Cookie", &forged)]).status,
        401
    );
    host.stop();
}

#[test]
fn the_api_is_not_served_without_a_token_unless_asked_to_be() {
    let out = crate::common::host_command()
        .args(["serve", "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--http needs --http-token-file PATH")
            && stderr.contains("--http-allow-anonymous"),
        "{stderr}"
    );
    // A token the file holds must be worth the name.
    let dir = scratch("http-weak-token");
    let weak = dir.join("weak.token");
    std::fs::write(&weak, "secret\n").unwrap();
    let out = crate::common::host_command()
        .args(["serve", "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .arg("--http-token-file")
        .arg(&weak)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least 16"), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");

    // A created token is logged by where it is, never by its value.
    let created = dir.join("new.token");
    let mut child = crate::common::host_command()
        .args(["serve", "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .arg("--http-token-file")
        .arg(&created)
        .arg("--models")
        .arg(repo().join("models"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = String::new();
    for line in BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        log.push_str(&line);
        log.push('\n');
        if line.contains("listening on") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let token = std::fs::read_to_string(&created).unwrap();
    assert_eq!(token.trim().len(), 64);
    assert!(log.contains(&created.display().to_string()), "{log}");
    assert!(
        !log.contains(token.trim()),
        "the log shows the token:\n{log}"
    );
}

#[test]
fn a_cross_site_enrolment_is_refused_and_changes_nothing() {
    let dir = scratch("http-csrf");
    let jsonl = dir.join("results.jsonl");
    let store = dir.join("fewshot.bin");
    let store_arg = store.display().to_string();
    let host = Host::start_with(
        &jsonl,
        "127.0.0.1:0",
        &["--http", "127.0.0.1:0", "--fewshot", &store_arg],
    );
    let api = host.api();
    let cookie = api.login();
    let own = format!("http://{}", http::authority(&api.base));
    let page = format!("{own}/");

    // What a form on another site makes a logged-in browser send.
    // (what, headers, expected status)
    type Attempt<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16);
    let refused: [Attempt<'_>; 6] = [
        (
            "a cross-site text/plain form",
            vec![
                ("Cookie", &cookie),
                ("Content-Type", "text/plain"),
                ("Origin", "http://evil.example"),
            ],
            403,
        ),
        (
            "a cross-site fetch with the photo type",
            vec![
                ("Cookie", &cookie),
                ("Content-Type", "image/png"),
                ("Origin", "http://evil.example"),
            ],
            403,
        ),
        (
            "a cross-site Referer without Origin",
            vec![
                ("Cookie", &cookie),
                ("Content-Type", "image/png"),
                ("Referer", "http://evil.example/page"),
            ],
            403,
        ),
        (
            "Origin null",
            vec![
                ("Cookie", &cookie),
                ("Content-Type", "image/png"),
                ("Origin", "null"),
            ],
            403,
        ),
        (
            "a cookie request naming no origin",
            vec![("Cookie", &cookie), ("Content-Type", "image/png")],
            403,
        ),
        (
            "the host's own page with the wrong type",
            vec![
                ("Cookie", &cookie),
                ("Content-Type", "text/plain"),
                ("Origin", &own),
            ],
            415,
        ),
    ];
    let photo = photo();
    for (what, headers, status) in &refused {
        let answer = http::send(
            &api.base,
            "POST",
            "/api/enroll?label=ALL-CLEAR",
            headers,
            &photo,
        );
        assert_eq!(answer.status, *status, "{what}: {answer:?}");
        assert!(answer.json()["error"].is_string(), "{what}");
    }
    // Bearer requests: no origin rule, but the content type still holds.
    let answer = api.post("/api/enroll?label=ALL-CLEAR", "text/plain", &photo);
    assert_eq!(answer.status, 415, "{answer:?}");
    assert!(answer.text().contains("image/jpeg or image/png"));
    let answer = api.post("/api/search", "text/plain", br#"{"latent": [1]}"#);
    assert_eq!(answer.status, 415);
    assert_eq!(enrolled(&store), [], "nothing was enrolled");

    // The host's own page (same Origin, or a same-origin Referer) may.
    let answer = http::send(
        &api.base,
        "POST",
        "/api/enroll?label=fish",
        &[
            ("Cookie", &cookie),
            ("Content-Type", "image/png"),
            ("Referer", &page),
        ],
        &photo,
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    // So may a script with the token, from anywhere.
    let answer = http::send(
        &api.base,
        "POST",
        "/api/enroll?label=fish",
        &[
            ("Authorization", &api.bearer()),
            ("Content-Type", "image/png"),
            ("Origin", "http://tooling.example"),
        ],
        &photo,
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(metric(&api, "latentcam_http_cross_site_total"), 5.0);
    host.stop();
    assert_eq!(enrolled(&store), [("fish".to_owned(), 2)]);

    // Without authentication (asked for), the origin rule still holds.
    let jsonl = dir.join("anonymous.jsonl");
    let host = Host::start_with(
        &jsonl,
        "127.0.0.1:0",
        &[
            "--http",
            "127.0.0.1:0",
            "--http-allow-anonymous",
            "--fewshot",
            &store_arg,
        ],
    );
    let base = host.http().to_owned();
    let answer = http::send(
        &base,
        "POST",
        "/api/enroll?label=ALL-CLEAR",
        &[
            ("Content-Type", "text/plain"),
            ("Origin", "http://evil.example"),
        ],
        &photo,
    );
    assert_eq!(answer.status, 403, "{answer:?}");
    let answer = http::send(
        &base,
        "POST",
        "/api/enroll?label=ALL-CLEAR",
        &[("Content-Type", "text/plain")],
        &photo,
    );
    assert_eq!(answer.status, 415, "{answer:?}");
    host.stop();
    assert_eq!(enrolled(&store), [("fish".to_owned(), 2)]);
}

/// A PNG of `side`×`side` black 8-bit grey pixels, compressed as any
/// encoder would (a few hundred kilobytes for 20000×20000).
fn grey_png(side: u32) -> Vec<u8> {
    use flate2::write::ZlibEncoder;
    fn chunk(png: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        png.extend_from_slice(&crc.sum().to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    // Each row: filter byte 0, then the pixels.
    let row = vec![0u8; side as usize + 1];
    let mut z = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    for _ in 0..side {
        z.write_all(&row).unwrap();
    }
    chunk(&mut png, b"IDAT", &z.finish().unwrap());
    chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn a_picture_bomb_is_refused_without_decoding_it() {
    let bomb = grey_png(20_000);
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    let dir = scratch("http-bomb");
    let jsonl = dir.join("results.jsonl");
    let store = dir.join("fewshot.bin");
    let index = dir.join("latents.idx");
    let host = Host::start_with(
        &jsonl,
        "127.0.0.1:0",
        &[
            "--http",
            "127.0.0.1:0",
            "--fewshot",
            store.to_str().unwrap(),
            "--index",
            index.to_str().unwrap(),
        ],
    );
    let api = host.api();
    for path in ["/api/enroll?label=ALL-CLEAR", "/api/search/image"] {
        let answer = api.post(path, "image/png", &bomb);
        assert_eq!(answer.status, 413, "{path}: {answer:?}");
        let message = answer.json()["error"].as_str().unwrap().to_owned();
        assert!(
            message.contains("image 20000×20000 is larger than the 40-megapixel limit"),
            "{message}"
        );
    }
    // The decoded image would be 400 MB of grey and 1.2 GB of RGB.
    let status = std::fs::read_to_string(format!("/proc/{}/status", host.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    eprintln!("host peak RSS {} MiB", peak_kib / 1024);
    assert!(peak_kib < 300 * 1024, "peak RSS {peak_kib} KiB");
    // An ordinary photo still goes through.
    let answer = api.post("/api/enroll?label=fish", "image/png", &photo());
    assert_eq!(answer.status, 200, "{answer:?}");
    host.stop();
    assert_eq!(enrolled(&store), [("fish".to_owned(), 1)]);
}

#[test]
fn devices_come_in_pages() {
    let dir = scratch("http-pages");
    let jsonl = dir.join("results.jsonl");
    // 2 500 devices the host resumes from its results file.
    let devices = 2_500;
    let mut lines = String::new();
    for i in 0..devices {
        lines.push_str(&format!("{{\"device\":\"cam-{i:05}\",\"seq\":{i}}}\n"));
    }
    std::fs::write(&jsonl, lines).unwrap();
    let host = Host::start_with(&jsonl, "127.0.0.1:0", &["--http", "127.0.0.1:0"]);
    let api = host.api();

    let first = api.get("/api/devices").json();
    assert_eq!(first["total"], devices);
    assert_eq!(first["devices"].as_array().unwrap().len(), 100);
    assert_eq!(first["next_offset"], 100);
    let device = &first["devices"][0];
    assert_eq!(device["id"], "cam-00000");
    for field in ["fps", "record", "latest"] {
        assert!(device.get(field).is_some(), "{field}: {device}");
    }
    // At most 1000 a page, whatever is asked.
    let big = api.get("/api/devices?limit=100000").json();
    assert_eq!(big["limit"], 1000);
    assert_eq!(big["devices"].as_array().unwrap().len(), 1000);
    // Walking the pages gives every device once, in order.
    let mut seen = Vec::new();
    let mut offset = Some(0);
    while let Some(at) = offset {
        let page = api
            .get(&format!("/api/devices?offset={at}&limit=1000"))
            .json();
        seen.extend(
            page["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_owned()),
        );
        offset = page["next_offset"].as_u64();
        assert!(seen.len() <= devices, "pages overlap");
    }
    let expected: Vec<String> = (0..devices).map(|i| format!("cam-{i:05}")).collect();
    assert_eq!(seen, expected);
    let past = api.get("/api/devices?offset=99999").json();
    assert_eq!(past["devices"].as_array().unwrap().len(), 0);
    assert_eq!(past["next_offset"], Value::Null);
    assert_eq!(api.get("/api/devices?limit=ten").status, 400);
    host.stop();
}

/// Whether the device port answers a `Hello` (with an unknown model, so
/// the answer is a refusal `Welcome`): an accepted, served connection.
fn device_port_answers(address: &str) -> bool {
    let hello = latentcam_testkit::hello::hello_frame(
        "probe",
        "no-such-model",
        [0; 32],
        PROTOCOL_VERSION.into(),
    );
    let Ok(mut stream) = TcpStream::connect(address) else {
        return false;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    if stream.write_all(&hello).is_err() {
        return false;
    }
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    let mut welcome = None;
    let mut decoder: Box<FrameDecoder<MAX_FRAME_LEN>> = Box::default();
    decoder.feed_all(&received, |m| {
        if let Ok(Message::Welcome(w)) = m {
            welcome = Some(w.status);
        }
    });
    welcome == Some(WelcomeStatus::UnknownModel)
}

#[test]
fn stalled_connections_hold_neither_the_api_nor_the_device_port() {
    let dir = scratch("http-stall");
    let jsonl = dir.join("results.jsonl");
    // 256 descriptors: 300 stalled connections would take them all, and
    // then the device port could accept no camera.
    let host = Host::start_limited(
        &jsonl,
        256,
        &[
            "--http",
            "127.0.0.1:0",
            "--http-max-connections",
            "100",
            "--http-header-timeout",
            "5",
        ],
    );
    let api = host.api();
    let authority = http::authority(&api.base).to_owned();
    let stalled: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(&authority).unwrap();
            // A request head begun, never finished.
            let _ = s.write_all(b"GET / HTTP/1.1\r\n");
            s
        })
        .collect();

    // A camera still gets its Welcome while the stalled connections hang.
    assert!(device_port_answers(&host.address), "device port unusable");

    // An authenticated request is answered once the stalled ones time out
    // (a client retries a refused connection).
    let deadline = Instant::now() + Duration::from_secs(20);
    let answered = loop {
        let Ok(mut s) = TcpStream::connect(&authority) else {
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let request = format!(
            "GET /api/devices HTTP/1.1\r\nHost: {authority}\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
            api.bearer()
        );
        let mut raw = Vec::new();
        if s.write_all(request.as_bytes()).is_ok() {
            let _ = s.read_to_end(&mut raw);
        }
        if raw.starts_with(b"HTTP/1.1 200") {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert!(answered, "no answer while stalled connections were held");

    // Every stalled connection is closed by the host: at once beyond the
    // cap, after the header timeout within it.
    let deadline = Instant::now() + Duration::from_secs(20);
    for mut s in stalled {
        let left = deadline.saturating_duration_since(Instant::now());
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut sink = Vec::new();
        match s.read_to_end(&mut sink) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("a stalled connection stayed open: {e}"),
        }
    }
    assert!(metric(&api, "latentcam_http_connections_refused_total") >= 200.0);
    assert!(metric(&api, "latentcam_http_header_timeouts_total") >= 100.0);
    host.stop();
}

#[test]
fn an_upload_that_stalls_is_cut_off() {
    let dir = scratch("http-slow-body");
    let jsonl = dir.join("results.jsonl");
    let store = dir.join("fewshot.bin");
    let host = Host::start_with(
        &jsonl,
        "127.0.0.1:0",
        &[
            "--http",
            "127.0.0.1:0",
            "--http-body-timeout",
            "1",
            "--fewshot",
            store.to_str().unwrap(),
        ],
    );
    let api = host.api();
    let authority = http::authority(&api.base).to_owned();
    let mut s = TcpStream::connect(&authority).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // A photo of 100 000 bytes announced, 10 sent, then nothing.
    write!(
        s,
        "POST /api/enroll?label=slow HTTP/1.1\r\nHost: {authority}\r\nAuthorization: {}\r\n\
         Content-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n0123456789",
        api.bearer()
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let answer = http::parse(&raw);
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(metric(&api, "latentcam_http_body_timeouts_total"), 1.0);
    // Announcing more than a photo may be is refused before any of it is read.
    let answer = http::send(
        &api.base,
        "POST",
        "/api/enroll?label=huge",
        &[
            ("Authorization", &api.bearer()),
            ("Content-Type", "image/jpeg"),
            ("Content-Length", "1000000000"),
        ],
        b"",
    );
    assert_eq!(answer.status, 413, "{answer:?}");
    host.stop();
    assert_eq!(enrolled(&store), []);
}

#[test]
fn the_api_is_served_over_tls_with_the_given_certificate() {
    let dir = scratch("http-tls");
    let jsonl = dir.join("results.jsonl");
    // A self-signed certificate for 127.0.0.1, made by the openssl CLI.
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=latentcam-test", "-addext"])
        .args(["subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("the openssl command is needed for the TLS test");
    assert!(made.success());
    let host = Host::start_with(
        &jsonl,
        "127.0.0.1:0",
        &[
            "--http",
            "127.0.0.1:0",
            "--http-tls-cert",
            cert.to_str().unwrap(),
            "--http-tls-key",
            key.to_str().unwrap(),
        ],
    );
    let api = host.api();
    assert!(api.base.starts_with("https://"), "{}", api.base);
    // curl trusting the certificate: (succeeded, stdout).
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(&cert)
            .args(args)
            .output()
            .expect("curl is needed for the TLS test");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let url = |path: &str| format!("{}{path}", api.base);
    assert_eq!(curl(&[&url("healthz")]), (true, "ok".to_owned()));
    let status_only = ["-o", "/dev/null", "-w", "%{http_code}"];
    let (_, status) = curl(&[&status_only[..], &[&url("api/devices")]].concat());
    assert_eq!(status, "401");
    let bearer = format!("Authorization: {}", api.bearer());
    let (ok, body) = curl(&["-H", &bearer, &url("api/devices")]);
    assert!(ok, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["total"], 0);
    // The session cookie is only ever sent back over TLS.
    let origin = format!("Origin: {}", api.base.trim_end_matches('/'));
    let form = format!("token={}", api.token);
    let (ok, head) = curl(&[
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        &origin,
        "--data",
        &form,
        &url("login"),
    ]);
    assert!(ok, "{head}");
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {head}"));
    assert!(cookie.contains("; Secure"), "{cookie}");

    // A client that does not trust the certificate gets nothing.
    let untrusting = Command::new("curl")
        .args(["-sS", "--max-time", "20", &url("healthz")])
        .output()
        .unwrap();
    assert!(!untrusting.status.success());
    // Plain HTTP on the TLS port gets no HTTP answer.
    let answer = {
        let mut s = TcpStream::connect(http::authority(&api.base)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        raw
    };
    assert!(!answer.starts_with(b"HTTP/1.1 200"));
    host.stop();
}
