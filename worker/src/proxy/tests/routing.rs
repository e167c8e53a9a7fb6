//! Routing end to end: `OPTIONS *`, and paths matched once normalised.

use crate::testing::{config, exchange, Proxy};
use prefork_shared::config::{FixedResponse, HostMatch, Route, RouteAction};
use prefork_testkit::handler::EchoOrigin;

/// `OPTIONS *` asks about the server as a whole (RFC 9112 §3.2.4): it is
/// routed as `OPTIONS http://host` is (by its host, path `/`), and
/// forwarded as received, not answered 404 for want of a route path `*`.
#[test]
fn options_asterisk_reaches_the_root_route_of_its_host() {
    let origin = EchoOrigin::start();
    let mut config = config(origin.addr());
    config.routes.push(Route {
        host: HostMatch::Exact("star.test".into()),
        path: "/".into(),
        action: RouteAction::Proxy("app".into()),
        access_log: Default::default(),
        max_body_size: None,
    });
    let proxy = Proxy::start(config);
    let mut c = proxy.connect();
    for request in [
        "OPTIONS * HTTP/1.1\r\nHost: star.test\r\n\r\n",
        "OPTIONS http://star.test HTTP/1.1\r\nHost: star.test\r\n\r\n",
    ] {
        let r = exchange(&mut c, request);
        assert_eq!(r.status, 200, "{request:?}");
        assert!(
            r.text().starts_with("conn=1\nOPTIONS * HTTP/1.1\r\n"),
            "{request:?}: {}",
            r.text()
        );
    }
}

/// Routes match the normalised path, as nginx's locations do: escapes, dot
/// segments and repeated slashes cannot steer a request past a route for
/// `/admin` to the `/` route's upstream (which would serve `/admin` after
/// its own decoding). The upstream still gets the target as the client sent
/// it; a path climbing above the root gets 400.
#[test]
fn routes_match_the_normalised_path_and_the_target_goes_as_sent() {
    let origin = EchoOrigin::start();
    let mut config = config(origin.addr());
    let route = |path: &str, action| Route {
        host: HostMatch::Exact("norm.test".into()),
        path: path.into(),
        action,
        access_log: Default::default(),
        max_body_size: None,
    };
    config
        .routes
        .push(route("/", RouteAction::Proxy("app".into())));
    config.routes.push(route(
        "/admin",
        RouteAction::Respond(FixedResponse {
            status: 403,
            body: "no\n".into(),
            content_type: "text/plain".into(),
        }),
    ));
    let proxy = Proxy::start(config);
    let mut c = proxy.connect();
    for path in [
        "/admin",
        "/%61dmin",
        "/%41DMIN",
        "/public/../admin",
        "/public/%2e%2e/admin/x",
        "/public%2F..%2Fadmin",
        "//admin",
        "/./admin",
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: norm.test\r\n\r\n");
        let r = exchange(&mut c, &request);
        // Paths are case-sensitive: `/ADMIN` is another path.
        let want = if path == "/%41DMIN" { 200 } else { 403 };
        assert_eq!(r.status, want, "{path}: {}", r.text());
    }
    let r = exchange(
        &mut c,
        "GET /a//b/./c?x=/../y HTTP/1.1\r\nHost: norm.test\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("GET /a//b/./c?x=/../y HTTP/1.1\r\n"),
        "{}",
        r.text()
    );
    let r = exchange(&mut c, "GET /../admin HTTP/1.1\r\nHost: norm.test\r\n\r\n");
    assert_eq!(r.status, 400);
}
