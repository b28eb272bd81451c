//! The credits ledger as tests read it: all of it, over the admin API
//! (`GET /api/v1/admin/ledger`), for [`ambient_protocol::credits::Audit`].

use ambient_protocol::credits::LedgerEntry;

/// The whole ledger, over the admin API of the coordinator at `api_url`.
pub async fn read_all(api_url: &str, admin_key: &str) -> anyhow::Result<Vec<LedgerEntry>> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    let mut after = 0i64;
    loop {
        let page: ambient_protocol::credits::LedgerPage = http
            .get(format!(
                "{api_url}/api/v1/admin/ledger?after={after}&limit=1000"
            ))
            .bearer_auth(admin_key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        out.extend(page.entries);
        match page.next_after {
            Some(next) => after = next,
            None => return Ok(out),
        }
    }
}
