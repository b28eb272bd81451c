//! The embedded MQTT broker (rumqttd) for the one-command path: `ambient demo` and `ambient up`.
//!
//! rumqttd has no topic ACLs, so the embedded broker trusts every authenticated client not to
//! touch other clients' topics. Production runs mosquitto with `broker-config/`, whose ACL
//! confines each node and submitter to its own topics. rumqttd also keeps sessions and retained
//! messages in memory only.
//!
//! Accounts are checked here, by rumqttd's external authentication hook, against
//! [`Accounts`]: a table that the coordinator changes at run time (a node that joins with a
//! token gets an account; a revoked node loses it and is disconnected at once). Each account's
//! client ids are bound to it: `coordinator` may use any, every other account only its own name
//! or its name followed by `:` and anything (a submitter's several connections). So no node can
//! take over the coordinator's client id, or another node's, and knock it off the broker.
//!
//! The rumqttd built here is patched (`vendor/rumqttd/PATCHES.md`) to set TCP_NODELAY on the
//! sockets it accepts; upstream leaves Nagle's algorithm on, and each small reply then waited
//! about 40 ms for the peer's delayed ACK.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use rumqttd::{Broker, BrokerHandle, Config, ConnectionSettings, RouterConfig, ServerSettings};
use sha2::{Digest, Sha256};

/// The one account that may connect with any client id: the coordinator's.
pub const SERVICE_ACCOUNT: &str = "coordinator";

/// A running embedded broker.
#[derive(Clone)]
pub struct EmbeddedBroker {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its accounts, changeable while it runs.
    pub accounts: Accounts,
}

/// The embedded broker's accounts: username → sha256 of the password. Cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    table: Table,
    router: BrokerHandle,
}

type Table = Arc<RwLock<HashMap<String, [u8; 32]>>>;

impl Accounts {
    /// Adds (or replaces) an account.
    pub fn add(&self, username: &str, password: &str) {
        self.insert(username, Sha256::digest(password.as_bytes()).into());
    }

    /// Adds an account whose password the caller only has as a sha256 (hex), as the store
    /// keeps enrolled nodes'. A malformed hash adds nothing.
    pub fn add_hashed(&self, username: &str, password_sha256: &str) {
        if let Some(hash) = hex::decode(password_sha256)
            .ok()
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
        {
            self.insert(username, hash);
        }
    }

    fn insert(&self, username: &str, hash: [u8; 32]) {
        self.table
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(username.to_string(), hash);
    }

    /// Removes an account and disconnects its client at once. Blocks briefly on the broker's
    /// router: call it off async workers.
    pub fn remove(&self, username: &str) {
        self.table
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(username);
        if let Err(e) = self.router.disconnect(username) {
            tracing::warn!(username, error = %e, "Could not disconnect a removed account.");
        }
    }
}

/// Whether `username` with `password` may connect as `client_id`.
fn admits(table: &Table, client_id: &str, username: &str, password: &str) -> bool {
    let table = table.read().unwrap_or_else(PoisonError::into_inner);
    let Some(hash) = table.get(username) else {
        return false;
    };
    let given: [u8; 32] = Sha256::digest(password.as_bytes()).into();
    let same = given
        .iter()
        .zip(hash)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0;
    same && client_id_of(client_id, username)
}

/// The client-id binding: the coordinator may use any client id, every other account its own
/// name, or its name, `:` and a suffix. (`:` is never part of an account name, so one account's
/// ids can never be another's.)
pub fn client_id_of(client_id: &str, username: &str) -> bool {
    username == SERVICE_ACCOUNT
        || client_id == username
        || client_id
            .strip_prefix(username)
            .is_some_and(|rest| rest.starts_with(':'))
}

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

/// Starts rumqttd on `listen` (port 0 picks a free port) with `users` as its first accounts, on
/// its own thread for the rest of the process. Returns once it accepts connections.
pub fn start(
    listen: SocketAddr,
    users: &[(String, String)],
) -> Result<EmbeddedBroker, BrokerError> {
    let addr = if listen.port() == 0 {
        // rumqttd cannot report the port it bound, so pick one first (a small race, loopback only).
        std::net::TcpListener::bind(listen)?.local_addr()?
    } else {
        listen
    };
    let mut connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: ambient_link::MAX_PACKET_BYTES + 64 * 1024,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let table: Table = Arc::default();
    let checked = table.clone();
    connections.set_auth_handler(move |client_id, username, password| {
        let ok = admits(&checked, &client_id, &username, &password);
        std::future::ready(ok)
    });
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
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
            let _ = handle_tx.send(broker.handle());
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "Embedded MQTT broker stopped.");
            }
        })?;
    let router = handle_rx
        .recv()
        .map_err(|_| std::io::Error::other("the broker thread ended at start"))?;
    let accounts = Accounts { table, router };
    for (user, password) in users {
        accounts.add(user, password);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(EmbeddedBroker { addr, accounts });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(BrokerError::NotListening(addr))
}
