//! The MQTT link of every Ambient VCP process (agent, coordinator, CLI).
//!
//! One task owns the rumqttc [`EventLoop`]: it only polls, resubscribes on every ConnAck, and
//! forwards incoming publishes into a channel. Everything else holds the [`AsyncClient`]. A
//! broken connection is retried with capped exponential backoff for as long as the process runs,
//! and the current state is visible through a [`tokio::sync::watch`] channel.
//!
//! A link can know several addresses of one clustered broker ([`LinkOptions::failover`]): each
//! failed connection attempt moves on to the next address, round robin, so a client whose broker
//! node dies reconnects to another node of the cluster, which holds its session.
//!
//! The link speaks MQTT 3.1.1: every feature the protocol needs (QoS1, retained messages, Last
//! Will, persistent sessions, and shared subscriptions on mosquitto ≥ 2) works there, and it is
//! rumqttc's most mature client.

use std::time::Duration;

pub use rumqttc::{AsyncClient, QoS};
use rumqttc::{ConnectionError, Event, EventLoop, LastWill, MqttOptions, NetworkOptions, Packet};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

/// Largest MQTT packet accepted or sent: wasm modules ride inside assignments as base64.
pub const MAX_PACKET_BYTES: usize = 16 << 20;

/// How to connect.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Other addresses of the same (clustered) broker, tried in turn after `host:port` when a
    /// connection attempt fails.
    pub failover: Vec<(String, u16)>,
    /// Fixed client id: with `clean_session = false` the broker keeps the session under it.
    pub client_id: String,
    /// Username and password.
    pub credentials: Option<(String, String)>,
    /// False keeps a persistent session (queued QoS1 messages survive our disconnects).
    pub clean_session: bool,
    /// MQTT keep-alive; the broker fires the Last Will after 1.5 × this without traffic.
    pub keep_alive: Duration,
    /// `(topic, payload)` published retained by the broker if we vanish.
    pub last_will: Option<(String, Vec<u8>)>,
    /// Subscribed again on every ConnAck.
    pub subscriptions: Vec<String>,
}

/// What the event loop task reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// The broker accepted our connection (first time or again); subscriptions are renewed.
    Connected {
        /// The broker still had our session.
        session_present: bool,
    },
    /// A message on a subscribed topic.
    Publish {
        /// Topic name.
        topic: String,
        /// Payload bytes.
        payload: Vec<u8>,
    },
}

/// Connection state, for health endpoints and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected yet, or connecting again.
    Connecting,
    /// Connected.
    Connected,
    /// The broker refused us (bad credentials, not authorised). Still retrying, slowly.
    Refused(String),
    /// Connection lost; retrying.
    Down(String),
}

/// A running link.
pub struct Link {
    /// Publish and subscribe through this.
    pub client: AsyncClient,
    /// Incoming messages and connection events.
    pub incoming: mpsc::Receiver<Incoming>,
    /// Current connection state.
    pub state: watch::Receiver<LinkState>,
}

/// Starts the event loop task on `tracker`; it ends when `shutdown` is cancelled.
pub fn start(opts: LinkOptions, shutdown: CancellationToken, tracker: &TaskTracker) -> Link {
    let (client, mut eventloop) = AsyncClient::new(mqtt_options(&opts, 0), 4096);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    net.set_connection_timeout(5);
    eventloop.set_network_options(net);

    let (tx, incoming) = mpsc::channel(1024);
    let (state_tx, state) = watch::channel(LinkState::Connecting);
    let sub_client = client.clone();
    tracker.spawn(async move {
        tokio::select! {
            _ = drive(&mut eventloop, &sub_client, &opts, &tx, &state_tx) => {}
            _ = shutdown.cancelled() => {}
        }
        debug!(client_id = %opts.client_id, "MQTT event loop stopped.");
    });
    Link {
        client,
        incoming,
        state,
    }
}

/// Parses a configuration's list of failover addresses, each `host:port` (e.g. `10.0.0.6:1883`
/// or `broker-2.example:1883`); the error names the first entry that is not one.
pub fn parse_failover(list: &[String]) -> Result<Vec<(String, u16)>, String> {
    list.iter()
        .map(|text| {
            text.rsplit_once(':')
                .and_then(|(host, port)| {
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    Some((host.to_string(), port.parse().ok()?)).filter(|_| !host.is_empty())
                })
                .ok_or_else(|| format!("mqtt.failover: {text:?} is not host:port"))
        })
        .collect()
}

