//! wasm on two engines in one network: replicas that ran on the interpreter (wasmi) and on the
//! JIT (wasmtime) are compared by hash like any others, and agree.

use std::collections::BTreeSet;
use std::time::Duration;

use ambient_agent::config::WasmEngineChoice;
use ambient_cli::modules;
use ambient_e2e::Cluster;
use ambient_protocol::{Requirements, TaskStatus, TaskSubmission, TemplateRender};
use serde_json::json;

use crate::util::*;

/// A replicated task whose replicas ran on one wasmi node and one JIT node reaches quorum: the
/// project's π kernel (WAT) and the photo filter template (C, floats and rounding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_the_interpreter_and_the_jit_reach_quorum() {
    let mut c = Cluster::embedded(2).await.unwrap();
    for (i, engine) in [
        (0, WasmEngineChoice::Wasmi),
        (1, WasmEngineChoice::Wasmtime),
    ] {
        c.stop_agent(i).await;
        c.start_agent_with(i, |cfg| cfg.execution.wasm_engine = Some(engine))
            .await
            .unwrap();
    }
    let client = c.client();
    let want: BTreeSet<String> = ["wasmi-2.0.0", "wasmtime-48.0.8"].map(String::from).into();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let engines: BTreeSet<String> = client
            .nodes()
            .await
            .unwrap()
            .into_iter()
            .filter_map(|n| n.health?.wasm_engine)
            .collect();
        if engines == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the nodes report engines {engines:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let both = Requirements {
        min_nodes: 2,
        ..Requirements::default()
    };
    let pi = wasm_task(
        modules::PI_WAT,
        json!({"end": 200_000, "shard": 0, "start": 0}),
        both.clone(),
    );
    let rendered = client
        .render_template(
            "photo-filter",
            &TemplateRender {
                set: json!({"filter": "blur"}).as_object().unwrap().clone(),
            },
        )
        .await
        .unwrap();
    let mut filter: TaskSubmission = serde_json::from_value(rendered.submission).unwrap();
    filter.requirements = both;
    for task in [pi, filter] {
        let info = submit_and_wait(&client, &task).await;
        assert_eq!(info.status, TaskStatus::Completed, "{info:?}");
        let result = info.result.unwrap();
        let nodes: BTreeSet<String> = serde_json::from_value(result["nodes"].clone()).unwrap();
        assert_eq!(nodes.len(), 2, "both replicas agreed: {result}");
        let engines: BTreeSet<String> = result["engines"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(engines, want, "{result}");
    }
    c.shutdown().await;
}
