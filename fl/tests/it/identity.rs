//! Signed secure-aggregation keys: clients with node identities sign the keys they advertise and
//! refuse a roster the relaying coordinator altered. The server here is honest; the tampering
//! happens to its `Roster` messages on the way, as a hostile coordinator would do it.

use std::collections::HashMap;
use std::sync::Arc;

use ambient_fl::ClientId;
use ambient_fl::client::{Client, ClientError, ClientIdentity};
use ambient_fl::data::{breast_cancer, non_iid_split};
use ambient_fl::secagg::{AdvertisedKeys, ClientSetup, SecAggParams};
use ambient_fl::server::{JobState, Outgoing, Server};
use ambient_fl::wire::{JobSpec, ToClient};
use ed25519_dalek::{SigningKey, VerifyingKey};

const N: usize = 4;

fn job() -> JobSpec {
    serde_json::from_value(serde_json::json!({
        "dataset": "breast_cancer",
        "rounds": 2,
        "secure_aggregation": true,
    }))
    .unwrap()
}

fn key(i: u8) -> SigningKey {
    // Fixed seeds keep the test reproducible; the property does not depend on them.
    SigningKey::from_bytes(&[i; 32])
}

/// Clients of nodes `node-0..` whose identities are all published.
fn clients() -> Vec<Client> {
    let published: HashMap<String, VerifyingKey> = (0..N as u8)
        .map(|i| (format!("node-{i}"), key(i).verifying_key()))
        .collect();
    let published = Arc::new(published);
    let data = non_iid_split(&breast_cancer(), N, 0, 0.3).unwrap();
    data.into_iter()
        .enumerate()
        .map(|(i, d)| {
            let p = published.clone();
            Client::with_identity(
                d,
                ClientIdentity {
                    node: format!("node-{i}"),
                    key: key(i as u8),
                    peers: Arc::new(move |n: &str| p.get(n).copied()),
                },
            )
        })
        .collect()
}

/// Runs the job; `tamper` may rewrite each `Roster` before it reaches its client. Returns the
/// end state and every client error.
fn run(
    tamper: &dyn Fn(ClientId, &mut Vec<AdvertisedKeys>),
) -> (JobState, Vec<(ClientId, ClientError)>) {
    let mut rng = rand::rng();
    let mut clients = clients();
    let (mut server, mut queue) = Server::start(job(), 30, N, 7, 0).unwrap();
    let mut errors = Vec::new();
    let mut now = 0;
    loop {
        if queue.is_empty() {
            if !matches!(server.state(), JobState::Running { .. }) {
                return (server.state().clone(), errors);
            }
            now += 60_000;
            queue = server.tick(now);
            continue;
        }
        let Outgoing { to, mut msg } = queue.remove(0);
        if let ToClient::Roster { roster, .. } = &mut msg {
            tamper(to, roster);
        }
        let msg: ToClient = serde_json::from_str(&serde_json::to_string(&msg).unwrap()).unwrap();
        match clients[to as usize].handle(msg, &mut rng) {
            Ok(Some(answer)) => queue.extend(server.handle(to, answer, now).0),
            Ok(None) => {}
            Err(e) => errors.push((to, e)),
        }
    }
}

fn untrusted(errors: &[(ClientId, ClientError)]) -> Vec<String> {
    errors
        .iter()
        .map(|(_, e)| match e {
            ClientError::Untrusted(m) => m.clone(),
            other => panic!("not an untrusted-roster error: {other}"),
        })
        .collect()
}

#[test]
fn signed_rosters_run_to_the_end() {
    let (state, errors) = run(&|_, _| {});
    assert!(errors.is_empty(), "{errors:?}");
    assert!(matches!(state, JobState::Done(_)), "{state:?}");
}

#[test]
fn substituted_keys_are_refused() {
    // The coordinator swaps client 2's keys for a pair it made itself, to learn the masks.
    let params = SecAggParams {
        session: 1,
        threshold: 3,
        vector_len: 1,
    };
    let forged = ClientSetup::new(2, params, &mut rand::rng()).advertise();
    let (state, errors) = run(&|to, roster| {
        if to != 2 {
            let signature = roster[2].signature.clone();
            roster[2] = AdvertisedKeys {
                signature,
                ..forged.clone()
            };
        }
    });
    let msgs = untrusted(&errors);
    assert_eq!(msgs.len(), N - 1, "{msgs:?}");
    assert!(
        msgs.iter()
            .all(|m| m.contains("do not carry a valid signature of node node-2")),
        "{msgs:?}"
    );
    // Nobody shared keys over the forged roster, so the round could not go on.
    assert!(matches!(state, JobState::Failed(_)), "{state:?}");
}

#[test]
fn unsigned_unknown_and_duplicated_nodes_are_refused() {
    let (_, errors) = run(&|to, roster| {
        if to == 0 {
            roster[1].signature = None;
        }
    });
    assert!(untrusted(&errors)[0].contains("client 1 did not sign its keys"));

    let (_, errors) = run(&|to, roster| {
        if to == 0
            && let Some(s) = roster[1].signature.as_mut()
        {
            s.node = "node-unpublished".into();
        }
    });
    assert!(untrusted(&errors)[0].contains("has published no identity key"));

    // Client 3's signed entry replayed as client 1's: the signature binds the client id.
    let (_, errors) = run(&|to, roster| {
        if to == 0 {
            let mut replay = roster[3].clone();
            replay.client = 1;
            roster[1] = replay;
        }
    });
    let m = &untrusted(&errors)[0];
    assert!(
        m.contains("appears twice") || m.contains("valid signature"),
        "{m}"
    );

    // A client's own keys replaced.
    let (_, errors) = run(&|to, roster| {
        if to == 0 {
            roster[0].mask_pk = roster[1].mask_pk;
        }
    });
    assert!(untrusted(&errors)[0].contains("own keys"));
}
