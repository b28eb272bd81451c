//! MQTT topic names. Every topic lives under [`PREFIX`]; `{node}` is the node's broker username and
//! `{submitter}` the submitter's, which is what lets a broker ACL confine each client with `%u`.
//!
//! | Topic | Direction |
//! |---|---|
//! | `ambient/v1/nodes/{node}/status` | agent → all, retained, also the Last Will |
//! | `ambient/v1/nodes/{node}/health` | agent → coordinator |
//! | `ambient/v1/nodes/{node}/tasks` | coordinator → agent |
//! | `ambient/v1/nodes/{node}/results` | agent → coordinator |
//! | `ambient/v1/nodes/{node}/control` | coordinator → agent |
//! | `ambient/v1/nodes/{node}/reputation` | coordinator → agent, retained |
//! | `ambient/v1/nodes/{node}/identity` | agent → all, retained; only the node may write it |
//! | `ambient/v1/submit/{submitter}` | submitter → coordinator |
//! | `ambient/v1/submitters/{submitter}/tasks/{task}` | coordinator → submitter |
//! | `ambient/v1/submitters/{submitter}/rejections` | coordinator → submitter |

/// Root of every topic of protocol version 1.
pub const PREFIX: &str = "ambient/v1";

/// Subscription filter for every node's status.
pub const ALL_NODE_STATUS: &str = "ambient/v1/nodes/+/status";
/// Subscription filter for every node's health.
pub const ALL_NODE_HEALTH: &str = "ambient/v1/nodes/+/health";
/// Subscription filter for every node's results.
pub const ALL_NODE_RESULTS: &str = "ambient/v1/nodes/+/results";
/// Subscription filter for every node's identity key.
pub const ALL_NODE_IDENTITY: &str = "ambient/v1/nodes/+/identity";
/// Subscription filter for every submitter's submissions.
pub const ALL_SUBMIT: &str = "ambient/v1/submit/+";

/// `ambient/v1/nodes/{node}/status`
pub fn node_status(node: &str) -> String {
    format!("{PREFIX}/nodes/{node}/status")
}
/// `ambient/v1/nodes/{node}/health`
pub fn node_health(node: &str) -> String {
    format!("{PREFIX}/nodes/{node}/health")
}
/// `ambient/v1/nodes/{node}/tasks`
pub fn node_tasks(node: &str) -> String {
    format!("{PREFIX}/nodes/{node}/tasks")
}
/// `ambient/v1/nodes/{node}/results`
pub fn node_results(node: &str) -> String {
    format!("{PREFIX}/nodes/{node}/results")
}
/// `ambient/v1/nodes/{node}/control`
pub fn node_control(node: &str) -> String {
    format!("{PREFIX}/nodes/{node}/control")
}
/// `ambient/v1/nodes/{node}/reputation`: the node's [`crate::ReputationReport`], retained.
pub fn node_reputation(node: &str) -> String {
    format!("{PREFIX}/nodes/{node}/reputation")
}
/// `ambient/v1/nodes/{node}/identity`: the node's [`crate::NodeIdentity`], retained.
pub fn node_identity(node: &str) -> String {
    format!("{PREFIX}/nodes/{node}/identity")
}
/// `ambient/v1/submit/{submitter}`
pub fn submit(submitter: &str) -> String {
    format!("{PREFIX}/submit/{submitter}")
}
/// `ambient/v1/submitters/{submitter}/tasks/{task}`
pub fn submitter_task(submitter: &str, task: &uuid::Uuid) -> String {
    format!("{PREFIX}/submitters/{submitter}/tasks/{task}")
}
/// `ambient/v1/submitters/{submitter}/rejections`
pub fn submitter_rejections(submitter: &str) -> String {
    format!("{PREFIX}/submitters/{submitter}/rejections")
}
/// `ambient/v1/submitters/{submitter}/#`: everything a submitter may read.
pub fn submitter_all(submitter: &str) -> String {
    format!("{PREFIX}/submitters/{submitter}/#")
}

/// An incoming topic the coordinator understands, with the identity it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic<'a> {
    /// `nodes/{node}/status`
    NodeStatus(&'a str),
    /// `nodes/{node}/health`
    NodeHealth(&'a str),
    /// `nodes/{node}/results`
    NodeResults(&'a str),
    /// `nodes/{node}/tasks`
    NodeTasks(&'a str),
    /// `nodes/{node}/control`
    NodeControl(&'a str),
    /// `nodes/{node}/identity`
    NodeIdentity(&'a str),
    /// `submit/{submitter}`
    Submit(&'a str),
}

/// Parses a concrete topic name. Returns `None` for anything outside the protocol, including ids
/// that fail [`crate::valid_id`].
pub fn parse(topic: &str) -> Option<Topic<'_>> {
    let rest = topic.strip_prefix(PREFIX)?.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    let topic = match parts.as_slice() {
        ["nodes", node, "status"] => Topic::NodeStatus(node),
        ["nodes", node, "health"] => Topic::NodeHealth(node),
        ["nodes", node, "results"] => Topic::NodeResults(node),
        ["nodes", node, "tasks"] => Topic::NodeTasks(node),
        ["nodes", node, "control"] => Topic::NodeControl(node),
        ["nodes", node, "identity"] => Topic::NodeIdentity(node),
        ["submit", submitter] => Topic::Submit(submitter),
        _ => return None,
    };
    let id = match &topic {
        Topic::NodeStatus(id)
        | Topic::NodeHealth(id)
        | Topic::NodeResults(id)
        | Topic::NodeTasks(id)
        | Topic::NodeControl(id)
        | Topic::NodeIdentity(id)
        | Topic::Submit(id) => id,
    };
    crate::valid_id(id).then_some(topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_and_parser_agree() {
        assert_eq!(parse(&node_status("n1")), Some(Topic::NodeStatus("n1")));
        assert_eq!(parse(&node_health("n1")), Some(Topic::NodeHealth("n1")));
        assert_eq!(parse(&node_results("n-2")), Some(Topic::NodeResults("n-2")));
        assert_eq!(parse(&node_tasks("n1")), Some(Topic::NodeTasks("n1")));
        assert_eq!(parse(&node_control("n1")), Some(Topic::NodeControl("n1")));
        assert_eq!(parse(&node_identity("n1")), Some(Topic::NodeIdentity("n1")));
        assert_eq!(parse(&submit("acme")), Some(Topic::Submit("acme")));
    }

    #[test]
    fn rejects_foreign_and_malformed_topics() {
        assert_eq!(parse("ambient/v2/nodes/n1/status"), None);
        assert_eq!(parse("ambient/v1/nodes/n1/status/extra"), None);
        assert_eq!(parse("ambient/v1/nodes//status"), None);
        assert_eq!(parse("ambient/v1/nodes/+/status"), None);
        assert_eq!(parse("ambient/v1/submit"), None);
    }
}
