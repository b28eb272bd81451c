//! A whole federated job between the server and client state machines, every message passed as
//! JSON the way MQTT carries it: the breast cancer data split non-IID over 5 clients, with and
//! without DP and secure aggregation, with a client that dies mid-round, and with late,
//! duplicate and wrong-length messages.

use std::collections::BTreeMap;

use ambient_fl::ClientId;
use ambient_fl::client::Client;
use ambient_fl::data::{Dataset, breast_cancer, non_iid_split, stratified_split};
use ambient_fl::server::{JobState, Outgoing, Refusal, Server};
use ambient_fl::wire::{JobSpec, ToClient, ToServer};

fn data() -> (Vec<Dataset>, String) {
    let (train, test) = stratified_split(&breast_cancer(), 0.2, 7).unwrap();
    let clients = non_iid_split(&train, 5, 0, 0.3).unwrap();
    // The evaluation set goes back to CSV, as a submitter would send it.
    (clients, test.to_csv("target"))
}

fn job(epsilon: Option<f64>, eval: &str) -> JobSpec {
    serde_json::from_value(serde_json::json!({
        "dataset": "breast_cancer",
        "rounds": 10,
        "local": {"epochs": 20, "batch_size": 16, "lr": 0.2, "l2": 1e-3},
        "epsilon": epsilon,
        "clip_norm": 0.5,
        "round_timeout_sec": 5,
        "eval_csv": eval,
    }))
    .unwrap()
}

/// What happens to messages on the way.
#[derive(Default)]
struct Faults {
    /// This client stops answering from this round on (after sharing keys in it).
    dies: Option<(ClientId, u32)>,
    /// Every refusal the server gave, in order.
    refusals: Vec<Refusal>,
}

/// Runs a job to its end. Time advances only when nothing is in flight, to fire deadlines.
fn run(job: JobSpec, mut clients: Vec<Client>, faults: &mut Faults) -> JobState {
    let mut rng = rand::rng();
    let (mut server, first) = Server::start(job, 30, clients.len(), 42, 0).unwrap();
    let mut queue: Vec<Outgoing> = first;
    let mut now = 0;
    let mut injected = false;
    loop {
        if queue.is_empty() {
            if !matches!(server.state(), JobState::Running { .. }) {
                return server.state().clone();
            }
            now += 10_000;
            queue = server.tick(now);
            assert!(now < 10_000_000, "the job never ended");
            continue;
        }
        let Outgoing { to, msg } = queue.remove(0);
        let wire = serde_json::to_string(&msg).unwrap();
        let msg: ToClient = serde_json::from_str(&wire).unwrap();
        let Some(round) = msg.round() else {
            continue; // End
        };
        let is_relay = matches!(msg, ToClient::Relay { .. });
        if let Some((dead, from)) = faults.dies
            && dead == to
            && round >= from
            && (round > from || is_relay)
        {
            continue; // shared its keys, then died before its update
        }
        let Some(answer) = clients[to as usize].handle(msg, &mut rng).unwrap() else {
            continue;
        };
        let wire = serde_json::to_string(&answer).unwrap();
        let answer: ToServer = serde_json::from_str(&wire).unwrap();
        // Round 2: client 1's update arrives twice.
        if !injected && round == 2 && to == 1 && matches!(answer, ToServer::Update { .. }) {
            injected = true;
            let (out, r) = server.handle(to, answer.clone(), now);
            queue.extend(out);
            r.unwrap();
            let (out, r) = server.handle(to, answer, now);
            queue.extend(out);
            faults.refusals.push(r.unwrap_err());
            continue;
        }
        let (out, r) = server.handle(to, answer, now);
        queue.extend(out);
        if let Err(e) = r {
            faults.refusals.push(e);
        }
    }
}

fn accuracy(state: &JobState) -> f64 {
    let JobState::Done(r) = state else {
        panic!("{state:?}")
    };
    r.rounds.last().unwrap().eval_accuracy.unwrap()
}