/// Every address of the broker, `host:port` first.
fn addresses(opts: &LinkOptions) -> impl Iterator<Item = (&str, u16)> {
    std::iter::once((opts.host.as_str(), opts.port))
        .chain(opts.failover.iter().map(|(h, p)| (h.as_str(), *p)))
}

/// The client's options for address `i` (modulo the number of addresses).
fn mqtt_options(opts: &LinkOptions, i: usize) -> MqttOptions {
    let n = 1 + opts.failover.len();
    let (host, port) = addresses(opts).nth(i % n).expect("i % n < n");
    let mut mqtt = MqttOptions::new(opts.client_id.clone(), host, port);
    mqtt.set_keep_alive(opts.keep_alive)
        .set_clean_session(opts.clean_session)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
        .set_inflight(100);
    if let Some((user, pass)) = &opts.credentials {
        mqtt.set_credentials(user.clone(), pass.clone());
    }
    if let Some((topic, payload)) = &opts.last_will {
        mqtt.set_last_will(LastWill::new(
            topic.clone(),
            payload.clone(),
            QoS::AtLeastOnce,
            true,
        ));
    }
    mqtt
}

async fn drive(
    eventloop: &mut EventLoop,
    client: &AsyncClient,
    opts: &LinkOptions,
    tx: &mpsc::Sender<Incoming>,
    state: &watch::Sender<LinkState>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut address = 0;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = Duration::from_millis(100);
                let (host, port) = eventloop.mqtt_options.broker_address();
                info!(client_id = %opts.client_id, broker = %format!("{host}:{port}"),
                      session_present = ack.session_present, "Connected to MQTT broker.");
                let subs = opts
                    .subscriptions
                    .iter()
                    .map(|t| rumqttc::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
                if !opts.subscriptions.is_empty()
                    && let Err(e) = client.try_subscribe_many(subs)
                {
                    warn!(error = %e, "Could not queue subscriptions.");
                }
                state.send_replace(LinkState::Connected);
                let ev = Incoming::Connected {
                    session_present: ack.session_present,
                };
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let ev = Incoming::Publish {
                    topic: p.topic,
                    payload: p.payload.to_vec(),
                };
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                debug!(client_id = %opts.client_id, "Disconnected on request.");
                state.send_replace(LinkState::Down("disconnected on request".into()));
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let refused = matches!(e, ConnectionError::ConnectionRefused(_));
                let text = e.to_string();
                let was_connected = *state.borrow() == LinkState::Connected;
                if refused {
                    if !matches!(*state.borrow(), LinkState::Refused(_)) {
                        error!(client_id = %opts.client_id, error = %text,
                               "MQTT broker refused the connection; check the credentials.");
                    }
                    state.send_replace(LinkState::Refused(text));
                    backoff = Duration::from_secs(5);
                } else {
                    if was_connected {
                        warn!(client_id = %opts.client_id, error = %text, "MQTT connection lost; reconnecting.");
                    } else {
                        debug!(client_id = %opts.client_id, error = %text, "MQTT connect failed; retrying.");
                    }
                    state.send_replace(LinkState::Down(text));
                }
                if !opts.failover.is_empty() {
                    // The next attempt goes to the next address; the client's state (its queued
                    // and in-flight messages) stays with the event loop.
                    address += 1;
                    eventloop.mqtt_options = mqtt_options(opts, address);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_addresses_parse_or_name_the_bad_entry() {
        let list = ["10.0.0.6:1883", "broker-2.example:8883", "[::1]:1884"].map(String::from);
        assert_eq!(
            parse_failover(&list).unwrap(),
            vec![
                ("10.0.0.6".to_string(), 1883),
                ("broker-2.example".to_string(), 8883),
                ("::1".to_string(), 1884)
            ]
        );
        for bad in ["10.0.0.6", ":1883", "host:port", "host:70000"] {
            let err = parse_failover(&[bad.to_string()]).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn attempts_go_round_the_addresses() {
        let opts = LinkOptions {
            host: "a".into(),
            port: 1,
            failover: vec![("b".into(), 2), ("c".into(), 3)],
            client_id: "x".into(),
            credentials: None,
            clean_session: true,
            keep_alive: Duration::from_secs(5),
            last_will: None,
            subscriptions: vec![],
        };
        let seen: Vec<_> = (0..4)
            .map(|i| mqtt_options(&opts, i).broker_address())
            .collect();
        let want = [("a", 1), ("b", 2), ("c", 3), ("a", 1)].map(|(h, p)| (h.to_string(), p));
        assert_eq!(seen, want);
    }
}
