//! The embedded MQTT broker (rumqttd) for the one-command path: `ambient demo` and `ambient up`.
//!
//! rumqttd checks static usernames and passwords but has no topic ACLs, so the embedded broker
//! trusts every authenticated client not to touch other clients' topics. Production runs
//! mosquitto with `broker-config/`, whose ACL confines each node and submitter to its own topics.
//! rumqttd also keeps sessions and retained messages in memory only.
//!
//! The rumqttd built here is patched (`vendor/rumqttd/PATCHES.md`) to set TCP_NODELAY on the
//! sockets it accepts; upstream leaves Nagle's algorithm on, and each small reply then waited
//! about 40 ms for the peer's delayed ACK.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// An embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No free port, or the thread could not start.
    #[error("embedded broker: {0}")]
    Io(#[from] std::io::Error),
    /// It did not accept connections in time (its log says why, e.g. the port was taken).
    #[error("embedded broker did not start listening on {0}")]
    NotListening(SocketAddr),
}

/// Starts rumqttd on `listen` (port 0 picks a free port) with static `users`, on its own thread
/// for the rest of the process. Returns the address it listens on once it accepts connections.
pub fn start(listen: SocketAddr, users: &[(String, String)]) -> Result<SocketAddr, BrokerError> {
    let addr = if listen.port() == 0 {
        // rumqttd cannot report the port it bound, so pick one first (a small race, loopback only).
        std::net::TcpListener::bind(listen)?.local_addr()?
    } else {
        listen
    };
    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: ambient_link::MAX_PACKET_BYTES + 64 * 1024,
        max_inflight_count: 100,
        auth: Some(users.iter().cloned().collect::<HashMap<_, _>>()),
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "ambient-v4".into(),
        listen: addr,
        tls: None,
        // rumqttd sleeps this long after each accept: 0, so a reconnect storm is not capped.
        next_connection_delay_ms: 0,
        connections,
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 200,
            // Each subscribed filter keeps a log of up to (count + 1) × size bytes.
            max_segment_size: 8 << 20,
            max_segment_count: 2,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("ambient".to_string(), server)])),
        ..Config::default()
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "Embedded MQTT broker stopped.");
            }
        })?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(addr);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(BrokerError::NotListening(addr))
}
