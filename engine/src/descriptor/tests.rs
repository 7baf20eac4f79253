use super::*;

#[test]
fn a_descriptor_prints_without_its_password() {
    let d = ServerDescriptor::new("hunter2-secret");
    let shown = format!("{d:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("password: \"***\""), "{shown}");
    let c = crate::ClientDescriptor::new("hunter2-secret");
    assert!(!format!("{c:?}").contains("hunter2"));
    assert_eq!(d.password.expose(), "hunter2-secret");
}

#[test]
fn defaults_match_the_guide() {
    let d = ServerDescriptor::new("secret");
    assert_eq!(d.host, "0.0.0.0");
    assert_eq!(d.port, 8080);
    assert_eq!(d.auth_timeout, Duration::from_secs(30));
    assert_eq!(d.max_connections, 1000);
    assert_eq!(d.buffer_size, 65536);
    assert_eq!(d.heartbeat_interval, Duration::from_secs(30));
    assert_eq!(d.heartbeat_timeout, Duration::from_secs(90));
    assert_eq!(d.name, "Server");
    assert!(d.shards >= 1);
    assert!(d.validate().is_ok());
}

fn field_of(d: ServerDescriptor) -> &'static str {
    match d.validate() {
        Err(Error::Config { field, .. }) => field,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn each_invalid_field_is_named() {
    let ok = || ServerDescriptor::new("pw");
    assert_eq!(field_of(ServerDescriptor::new("")), "password");
    assert_eq!(field_of(ok().host("localhost:1")), "host");
    assert_eq!(field_of(ok().auth_timeout(Duration::ZERO)), "auth_timeout");
    assert_eq!(
        field_of(ok().tls_handshake_timeout(Duration::ZERO)),
        "tls_handshake_timeout"
    );
    assert_eq!(field_of(ok().max_connections(0)), "max_connections");
    assert_eq!(field_of(ok().buffer_size(10)), "buffer_size");
    assert_eq!(
        field_of(ok().heartbeat(Duration::ZERO, Duration::from_secs(1))),
        "heartbeat_interval"
    );
    assert_eq!(
        field_of(ok().heartbeat(Duration::from_secs(5), Duration::from_secs(5))),
        "heartbeat_timeout"
    );
    assert_eq!(
        field_of(ok().heartbeat(Duration::from_secs(5), Duration::from_secs(3))),
        "heartbeat_timeout"
    );
    assert_eq!(field_of(ok().shards(0)), "shards");
    assert_eq!(field_of(ok().shards(100_000)), "shards");
    assert_eq!(field_of(ok().max_frame_bytes(1)), "max_frame_bytes");
    assert_eq!(field_of(ok().max_outbound_bytes(10)), "max_outbound_bytes");
    assert_eq!(
        field_of(ok().allow_v1(false).allow_native(false)),
        "allow_v1"
    );
    let mut d = ok();
    d.max_payload_depth = MAX_PAYLOAD_DEPTH + 1;
    assert_eq!(field_of(d), "max_payload_depth");
    let mut d = ok();
    d.max_auth_frame_bytes = 100;
    assert_eq!(field_of(d), "max_auth_frame_bytes");
    let mut d = ok();
    d.bus_capacity = 0;
    assert_eq!(field_of(d), "bus_capacity");
    let mut d = ok();
    d.preempt_timer = Duration::ZERO;
    assert_eq!(field_of(d), "preempt_timer");
    assert_eq!(
        field_of(ok().proxy_header_timeout(Duration::ZERO)),
        "proxy_header_timeout"
    );
    // Longer than auth_timeout is fine: the shorter applies.
    assert!(ok().auth_timeout(Duration::from_secs(2)).validate().is_ok());
    let net = |s: &str| s.parse::<IpNet>().unwrap();
    assert_eq!(
        field_of(ok().trusted_proxies([net("10.0.0.1/8")])),
        "trusted_proxies"
    );
    assert_eq!(
        field_of(ok().trusted_proxies([net("2001:db8::1/64")])),
        "trusted_proxies"
    );
}

#[test]
fn trusted_proxies_match_by_network_and_default_to_none() {
    let d = ServerDescriptor::new("pw");
    assert!(d.trusted_proxies.is_empty());
    assert_eq!(d.proxy_header_timeout, Duration::from_secs(5));
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    assert!(!d.is_trusted_proxy(ip("127.0.0.1")));
    let d = d.trusted_proxies([
        "10.1.0.0/16".parse().unwrap(),
        "2001:db8::/32".parse().unwrap(),
    ]);
    assert!(d.validate().is_ok());
    assert!(d.is_trusted_proxy(ip("10.1.2.3")));
    assert!(d.is_trusted_proxy(ip("::ffff:10.1.2.3")), "IPv4-mapped");
    assert!(d.is_trusted_proxy(ip("2001:db8:5::9")));
    assert!(!d.is_trusted_proxy(ip("10.2.0.1")));
    assert!(!d.is_trusted_proxy(ip("2001:db9::1")));
}