#[test]
fn jobs_run_with_dp_secure_aggregation_and_faults() {
    let (datasets, eval) = data();
    let clients = || {
        datasets
            .iter()
            .cloned()
            .map(Client::new)
            .collect::<Vec<_>>()
    };

    // No DP, secure aggregation on (5 clients): the server sees only sums.
    let mut f = Faults::default();
    let plain = run(job(None, &eval), clients(), &mut f);
    let acc_plain = accuracy(&plain);
    assert!(acc_plain > 0.93, "{acc_plain}");
    let JobState::Done(r) = &plain else {
        unreachable!()
    };
    assert!(r.secure_aggregation);
    assert_eq!(
        r.total_rows,
        datasets.iter().map(|d| d.len() as u64).sum::<u64>()
    );
    assert_eq!(r.rounds.len(), 10);
    assert!(r.rounds.iter().all(|m| m.clients == 5 && m.dropped == 0));
    // The duplicate update was refused with its type; nothing else was.
    assert_eq!(
        f.refusals,
        vec![Refusal::Duplicate {
            client: 1,
            what: "update"
        }]
    );

    // DP at ε = 8, and client 3 dies in round 4 after sharing its keys: its masks are removed
    // with the survivors' shares, the round completes with 4 clients, and the ledger pays for
    // the smaller noise.
    let mut f = Faults {
        dies: Some((3, 4)),
        ..Faults::default()
    };
    let dp = run(job(Some(8.0), &eval), clients(), &mut f);
    let JobState::Done(r) = &dp else {
        panic!("{dp:?}")
    };
    let p = r.privacy.as_ref().unwrap();
    assert!(p.epsilon_spent <= 8.0 + 1e-9, "{p:?}");
    assert_eq!(r.rounds[3].clients, 4);
    assert_eq!(r.rounds[3].dropped, 1);
    assert_eq!(r.rounds.last().unwrap().clients, 4);
    eprintln!(
        "accuracy: no DP {acc_plain:.3}, ε = 8 {:.3} (stopped early: {:?}), ε spent {:.3}",
        accuracy(&dp),
        r.stopped_early,
        p.epsilon_spent
    );
    assert!(accuracy(&dp) > 0.85, "{}", accuracy(&dp));
    assert!(
        f.refusals
            .iter()
            .any(|e| matches!(e, Refusal::Duplicate { .. }))
    );
}

