//! Black-box tests: they run the real `prefork` binary against test origins
//! and talk to it over loopback sockets.

mod support;

mod config_check;
mod conformance;
mod connection_limits;
mod cpu_affinity;
mod errors;
mod grpc;
mod harness;
mod http2;
mod http2_floods;
mod http2_parking;
mod lifecycle;
mod load_board;
mod observability;
mod parking;
mod proxy_protocol;
mod proxying;
mod redirects;
mod reload;
mod reuseport;
mod routing;
mod send_proxy_protocol;
mod systemd;
mod tls;
mod tls_resumption;
mod upstream_tls;
mod upstreams;
mod websocket;
mod zero_downtime;