/// A vector of the wrong length drops its sender; a message for a past round is refused as late;
/// a stranger is refused; the job fails with a reason when too few clients remain.
#[test]
fn bad_messages_get_typed_refusals() {
    let (datasets, eval) = data();
    let mut rng = rand::rng();
    let mut spec = job(None, &eval);
    spec.secure_aggregation = Some(false);
    spec.rounds = 1;
    let mut clients: Vec<Client> = datasets.iter().cloned().map(Client::new).collect();
    let (mut server, begin) = Server::start(spec, 30, 5, 1, 0).unwrap();
    let mut answers: BTreeMap<ClientId, ToServer> = BTreeMap::new();
    for o in begin {
        let a = clients[o.to as usize].handle(o.msg, &mut rng).unwrap();
        answers.insert(o.to, a.unwrap());
    }
    let ToServer::Update { round, y } = answers[&0].clone() else {
        panic!()
    };
    let (_, r) = server.handle(
        0,
        ToServer::Update {
            round,
            y: y[..y.len() - 1].to_vec(),
        },
        1,
    );
    assert_eq!(
        r,
        Err(Refusal::WrongLength {
            client: 0,
            expected: y.len(),
            found: y.len() - 1
        })
    );
    assert!(!server.alive().contains(&0));
    let (_, r) = server.handle(0, answers[&0].clone(), 1);
    assert_eq!(r, Err(Refusal::NotAClient(0)));
    let (_, r) = server.handle(9, answers[&1].clone(), 1);
    assert_eq!(r, Err(Refusal::NotAClient(9)));
    let (_, r) = server.handle(
        1,
        ToServer::Update {
            round: 7,
            y: y.clone(),
        },
        1,
    );
    assert!(matches!(r, Err(Refusal::Late { client: 1, .. })), "{r:?}");
    // Clients 1..4 answer round 0; the job moves on to round 1 with them.
    for c in 1..5 {
        let (out, r) = server.handle(c, answers[&c].clone(), 2);
        r.unwrap();
        if c == 4 {
            assert_eq!(out.len(), 4, "round 1 begins for the 4 remaining clients");
        }
    }
    // Nobody answers round 1: at each deadline everyone is dropped and, in this plain job, the
    // round begins again for all 5 clients; after the last retry the job fails, saying why.
    for retry in 1..=ambient_fl::server::ROUND_RETRIES as u64 {
        let out = server.tick(retry * 1_000_000);
        assert_eq!(
            out.iter()
                .filter(|o| matches!(o.msg, ToClient::Begin { .. }))
                .count(),
            5
        );
    }
    server.tick(100_000_000);
    match server.state() {
        JobState::Failed(why) => assert!(why.contains("round 1: only 0 clients"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unreachable_budget_is_refused_at_the_start() {
    let (_, eval) = data();
    let mut spec = job(Some(1e-6), &eval);
    spec.rounds = 1000;
    let err = Server::start(spec, 30, 5, 1, 0).err().unwrap();
    assert!(
        err.to_string().contains("privacy budget cannot be met"),
        "{err}"
    );
    let err = Server::start(job(None, &eval), 30, 1, 1, 0).err().unwrap();
    assert!(err.to_string().contains("min_nodes"), "{err}");
}

/// The evaluation set's columns are matched to each client's by name: a client whose CSV orders
/// its columns differently trains the same model, and one that lacks a column is dropped.
#[test]
fn eval_columns_are_matched_by_name() {
    use crate::defaults::run_job;
    let (datasets, eval) = data();
    let job = || {
        serde_json::from_value::<JobSpec>(serde_json::json!({
            "dataset": "breast_cancer",
            "rounds": 3,
            "secure_aggregation": false,
            "eval_csv": eval,
        }))
        .unwrap()
    };
    let JobState::Done(aligned) = run_job(job(), &datasets) else {
        panic!("the aligned job failed")
    };
    // Client 2's file has its columns in reverse order.
    let mut shuffled = datasets.clone();
    let mut reversed = shuffled[2].columns.clone();
    reversed.reverse();
    shuffled[2] = shuffled[2].with_columns(&reversed).unwrap();
    assert_ne!(shuffled[2].x[0], datasets[2].x[0]);
    let JobState::Done(by_name) = run_job(job(), &shuffled) else {
        panic!("the shuffled job failed")
    };
    assert_eq!(by_name.weights, aligned.weights);
    assert_eq!(by_name.rounds, aligned.rounds);
    // Client 4's file names a column differently: it cannot take part.
    let mut renamed = datasets.clone();
    renamed[4].columns[0] = "something else".into();
    let JobState::Done(without) = run_job(job(), &renamed) else {
        panic!("the job without client 4 failed")
    };
    assert!(
        without.rounds.iter().all(|r| r.clients == 4),
        "{:?}",
        without.rounds
    );
}

#[test]
fn a_bad_eval_csv_is_refused_at_submission() {
    use ambient_fl::server::{JobError, check_eval_against, check_job};
    let with_eval = |csv: &str| {
        serde_json::from_value::<JobSpec>(serde_json::json!({
            "dataset": "d", "eval_csv": csv,
        }))
        .unwrap()
    };
    for (csv, why) in [
        ("a,b\n1,2\n", "not in the CSV header"),
        ("target\n1\n", "no feature columns"),
        ("a,target\n", "no rows"),
        ("a,a,target\n1,2,0\n", "appears twice"),
        ("a,target\n1,x\n", "not a finite number"),
    ] {
        let Err(JobError::Invalid(m)) = check_job(&with_eval(csv), 3) else {
            panic!("{csv:?} accepted")
        };
        assert!(m.contains(why), "{csv:?}: {m}");
    }
    let two = with_eval("a,b,target\n1,2,0\n");
    check_job(&two, 3).unwrap();
    // Against the data set as the nodes online at submission advertise it.
    check_eval_against(&two, &[]).unwrap();
    check_eval_against(&two, &[2]).unwrap();
    check_eval_against(&two, &[30, 2]).unwrap();
    let Err(JobError::Invalid(m)) = check_eval_against(&two, &[30]) else {
        panic!("2 columns against 30 accepted")
    };
    assert!(m.contains("eval_csv has 2 feature columns"), "{m}");
    // And the start refuses it too.
    let Err(JobError::Invalid(m)) = Server::start(two, 30, 3, 1, 0).map(|_| ()) else {
        panic!("started")
    };
    assert!(m.contains("eval_csv has 2 feature columns"), "{m}");
}
